"""The trainer's side of the fault campaign (issue 12): damaged shards are refused before a step, misuse is
one line and exit 2, and a checkpoint write killed mid-way leaves nothing behind."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from pipeline.manifest import read_build
from tests.train.conftest import train_args
from train import checkpoint
from train.data import read_span
from train.main import cli
from train.sources import ShardMismatch, open_source


@pytest.fixture
def shards(tmp_path: Path, procedural_build: Path) -> Path:
    shutil.copytree(procedural_build, tmp_path / "shards" / "procedural")
    return tmp_path / "shards"


def run_cli(monkeypatch, capsys, argv: list[str]) -> str:
    """Run `train/main.py argv` in-process; assert one line on stderr and exit 2; return the line."""
    monkeypatch.setattr(sys, "argv", ["train/main.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("train/main.py: error: ")
    return err


def first_shard(shards: Path) -> Path:
    return shards / "procedural" / read_build(shards / "procedural")["shards"][0]["name"]


def damage(shards: Path, how: str) -> None:
    source_dir, shard = shards / "procedural", first_shard(shards)
    if how == "truncated tar":
        shard.write_bytes(shard.read_bytes()[:-1024])
    elif how == "flipped byte":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0x10
        shard.write_bytes(bytes(data))
    elif how == "tar of another build":
        other = sorted(p for p in source_dir.glob("*.tar") if p != shard)[0]
        shutil.copyfile(other, shard)
    elif how == "garbage manifest":
        (source_dir / "manifest.parquet").write_bytes(b"garbage")
    elif how == "no manifest":
        (source_dir / "manifest.parquet").unlink()
    elif how == "build.json lacks keys":
        (source_dir / "build.json").write_text(json.dumps({"source": "procedural"}))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated tar", "bytes but build.json says"),
        ("flipped byte", "differs from build.json's sha256"),
        ("tar of another build", "build.json"),
        ("garbage manifest", "manifest.parquet: unreadable"),
        ("no manifest", "no manifest.parquet"),
        ("build.json lacks keys", "lacks 'config'"),
    ],
)
def test_damaged_shards_are_refused_before_any_step(
    shards: Path, tmp_path: Path, monkeypatch, capsys, how: str, message: str
) -> None:
    damage(shards, how)
    err = run_cli(monkeypatch, capsys, train_args(shards, tmp_path / "run", "--steps", "1"))
    assert message in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_verify_shards_off_skips_the_hash_but_not_the_size(shards: Path, tmp_path: Path) -> None:
    from train.sources import verify_shards

    damage(shards, "flipped byte")
    source = open_source(shards, "procedural")  # sizes match: opening succeeds
    assert verify_shards([source], "off", 1) is None
    assert "not hashed" in verify_shards([source], "auto", 1)
    with pytest.raises(ShardMismatch, match="sha256"):
        verify_shards([source], "auto", 1 << 40)


def test_a_member_that_does_not_parse_names_the_shard_and_the_sample(shards: Path) -> None:
    source = open_source(shards, "procedural")
    table = source.split("train")
    path, offset = source.shards[int(table.shard[0])], int(table.offset[0])
    data = bytearray(Path(path).read_bytes())
    start = data.index(b"\x93NUMPY", offset)  # the first .npy member of the first sample
    data[start : start + 6] = b"XXXXXX"
    Path(path).write_bytes(bytes(data))
    with pytest.raises(
        ShardMismatch, match=rf"{path}: sample procedural-\S+ at byte {offset} cannot be read"
    ):
        read_span(source, table, 0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag (see train/main.py --help)"),
        (["--device", "tpu"], "--device must be one of auto, cpu, cuda, got 'tpu'"),
        (["--verify-shards", "maybe"], "--verify-shards must be one of"),
        (["--steps", "many"], "invalid int value: 'many'"),
    ],
)
def test_flag_mistakes_are_one_line(
    shards: Path, tmp_path: Path, monkeypatch, capsys, extra, message
) -> None:
    assert message in run_cli(monkeypatch, capsys, train_args(shards, tmp_path / "run", *extra))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_refused(shards: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    err = run_cli(monkeypatch, capsys, train_args(shards, tmp_path / "run", "--device", "cuda"))
    assert "no CUDA GPU" in err


def test_out_that_is_a_file_is_refused(shards: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "run").write_text("a file")
    err = run_cli(monkeypatch, capsys, train_args(shards, tmp_path / "run", "--steps", "1"))
    assert "is a file, not a directory" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optim: {lr: [0.1\nsteps: 2\n", "not valid YAML at line"),
        ("data:\n  batch_size: eight\n", "data.batch_size should be int, got 'eight'"),
        ("optim:\n  betas: 0.9\n", "optim.betas should be a list of two numbers"),
        ("- a list\n", "a recipe is a mapping"),
        ("lr: 0.1\n", "'lr' is now 'optim.lr'"),  # a flat recipe of the earlier layout
        ("optim: 0.1\n", "'optim' is a section"),
        ("optim:\n  learning_rate: 0.1\n", "unknown key(s) learning_rate in section 'optim'"),
        ("optim:\n  loss_weights: {depth: heavy}\n", "'depth=heavy': the weight must be a number"),
        ("optim:\n  loss_weights: {dept: 1}\n", "'dept=1': expected paper | equal or TASK=VALUE"),
    ],
)
def test_bad_recipes_are_one_line(shards: Path, tmp_path: Path, monkeypatch, capsys, text, message) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    err = run_cli(monkeypatch, capsys, train_args(shards, tmp_path / "run", "--recipe", str(recipe)))
    assert message in err


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_resume_of_a_file_that_is_not_a_checkpoint_is_one_line(
    shards: Path, tmp_path: Path, monkeypatch, capsys, content: bytes
) -> None:
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(content)
    err = run_cli(
        monkeypatch, capsys, train_args(shards, tmp_path / "run", "--steps", "1", "--resume", str(bogus))
    )
    assert f"--resume {bogus}: not a readable checkpoint" in err


def test_a_torch_file_that_is_no_checkpoint_is_refused(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint of this trainer"):
        checkpoint.load(tmp_path / "other.pt")


def test_a_killed_checkpoint_write_leaves_nothing_behind(shards: Path, tmp_path: Path) -> None:
    from train.main import main

    stale = checkpoint.checkpoint_dir(tmp_path / "run") / ".step_00000002.pt.0badf00d.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * 4096)  # what a SIGKILL during torch.save leaves
    main(train_args(shards, tmp_path / "run", "--steps", "1"))
    assert not stale.exists()
    assert sorted(p.name for p in stale.parent.iterdir()) == ["step_00000001.json", "step_00000001.pt"]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("trial", range(3))
def test_training_killed_at_random_points_resumes_to_the_uninterrupted_weights(
    procedural_build: Path, tmp_path: Path, trial: int
) -> None:
    import os
    import random
    import signal
    import subprocess
    import time

    from tests.train.test_sigkill import REPO, STEPS, wait_for
    from train.main import main

    shards_dir, killed = procedural_build.parent, tmp_path / "killed"
    command = [sys.executable, str(REPO / "train" / "main.py"), *train_args(shards_dir, killed, *STEPS)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    wait_for(killed / "checkpoints" / "step_00000002.pt", process)
    time.sleep(random.Random(trial).uniform(0.0, 1.5))  # seeded: a failing point can be replayed
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    main(train_args(shards_dir, killed, *STEPS, "--resume", "latest"))
    main(train_args(shards_dir, tmp_path / "straight", *STEPS))
    resumed = torch.load(killed / "checkpoints" / "step_00000010.pt", weights_only=True)["model"]
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "step_00000010.pt", weights_only=True)[
        "model"
    ]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert not list((killed / "checkpoints").glob(".*.tmp"))

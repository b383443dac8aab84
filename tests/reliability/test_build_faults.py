"""The fault campaign of issue 12, kept as tests: damaged build directories, colliding keys, empty and
unreachable builds, and builds killed at random points, each compared with an uninterrupted run."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import parallel
from pipeline.build import BuildRequest, build_source
from pipeline.cli import main
from pipeline.manifest import read_build
from pipeline.reader import verify
from pipeline.sources import _ADAPTERS, Item, SourceError, get_source, source_names
from pipeline.sources.procedural import ProceduralSource
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def built(tmp_path: Path, procedural_build: Path) -> Path:
    """A private copy of the session's tiny procedural build, the `--out` directory holding it."""
    shutil.copytree(procedural_build, tmp_path / "out" / "procedural")
    return tmp_path / "out"


def rebuild(out: Path, **kwargs) -> object:
    return build_source(BuildRequest("procedural", out, tiny_config(), workers=0, **kwargs))


def shard_bytes(source_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(source_dir.glob("*.tar"))}


# ----------------------------------------------------------------------------- repairing a committed build


@pytest.mark.parametrize("damage", ["delete manifest", "garble manifest", "delete quarantine"])
def test_a_damaged_commit_is_repaired_not_called_up_to_date(built: Path, damage: str) -> None:
    source_dir = built / "procedural"
    before = shard_bytes(source_dir)
    if damage == "delete manifest":
        (source_dir / "manifest.parquet").unlink()
    elif damage == "garble manifest":
        (source_dir / "manifest.parquet").write_bytes(b"PAR1 this is not parquet")
    else:
        (source_dir / "quarantine.jsonl").unlink()
    report = rebuild(built)
    assert not report.up_to_date and report.units_built == 0  # repaired from the parts, nothing re-rendered
    assert verify(source_dir) == [] and shard_bytes(source_dir) == before


def test_a_truncated_shard_is_rebuilt_to_the_same_bytes(built: Path) -> None:
    source_dir = built / "procedural"
    before = shard_bytes(source_dir)
    shard = sorted(source_dir.glob("train-*.tar"))[0]
    shard.write_bytes(shard.read_bytes()[:1000])
    report = rebuild(built)
    assert not report.up_to_date and report.units_built == 1
    assert shard_bytes(source_dir) == before and verify(source_dir) == []


def test_flipped_bytes_at_the_same_size_are_rebuilt_with_verify(built: Path) -> None:
    source_dir = built / "procedural"
    before = shard_bytes(source_dir)
    shard = sorted(source_dir.glob("train-*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    assert rebuild(built).up_to_date  # without --verify a shard of the right size is trusted (cheap)
    report = rebuild(built, verify=True)
    assert not report.up_to_date and report.units_built == 1
    assert shard_bytes(source_dir) == before and verify(source_dir) == []


def test_stray_temporaries_are_listed_by_verify_and_removed_by_an_up_to_date_build(
    built: Path, capsys
) -> None:
    source_dir = built / "procedural"
    stray = [source_dir / ".train-000000.tar.deadbeef.tmp", source_dir / ".parts" / ".x.json.0badf00d.tmp"]
    for path in stray:
        path.write_bytes(b"half a shard")
    assert main(["verify", str(source_dir)]) == 0
    out = capsys.readouterr().out
    assert all(f"stray file {path.relative_to(source_dir)}" in out for path in stray)
    assert rebuild(built).up_to_date
    assert not any(path.exists() for path in stray)


def test_nothing_to_build_never_starts_ray(built: Path, monkeypatch) -> None:
    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started for a build with nothing to build")

    monkeypatch.setattr(parallel, "_run_on_ray", no_ray)
    (built / "procedural" / "manifest.parquet").unlink()  # a repair with no unit to build
    build_source(BuildRequest("procedural", built, tiny_config(), workers=2))
    assert build_source(BuildRequest("procedural", built, tiny_config(), workers=2)).up_to_date


# ----------------------------------------------------------------------------- keys


class CollidingIds(ProceduralSource):
    """Procedural clips under ids that differ only in characters a sample key cannot hold."""

    name = "colliding"

    def items(self, split: str):
        names = ["50.1", "50_1", "k y", "k_y"]
        for item, name in zip(super().items(split), names * 10, strict=False):
            yield Item(f"{name}-{item.id}" if split == "val" else name, split, item.fingerprint, item.payload)


def test_ids_that_sanitise_alike_build_distinct_samples(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(_ADAPTERS, "colliding", CollidingIds)
    report = build_source(
        BuildRequest("colliding", tmp_path, tiny_config(num_samples=4), splits=["train"], workers=0)
    )
    assert report.samples == 4
    assert verify(report.out_dir) == []


def test_the_build_checks_keys_not_ids(tmp_path: Path, monkeypatch) -> None:
    import pipeline.plan as plan

    monkeypatch.setitem(_ADAPTERS, "colliding", CollidingIds)
    monkeypatch.setattr(plan, "sample_key", lambda source, item_id: f"{source}-{item_id}".replace(".", "_"))
    with pytest.raises(
        SourceError, match=r"ids '50.1' \(train\) and '50_1' \(train\) both become sample key"
    ):
        build_source(
            BuildRequest("colliding", tmp_path, tiny_config(num_samples=4), splits=["train"], workers=0)
        )


# ----------------------------------------------------------------------------- builds that must not "succeed"


def one_line_exit_2(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_unknown_split_is_one_line(tmp_path: Path, capsys) -> None:
    err = one_line_exit_2(
        ["build", "--source", "procedural", "--out", str(tmp_path), "--split", "bogus"], capsys
    )
    assert "has split(s) train, val, not 'bogus'" in err


def test_a_split_with_no_inputs_is_an_error_not_an_empty_build(tmp_path: Path, capsys) -> None:
    (tmp_path / "raw" / "train" / "walk").mkdir(parents=True)
    (tmp_path / "raw" / "train" / "walk" / "a.mp4").write_bytes(b"")
    argv = ["build", "--source", "videofolder", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "o")]
    err = one_line_exit_2([*argv, "--split", "val", "--quiet"], capsys)
    assert "no inputs found for split val" in err
    assert not (tmp_path / "o" / "videofolder" / "build.json").exists()


@pytest.mark.parametrize(
    "source, flags, refused",
    [
        (
            "videofolder",
            ["--sampling-rate", "4"],
            "does not use --sampling-rate (its frames: one frame in each",
        ),
        (
            "ava",
            ["--train-views", "2"],
            "does not use --train-views (its frames: a --frames x --sampling-rate",
        ),
        ("procedural", ["--sampling-rate", "4"], "does not use --sampling-rate (its frames: rendered at one"),
    ],
)
def test_a_sampling_flag_the_source_does_not_use_is_refused_before_any_work(
    tmp_path: Path, capsys, source: str, flags: list[str], refused: str
) -> None:
    out = tmp_path / "out"
    argv = ["build", "--source", source, "--root", str(tmp_path), "--out", str(out), *flags, "--quiet"]
    assert f"source {source} {refused}" in one_line_exit_2(argv, capsys)
    assert not out.exists()  # nothing listed, planned or written


@pytest.mark.parametrize("name", source_names())
def test_every_source_refuses_exactly_the_sampling_settings_its_rule_does_not_read(name: str) -> None:
    adapter = get_source(name)
    for setting, value in {"sampling_rate": 4, "train_views": 2}.items():
        built = adapter(None, dataclasses.replace(tiny_config(), **{setting: value}))
        if setting in adapter.sampling.reads:
            built.check_sampling()
            continue
        with pytest.raises(SourceError, match=f"^source {adapter.name} does not use "):
            built.check_sampling()


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_out_that_is_a_file_is_one_line(tmp_path: Path, capsys, where: str) -> None:
    (tmp_path / "f").write_text("not a directory")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "deeper"
    err = one_line_exit_2(["build", "--source", "procedural", "--out", str(out)], capsys)
    assert "is a file, not a directory" in err


def test_unreachable_ray_address_gives_up_quickly_in_one_line(tmp_path: Path, capsys) -> None:
    started = time.time()
    argv = ["build", "--source", "procedural", "--out", str(tmp_path), "--num-samples", "4", "--quiet"]
    err = one_line_exit_2([*argv, "--ray-address", "127.0.0.1:9", "--ray-timeout", "2"], capsys)
    assert "--ray-address 127.0.0.1:9: nothing answered" in err and "ray status" in err
    assert time.time() - started < 30


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no manifest", "no manifest.parquet"),
        ("garbage manifest", "manifest.parquet: unreadable"),
        ("build.json without shards", "lacks 'shards'"),
        ("build.json not JSON", "build.json: unreadable"),
    ],
)
@pytest.mark.parametrize("command", ["verify", "info"])
def test_verify_and_info_on_a_damaged_directory_are_one_line(
    built: Path, capsys, damage: str, message: str, command: str
) -> None:
    source_dir = built / "procedural"
    if damage == "no manifest":
        (source_dir / "manifest.parquet").unlink()
    elif damage == "garbage manifest":
        (source_dir / "manifest.parquet").write_bytes(os.urandom(300))
    elif damage == "build.json without shards":
        build = read_build(source_dir)
        del build["shards"]
        (source_dir / "build.json").write_text(json.dumps(build))
    else:
        (source_dir / "build.json").write_text("{ not json")
    if command == "info" and "manifest" in damage:
        pytest.skip("info reads build.json only")
    assert message in one_line_exit_2([command, str(source_dir)], capsys)


# ----------------------------------------------------------------------------- killed at random points

KILL_ARGS = ["--source", "procedural", "--frames", "4", "--size", "32", "--num-samples", "24"]
KILL_ARGS += ["--samples-per-shard", "2", "--workers", "0", "--quiet"]


def kill_and_resume(out: Path, delay: float) -> None:
    """Start a build, SIGKILL it after `delay` seconds (or let it finish), then run it to the end."""
    command = [sys.executable, "-m", "pipeline.cli", "build", "--out", str(out), *KILL_ARGS]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr


def assert_same_as_uninterrupted(killed: Path, clean: Path) -> None:
    source_dir = killed / "procedural"
    assert verify(source_dir) == []
    assert shard_bytes(source_dir) == shard_bytes(clean / "procedural")
    assert read_build(source_dir)["shards"] == read_build(clean / "procedural")["shards"]
    assert not list(source_dir.glob(".*.tmp")) and not list((source_dir / ".parts").glob(".*.tmp"))


@pytest.fixture(scope="module")
def clean_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "build", "--out", str(out), *KILL_ARGS],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.mark.timeout(300)
def test_a_build_killed_mid_way_resumes_to_the_uninterrupted_shards(
    tmp_path: Path, clean_build: Path
) -> None:
    kill_and_resume(tmp_path / "killed", delay=4.0)
    assert_same_as_uninterrupted(tmp_path / "killed", clean_build)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("trial", range(6))
def test_builds_killed_at_random_points_resume_to_the_uninterrupted_shards(
    tmp_path: Path, clean_build: Path, trial: int
) -> None:
    delay = random.Random(trial).uniform(1.5, 8.0)  # seeded: a failure names a point that can be re-run
    kill_and_resume(tmp_path / "killed", delay)
    assert_same_as_uninterrupted(tmp_path / "killed", clean_build)

"""Shards that disagree with each other or with the model are refused, clearly, before any training."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.conftest import train_args
from train.main import main
from train.sources import ShardMismatch


@pytest.fixture
def two_sources(procedural_build: Path, tmp_path: Path) -> Path:
    """`procedural` and an identical copy `other`, to be broken one field at a time."""
    for name in ("procedural", "other"):
        shutil.copytree(procedural_build, tmp_path / "shards" / name)
    return tmp_path / "shards"


def _edit_build(directory: Path, **config: object) -> None:
    build = json.loads((directory / "build.json").read_text())
    if "config_hash" in config:
        build["config_hash"] = config.pop("config_hash")
    build["config"].update(config)
    (directory / "build.json").write_text(json.dumps(build))


def _run(shards: Path, out: Path, synthetic: str = "other") -> None:
    args = train_args(shards, out, "--steps", "1")
    args[args.index("--synthetic") + 1] = synthetic
    main(args)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"label_stride": 2}, r"sources disagree on label_stride \(procedural=4, other=2\)"),
        ({"frames": 8}, r"sources disagree on frames"),
        ({"config_hash": "0123456789abcdef"}, r"other: manifest rows carry config hash.*mixed; rebuild"),
    ],
)
def test_disagreeing_sources_are_refused(two_sources: Path, tmp_path: Path, edit: dict, message: str) -> None:
    _edit_build(two_sources / "other", **edit)
    with pytest.raises(ShardMismatch, match=message):
        _run(two_sources, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any step


def test_label_stride_that_the_model_cannot_predict_is_refused(two_sources: Path, tmp_path: Path) -> None:
    for name in ("procedural", "other"):
        _edit_build(two_sources / name, label_stride=2)
    with pytest.raises(ShardMismatch, match=r"stride 2 but the model's dense heads predict at stride 4"):
        _run(two_sources, tmp_path / "run")


def test_segmentation_label_spaces_must_agree(two_sources: Path, tmp_path: Path) -> None:
    build = json.loads((two_sources / "other" / "build.json").read_text())
    (two_sources / "other" / "build.json").write_text(json.dumps({**build, "segm_space": "unified"}))
    with pytest.raises(
        ShardMismatch, match=r"disagree on the segm label space \(procedural=procedural, other=unified\)"
    ):
        _run(two_sources, tmp_path / "run", synthetic="procedural,other")


def test_unfinished_build_is_refused(two_sources: Path, tmp_path: Path) -> None:
    (two_sources / "other" / "build.json").unlink()
    with pytest.raises(
        ShardMismatch, match=r"other: .*no build.json \(not a build directory, or its build is unfinished"
    ):
        _run(two_sources, tmp_path / "run")


def test_refusal_from_the_command_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "train" / "main.py"
    result = subprocess.run(
        [sys.executable, str(script), "--shards", str(tmp_path), "--real", "procedural"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("train/main.py: error: source procedural:")

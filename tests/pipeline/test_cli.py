"""The CLI: user mistakes are one clear line on stderr with exit code 2; summaries say what happened."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import sources
from pipeline.cli import build_parser, config_from_args, main
from pipeline.config import BuildConfig, config_flag, field_comments

TINY = [
    "--frames",
    "4",
    "--size",
    "32",
    "--label-stride",
    "4",
    "--num-samples",
    "12",
    "--workers",
    "0",
    "--quiet",
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "args, expect",
    [
        (["build", "--source", "nope", "--out", "x"], "unknown source 'nope'; known sources: procedural"),
        (
            ["build", "--source", "procedural", "--frames", "abc"],
            "argument --frames: expected a whole number",
        ),
        (["build", "--source", "procedural", "--codec", "mp4"], "--codec must be one of npy, jpeg"),
        (["build", "--source", "procedural", "--label-stride", "300"], "--label-stride must be between"),
        (["build", "--source", "procedural", "--bogus"], "unrecognized arguments: --bogus"),
        (["build"], "the following arguments are required: --source"),
        (["info", "/no/such/dir"], "/no/such/dir: no such directory"),
    ],
)
def test_user_mistakes_are_one_line_exit_2_no_traceback(args: list[str], expect: str, tmp_path: Path) -> None:
    result = run_cli(*[a if a != "x" else str(tmp_path) for a in args])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("pvit-pipeline: error: ") and expect in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_root_is_one_line(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sources._ADAPTERS, "rooted", "faulty_source:RootedSource")
    assert main(["build", "--source", "rooted", "--out", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert err == "pvit-pipeline: error: source rooted reads a dataset from disk: pass --root DIR\n"
    assert (
        main(["build", "--source", "rooted", "--root", str(tmp_path / "nope"), "--out", str(tmp_path), *TINY])
        == 2
    )
    assert "no such directory" in capsys.readouterr().err


def test_build_then_rebuild_says_nothing_to_do(tmp_path: Path) -> None:
    first = run_cli("build", "--source", "procedural", "--out", str(tmp_path), *TINY)
    assert first.returncode == 0, first.stderr
    assert "procedural: 22 samples" in first.stdout and "0 inputs quarantined" in first.stdout
    second = run_cli("build", "--source", "procedural", "--out", str(tmp_path), *TINY)
    assert second.returncode == 0 and "up to date, nothing to do" in second.stdout
    info = run_cli("info", str(tmp_path / "procedural"))
    assert "train: 12 samples (action 12, boxes 12, depth 12" in info.stdout


def test_quarantine_summary_says_how_many_and_where(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sources._ADAPTERS, "faulty", "faulty_source:FaultySource")
    assert main(["build", "--source", "faulty", "--out", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    assert f"4 input(s) quarantined, listed in {tmp_path / 'faulty' / 'quarantine.jsonl'}" in out


def test_sources_lists_procedural_with_its_tasks(capsys) -> None:
    assert main(["sources"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("procedural"))
    assert "action,depth,normal,segm,pose3d,boxes" in line and "no --root needed" in line


# A value other than the default for every BuildConfig field, as given on the command line.
NOT_DEFAULT = {
    "frames": ("8", 8),
    "sampling_rate": ("2", 2),
    "size": ("64", 64),
    "crop": ("centre", "centre"),
    "max_aspect": ("1.5", 1.5),
    "label_stride": ("2", 2),
    "train_views": ("3", 3),
    "codec": ("jpeg", "jpeg"),
    "jpeg_quality": ("80", 80),
    "label_codec": ("raw", "raw"),
    "max_objects": ("4", 4),
    "seed": ("7", 7),
    "options": ("b=2", (("b", "2"),)),
    "samples_per_shard": ("5", 5),
    "num_samples": ("9", 9),
}


def test_every_build_config_field_is_one_flag_documented_by_its_comment(capsys) -> None:
    assert set(NOT_DEFAULT) == {f.name for f in dataclasses.fields(BuildConfig)}
    flags = [arg for name, (text, _) in NOT_DEFAULT.items() for arg in (config_flag(name), text)]
    args = build_parser().parse_args(["build", "--source", "procedural", *flags])
    config = config_from_args(args)
    assert {name: getattr(config, name) for name in NOT_DEFAULT} == {
        k: v for k, (_, v) in NOT_DEFAULT.items()
    }
    assert config_from_args(build_parser().parse_args(["build", "--source", "procedural"])) == BuildConfig()
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for name, comment in field_comments(BuildConfig).items():
        assert f"{config_flag(name)} " in shown and " ".join(comment.split()) in shown

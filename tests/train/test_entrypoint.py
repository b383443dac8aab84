"""The trainer's entry points (`pvit-train`, `python train/main.py`, `python -m train.main`) and its --help.

The script form runs with `train/` first on sys.path and no path edit, so these run it for real, from the
repository root and from another directory, to show that `train` resolves to the package and that no module
of `train/` shadows a library.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.conftest import train_args
from train.config import SECTIONS, TrainConfig, build_parser, field_comments, section_fields
from train.main import cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "train" / "main.py"
CONSOLE_SCRIPT = Path(sys.executable).parent / "pvit-train"


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def _flat(text: str) -> str:
    """argparse wraps help text at the terminal width; compare it as one line."""
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("command", "where"),
    [
        ([sys.executable, "train/main.py", "--help"], "repo"),  # the script from elsewhere: trains below
        ([sys.executable, "-m", "train.main", "--help"], "repo"),
        ([str(CONSOLE_SCRIPT), "--help"], "elsewhere"),
    ],
    ids=["script-from-repo", "module", "pvit-train-from-elsewhere"],
)
def test_every_entry_point_prints_the_flags(command: list[str], where: str, tmp_path: Path) -> None:
    assert CONSOLE_SCRIPT.is_file(), f"{CONSOLE_SCRIPT} is missing: `make` (or pip install -e .) installs it"
    result = _run(command, REPO if where == "repo" else tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--warmup-steps" in result.stdout and "linear warmup from 0" in _flat(result.stdout)
    prog = "pvit-train" if command[0] == str(CONSOLE_SCRIPT) else "train/main.py"
    assert result.stdout.startswith(f"usage: {prog} ")


@pytest.mark.slow  # multi-process or several runs: the second CI step runs it
def test_the_script_trains_from_another_directory(shards_dir: Path, tmp_path: Path) -> None:
    """A real run of `python <repo>/train/main.py` (a loader worker too) outside the repository."""
    out = tmp_path / "run"
    flags = train_args(shards_dir, out, "--steps", "2", "--workers", "1", "--log-every", "1")
    result = _run([sys.executable, str(SCRIPT), *flags], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if row["kind"] == "train"] == [1, 2]


def test_errors_name_the_command_that_was_run(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", [str(CONSOLE_SCRIPT), "--steps", "-1", "--real", "procedural"])
    with pytest.raises(SystemExit) as exit_info:
        cli()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("pvit-train: error: --steps must be >= 0")


def test_flag_help_carries_the_field_comments() -> None:
    text = _flat(build_parser().format_help())
    for flag, comment, default in [
        ("--max-depth MAX_DEPTH", "metres; depth targets beyond are clipped in the loss", "20.0"),
        ("--steps STEPS", "optimiser steps; 0 = epochs x the real stream's steps per epoch", "0"),
        ("--clip-grad CLIP_GRAD", "max global grad norm; 0 = no clipping", "1.0"),
        ("--flip, --no-flip", "random horizontal flip", "True"),
    ]:
        assert f"{flag} {comment}" in text, flag
        assert f"(default: {default})" in text.split(f"{flag} ", 1)[1].split(" --", 1)[0], flag
    assert "comma-separated; real sources" in text  # list fields keep their format note


def test_field_comments_are_the_trailing_ones() -> None:
    """Each field gets the comment at the end of its own line; a section comment above fields is none's."""
    trailing = {}
    for cls in (TrainConfig, *SECTIONS.values()):
        source = inspect.getsource(cls)
        trailing.update(re.findall(r"^    (\w+): [^\n#]*?  # ([^\n]*)$", source, flags=re.MULTILINE))
    assert {"lr", "max_depth", "shards", "betas", "out"} <= set(trailing)  # the pattern finds fields
    assert field_comments() == trailing
    assert field_comments()["max_depth"] == "metres; depth targets beyond are clipped in the loss"


def test_every_setting_has_one_flag_and_one_place() -> None:
    """Flags are flat, settings live in sections: no two settings may share a name."""
    names = [f.name for _, f in section_fields()]
    assert len(names) == len(set(names))
    flags = {action.dest for action in build_parser()._actions} - {"help"}
    assert flags == set(names)

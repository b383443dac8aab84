"""The shared atomic write and one-line error helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.fileio import atomic_write, atomic_write_text, first_line, is_temporary


def test_a_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "build.json"
    atomic_write_text(target, "old")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text("new but incomplete")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["build.json"]


def test_a_finished_write_replaces_the_file_and_temporaries_are_recognised(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    seen: list[Path] = []
    atomic_write(target, lambda tmp: (seen.append(tmp), tmp.write_text("x")))
    assert target.read_text() == "x"
    assert is_temporary(seen[0]) and not is_temporary(target)


def test_first_line_keeps_one_line_and_names_an_empty_error() -> None:
    assert first_line(ValueError("bad value\nTraceback details")) == "bad value"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("x" * 500), limit=10) == "x" * 10
    worker = RuntimeError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback ...\n"
                          "ValueError: shard a.tar: key mismatch")  # fmt: skip
    assert first_line(worker) == "shard a.tar: key mismatch"

"""Small idioms every part of the project uses: atomic file writes and one-line error messages (including
argparse's, whose usage block would otherwise be many lines).

Torch-free, so the pipeline, the trainer and the tools share one copy.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


def atomic_write(path: str | Path, write: Callable[[Path], object], fsync: bool = True) -> None:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it over `path`.

    A reader never sees a half-written file: a process killed mid-write leaves only a hidden
    `.NAME.XXXXXXXX.tmp` (unique per writer, so concurrent writers never share one), which the rename
    never reached. `fsync` flushes the data to disk before the rename, so a power cut cannot leave a
    complete name over incomplete bytes.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as stream:
                os.fsync(stream.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """`data` to `path` through a temporary file and a rename."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """`text` (UTF-8) to `path` through a temporary file and a rename."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def is_temporary(path: Path) -> bool:
    """Whether `path` is a leftover of an `atomic_write` that never renamed it into place."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def first_line(error: BaseException, limit: int = 2000) -> str:
    """The error's own first line (at most `limit` characters), or its type name when it has no text.

    For an error re-raised from a DataLoader worker (torch puts the worker's traceback in the message),
    the worker's own message, from the traceback's last line.
    """
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    line = text.splitlines()[0] if text else type(error).__name__
    return line[:limit]


class FlagError(ValueError):
    """A bad command-line flag or value: the command prints it as one line and exits with code 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a `FlagError` of one line, not a usage block and `SystemExit`."""

    def error(self, message: str) -> NoReturn:
        raise FlagError(f"{message} (see {self.prog} --help)")

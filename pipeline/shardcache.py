"""A bounded local cache of remote shards, shared by every process of a node (`--cache-dir`, `--cache-limit`).

A shard is cached whole, under its sha256 from build.json (`<dir>/<sha256>.tar`): a rebuilt shard has
another name, so a stale copy is never served, and a fill is checked against that sha256 before it is
renamed into place, so a corrupted or truncated download is never served either. Fills take a per-shard
file lock (`<dir>/.locks/<sha256>.lock`, `fcntl.flock`): data-loader workers and ranks on one node that want
the same shard wait for the one download instead of making their own. Eviction is LRU by shard (a use
touches the file's mtime) down to the limit, and never removes a shard while a process holds its lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
from collections.abc import Iterator
from io import BufferedIOBase
from pathlib import Path

from pipeline.storage import Store

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}
LOCKS = ".locks"


class CacheError(ValueError):
    """A shard that cannot be cached as build.json describes it (its bytes differ); one line."""


def parse_size(text: str) -> int:
    """`50GB` (10^9), `50GiB` (2^30), `800M`, `123` (bytes) -> bytes; ValueError in one line otherwise."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"--cache-limit expects a size such as 50GB, 800MiB or 1T, got {text!r}")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** _POWERS[unit.upper()])


@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive `flock` on `path` (created if needed); yields False when `blocking` is off and
    another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ShardCache:
    """Whole shards of remote builds in a local directory, at most `limit` bytes (beyond the one in use)."""

    def __init__(self, directory: str | Path, limit: int) -> None:
        self.directory = Path(directory)
        self.limit = limit
        self.fills = 0  # shards this process downloaded (tests and the benchmark read it)

    def path_of(self, sha256: str) -> Path:
        return self.directory / f"{sha256}.tar"

    def open(self, folder: Store, entry: dict) -> BufferedIOBase:
        """An open handle of the cached copy of the shard build.json's `entry` (name, bytes, sha256) lists,
        downloaded from `folder` and checked first when it is not cached yet."""
        sha256, path = entry["sha256"], self.path_of(entry["sha256"])
        with _locked(self.directory / LOCKS / f"{sha256}.lock"):
            if not (path.is_file() and path.stat().st_size == entry["bytes"]):
                self._fill(folder, entry, path)
            os.utime(path)  # the LRU clock
            # Opened under the lock: an eviction (which takes it) unlinks it only once it is open, and an
            # unlinked file stays readable through its handle.
            handle = open(path, "rb")  # noqa: SIM115 - the caller keeps it
        self.evict(keep=path)
        return handle

    def _fill(self, folder: Store, entry: dict, path: Path) -> None:
        """Download `entry`'s shard to a temporary name, check its size and sha256, rename it into place."""
        from pipeline.shards import file_sha256

        tmp = self.directory / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            folder.fetch(entry["name"], tmp)
            size, digest = tmp.stat().st_size, file_sha256(tmp)
            if size != entry["bytes"] or digest != entry["sha256"]:
                raise CacheError(
                    f"{folder.where(entry['name'])}: {size} bytes with sha256 {digest[:12]}..., "
                    f"but build.json says {entry['bytes']} bytes, {entry['sha256'][:12]}... "
                    "(the object changed); "
                    f"run `pvit-pipeline verify {folder}` and rebuild the source"
                )
            os.replace(tmp, path)
            self.fills += 1
        finally:
            tmp.unlink(missing_ok=True)

    def evict(self, keep: Path | None = None) -> int:
        """Remove least recently used shards until the cache holds at most `limit` bytes; returns how many.

        A shard whose lock another process holds (being filled or opened) is skipped, as is `keep`.
        """
        with _locked(self.directory / LOCKS / "evict.lock"):
            shards = [(entry.stat().st_mtime, entry.stat().st_size, Path(entry.path))
                      for entry in os.scandir(self.directory) if entry.name.endswith(".tar")]  # fmt: skip
            total = sum(size for _, size, _ in shards)
            removed = 0
            for _, size, path in sorted(shards):
                if total <= self.limit:
                    break
                if path == keep:
                    continue
                with _locked(self.directory / LOCKS / f"{path.stem}.lock", blocking=False) as mine:
                    if mine:
                        path.unlink(missing_ok=True)
                        total, removed = total - size, removed + 1
            return removed

"""The ledger of finished units: one part file per shard, so a killed build resumes where it stopped.

Every finished unit leaves its shard and a part (`.parts/<shard>.json`: the unit's fingerprint, its
config hash, its shard's size and sha256, the label spaces its samples name, and its manifest
rows), both written atomically. A part is what the build trusts of a shard already on disk: a unit
whose part is there and matches is not rebuilt (a shard that only moved to a new number is renamed),
and a part whose shard is gone or changed is ignored, so that unit is built again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from pipeline.config import LABEL_SPACES
from pipeline.fileio import atomic_write_text, is_temporary
from pipeline.manifest import ShardRecord, uncommit
from pipeline.shards import file_sha256
from pipeline.sources import SourceError

PARTS = ".parts"


class PlannedUnit(Protocol):
    """What the ledger needs of a planned unit (`pipeline.plan.Unit`): its shard name and fingerprint."""

    @property
    def shard(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...


@dataclass
class Part:
    """The record of one finished unit (its `.parts/<shard>.json`); `shard` None when all were quarantined."""

    fingerprint: str  # the unit's: config hash + its items' raw-input fingerprints
    config_hash: str
    split: str
    shard: str | None  # the tar's file name; None when no sample of the unit could be built
    sha256: str | None
    bytes: int
    label_spaces: dict[str, list[str]]  # meta.json segm_space / box_space -> the names its samples give
    rows: list[dict]  # its manifest rows (`pipeline.manifest.manifest_row`), quarantined ones included

    @property
    def samples(self) -> int:
        """How many of its samples were built (the rest are quarantined)."""
        return sum(row["status"] == "ok" for row in self.rows)

    def shard_record(self) -> ShardRecord | None:
        """Its shard as build.json lists it; None when it has none."""
        if self.shard is None or self.sha256 is None:
            return None
        return ShardRecord(self.shard, self.split, self.samples, self.bytes, self.sha256)


def part_path(out_dir: Path, shard: str) -> Path:
    return out_dir / PARTS / f"{shard}.json"


def write_part(out_dir: Path, part: Part, shard: str) -> None:
    """Record `part` as the part of shard name `shard` (atomically)."""
    atomic_write_text(part_path(out_dir, shard), json.dumps(asdict(part)))


def read_part(path: Path) -> Part | None:
    """The part in `path`; None when it is unreadable (a torn or foreign file is not a finished unit)."""
    try:
        return Part(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _part_files(out_dir: Path) -> list[Path]:
    return sorted((out_dir / PARTS).glob("*.json"))


def _shard_name(path: Path) -> str:
    return path.name[: -len(".json")]


def _shard_intact(out_dir: Path, name: str, part: Part, verify: bool) -> bool:
    """Whether the shard a part records is on disk as it was written: same size (and sha256 with `verify`)."""
    if part.shard is None:
        return True
    path = out_dir / name
    return (
        path.is_file()
        and path.stat().st_size == part.bytes
        and (not verify or file_sha256(path) == part.sha256)
    )


def load_parts(out_dir: Path, config_hash: str, verify: bool = False) -> dict[str, Part]:
    """Finished parts of this config by shard name; a part whose shard is gone or changed is ignored.

    "Changed" is a different size; with `verify`, also a different sha256 (reads every shard).
    """
    parts = {}
    for path in _part_files(out_dir):
        part = read_part(path)
        if part is None or part.config_hash != config_hash:
            continue
        if _shard_intact(out_dir, _shard_name(path), part, verify):
            parts[_shard_name(path)] = part
    return parts


def previous_hash(out_dir: Path, committed: str | None) -> str | None:
    """The config hash the directory holds: `committed` (build.json's), else that of any part on disk."""
    if committed is not None:
        return committed
    for path in _part_files(out_dir):
        part = read_part(path)
        if part is not None:
            return part.config_hash
    return None


def move_part(out_dir: Path, parts: dict[str, Part], old: str, new: str) -> None:
    """Rename a finished unit's shard and part from shard name `old` to `new`."""
    part = parts.pop(old)
    if part.shard is not None:
        os.replace(out_dir / old, out_dir / new)
        part.shard = new
        for row in part.rows:
            if row["status"] == "ok":
                row["shard"] = new
    write_part(out_dir, part, new)
    part_path(out_dir, old).unlink(missing_ok=True)
    parts[new] = part


def reuse_moved_units(out_dir: Path, units: Sequence[PlannedUnit], parts: dict[str, Part]) -> None:
    """Give finished units that now carry another shard number their new name (two-phase renames)."""
    by_fingerprint = {part.fingerprint: name for name, part in parts.items()}
    moves = [
        (by_fingerprint[unit.fingerprint], unit.shard)
        for unit in units
        if not is_done(unit, parts) and by_fingerprint.get(unit.fingerprint) not in (None, unit.shard)
    ]
    staged = []
    for old, new in moves:  # first out of the way, so a chain or cycle of renames never clobbers
        staging = f".moving-{parts[old].fingerprint}.tar"
        move_part(out_dir, parts, old, staging)
        staged.append((staging, new))
    for staging, new in staged:
        move_part(out_dir, parts, staging, new)


def is_done(unit: PlannedUnit, parts: dict[str, Part]) -> bool:
    """Whether `unit` is finished: its shard name holds a part with its fingerprint."""
    part = parts.get(unit.shard)
    return part is not None and part.fingerprint == unit.fingerprint


def remove_shard(out_dir: Path, name: str) -> None:
    part_path(out_dir, name).unlink(missing_ok=True)
    (out_dir / name).unlink(missing_ok=True)


def drop_other_configs(out_dir: Path, config_hash: str) -> int:
    """Un-commit the directory, then remove every shard and part of another config; returns how many went."""
    uncommit(out_dir)
    removed = 0
    for path in _part_files(out_dir):
        part = read_part(path)
        if part is None or part.config_hash != config_hash:
            remove_shard(out_dir, _shard_name(path))
            removed += 1
    for path in out_dir.glob("*.tar"):  # shards without a part: an interrupted unit or an old layout
        if not part_path(out_dir, path.name).is_file():
            path.unlink()
    remove_temporaries(out_dir)
    return removed


def remove_temporaries(out_dir: Path) -> int:
    """Temporary files of writes that a killed build (or a dead Ray worker) never renamed into place."""
    stray = [
        path for folder in (out_dir, out_dir / PARTS) for path in folder.glob(".*") if is_temporary(path)
    ]
    for path in stray:
        path.unlink(missing_ok=True)
    return len(stray)


def prepare_out(out_dir: Path) -> None:
    """Create `<out>/<source>/.parts` and prove it writable, or say in one line why not (before any work)."""
    for parent in [out_dir, *out_dir.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise SourceError(f"--out: {parent} is a file, not a directory")
            break
    probe = out_dir / PARTS / f".write-probe-{os.getpid()}.tmp"
    try:
        (out_dir / PARTS).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise SourceError(f"--out: cannot write to {out_dir} ({error.strerror or error})") from None


def label_spaces(source: str, parts: list[Part]) -> dict[str, str | None]:
    """`{"segm_space": ..., "box_space": ...}`: the one space the source's samples name, None if none.

    Samples carry their label spaces in meta.json; the trainer reads them from build.json, once per
    source, so two samples that name different spaces are an adapter bug, refused before the commit.
    """
    spaces: dict[str, str | None] = {}
    for name in LABEL_SPACES:
        named = sorted({space for part in parts for space in part.label_spaces[name]})
        if len(named) > 1:
            raise SourceError(
                f"{source}: samples name {name} {named[0]!r} and {named[1]!r}; a source has one"
            )
        spaces[name] = named[0] if named else None
    return spaces

"""The ledger of finished units: one part file per shard, so a killed build resumes where it stopped.

Every finished unit leaves its shard and a part (`.parts/<shard>.json`: the unit's fingerprint, its
config hash, its shard's size and sha256, the label spaces its samples name, and its manifest
rows), each written whole (a local rename, or one object PUT: `pipeline.storage`), the part last.
A part is what the build trusts of a shard already there: a unit whose part is there and matches is
not rebuilt (a shard that only moved to a new number is renamed), and a part whose shard is gone or
changed is ignored, so that unit is built again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from pipeline.config import LABEL_SPACES
from pipeline.fileio import is_temporary
from pipeline.manifest import ShardRecord, uncommit
from pipeline.sources import SourceError
from pipeline.storage import StorageError, Store

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


def part_name(shard: str) -> str:
    """The ledger entry of shard name `shard`, relative to the source folder."""
    return f"{PARTS}/{shard}.json"


def write_part(out: Store, part: Part, shard: str) -> None:
    """Record `part` as the part of shard name `shard` (atomically: a rename, or one object PUT)."""
    out.write_bytes(part_name(shard), json.dumps(asdict(part)).encode())


def parse_part(data: bytes | None) -> Part | None:
    """The part in `data`; None when missing or unreadable (a torn or foreign file is no finished unit)."""
    if data is None:
        return None
    try:
        return Part(**json.loads(data))
    except (ValueError, TypeError):
        return None


def _part_shards(out: Store) -> list[str]:
    """The shard names the ledger has a part file for, sorted (temporaries of killed writes are not parts)."""
    names = out.listing(PARTS)
    return sorted(
        name[: -len(".json")] for name in names if name.endswith(".json") and not name.startswith(".")
    )


def read_parts(out: Store) -> dict[str, Part | None]:
    """Every part file by shard name (None where one is unreadable); remote: fetched concurrently."""
    shards = _part_shards(out)
    data = out.read_many([part_name(shard) for shard in shards])
    return {shard: parse_part(data[part_name(shard)]) for shard in shards}


def _shard_intact(out: Store, name: str, part: Part, sizes: dict[str, int], verify: bool) -> bool:
    """Whether the shard a part records is there as it was written: same size (and sha256 with `verify`)."""
    if part.shard is None:
        return True
    return sizes.get(name) == part.bytes and (not verify or out.sha256(name) == part.sha256)


def load_parts(out: Store, config_hash: str, verify: bool = False) -> dict[str, Part]:
    """Finished parts of this config by shard name; a part whose shard is gone or changed is ignored.

    "Changed" is a different size; with `verify`, also a different sha256 (reads every shard).
    """
    sizes = out.listing()
    return {
        name: part
        for name, part in read_parts(out).items()
        if part is not None
        and part.config_hash == config_hash
        and _shard_intact(out, name, part, sizes, verify)
    }


def previous_hash(out: Store, committed: str | None) -> str | None:
    """The config hash the directory holds: `committed` (build.json's), else that of any part there."""
    if committed is not None:
        return committed
    return next((part.config_hash for part in read_parts(out).values() if part is not None), None)


def move_part(out: Store, parts: dict[str, Part], old: str, new: str) -> None:
    """Rename a finished unit's shard and part from shard name `old` to `new`.

    The order keeps every kill point safe: the shard moves first (a part whose shard is gone is ignored,
    and a shard without a part is removed as stray), then the new part is written, then the old removed.
    """
    part = parts.pop(old)
    if part.shard is not None:
        out.rename(old, new)
        part.shard = new
        for row in part.rows:
            if row["status"] == "ok":
                row["shard"] = new
    write_part(out, part, new)
    out.remove(part_name(old))
    parts[new] = part


def reuse_moved_units(out: Store, units: Sequence[PlannedUnit], parts: dict[str, Part]) -> None:
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
        move_part(out, parts, old, staging)
        staged.append((staging, new))
    for staging, new in staged:
        move_part(out, parts, staging, new)


def is_done(unit: PlannedUnit, parts: dict[str, Part]) -> bool:
    """Whether `unit` is finished: its shard name holds a part with its fingerprint."""
    part = parts.get(unit.shard)
    return part is not None and part.fingerprint == unit.fingerprint


def remove_shard(out: Store, name: str) -> None:
    out.remove(part_name(name))
    out.remove(name)


def drop_other_configs(out: Store, config_hash: str) -> int:
    """Un-commit the directory, then remove every shard and part of another config; returns how many went."""
    uncommit(out)
    removed = 0
    for name, part in read_parts(out).items():
        if part is None or part.config_hash != config_hash:
            remove_shard(out, name)
            removed += 1
    remove_unrecorded_shards(out)
    remove_temporaries(out)
    return removed


def remove_unrecorded_shards(out: Store) -> int:
    """Shards without a part: an interrupted unit (killed after its upload), or an old layout."""
    recorded = set(_part_shards(out))
    stray = [name for name in out.listing() if name.endswith(".tar") and name not in recorded]
    for name in stray:
        out.remove(name)
    return len(stray)


def remove_temporaries(out: Store) -> int:
    """Temporary files of writes that a killed build (or a dead Ray worker) never renamed into place.

    Only local folders have them: an object PUT is whole or absent.
    """
    stray = [
        f"{folder}/{name}".lstrip("/")
        for folder in ("", PARTS)
        for name in out.listing(folder)
        if is_temporary(Path(name))
    ]
    for name in stray:
        out.remove(name)
    return len(stray)


def prepare_out(out: Store) -> None:
    """Create `<out>/<source>/.parts` and prove it writable, or say in one line why not (before any work)."""
    try:
        out.child(PARTS).prepare()
    except StorageError as error:
        raise SourceError(f"--out: {error}") from None


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

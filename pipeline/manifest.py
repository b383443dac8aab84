"""`manifest.parquet` (one row per sample, quarantined ones included) and `build.json` (architecture.md §4).

`build.json` is written last, through a rename: it is the commit marker of a build. A source
directory without it is a build in progress (or an interrupted one), and readers refuse it. This
module is the one place that reads and writes it: `commit` writes a build's manifest, quarantine
list and build.json; `read_build` reads it back checked, `BuildInfo` typed.
"""

from __future__ import annotations

import json
import platform
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import __version__
from pipeline.config import LABEL_SPACES, BuildConfig
from pipeline.fileio import first_line
from pipeline.schema import TASKS, tasks_of
from pipeline.shards import encode_json
from pipeline.storage import Store, open_store

BUILD_JSON = "build.json"
MANIFEST = "manifest.parquet"
QUARANTINE = "quarantine.jsonl"

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("id", pa.string()),
        ("split", pa.string()),
        ("view", pa.int32()),  # temporal view of its video (evaluation views, or --train-views)
        ("view_group", pa.string()),  # the id every view of one video shares
        ("shard", pa.string()),  # null for a quarantined sample
        ("offset", pa.int64()),  # byte offset of the sample's first tar header
        ("size", pa.int64()),  # bytes from that header to the end of its last member
        ("mask", pa.int32()),
        *[(f"has_{task}", pa.bool_()) for task in TASKS],
        ("label", pa.int64()),
        ("frames", pa.int32()),
        ("hw", pa.list_(pa.int32(), 2)),  # stored frame [H, W]
        ("config_hash", pa.string()),
        ("fingerprint", pa.string()),  # of the raw inputs the sample came from
        ("status", pa.string()),  # "ok" or "quarantined"
        ("reason", pa.string()),  # why it was quarantined; null when ok
    ]
)


class BuildDirError(Exception):
    """A source directory is not a finished build; one line saying why."""


def manifest_row(**fields: Any) -> dict:
    """A manifest row with every `has_<task>` column filled from `mask`."""
    mask = int(fields.get("mask") or 0)
    row = {name: fields.get(name) for name in MANIFEST_SCHEMA.names}
    row.update({f"has_{task}": bool(mask >> bit & 1) for bit, task in enumerate(TASKS)})
    return row


def write_manifest(folder: Path | str | Store, rows: list[dict]) -> None:
    """`manifest.parquet` of the build in `folder`."""
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    open_store(folder).write_file(MANIFEST, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def read_manifest(source_dir: Path | str | Store) -> pa.Table:
    """The manifest of a finished build; `BuildDirError` (one line) when it is missing or unreadable."""
    folder = open_store(source_dir)
    read_build(folder)
    where = folder.where(MANIFEST)
    try:
        table = pq.read_table(pa.BufferReader(folder.read_bytes(MANIFEST)))
    except FileNotFoundError:
        raise BuildDirError(f"{folder}: no {MANIFEST} (rebuild the source to restore it)") from None
    except (OSError, pa.ArrowException) as error:
        raise BuildDirError(
            f"{where}: unreadable ({first_line(error)}); rebuild the source to restore it"
        ) from None
    missing = [name for name in MANIFEST_SCHEMA.names if name not in table.column_names]
    if missing:
        raise BuildDirError(f"{where}: lacks column(s) {', '.join(missing)}; rebuild the source")
    return table


def write_build(source_dir: Path | str | Store, build: dict) -> None:
    text = json.dumps(build, indent=2, sort_keys=True).encode() + b"\n"
    open_store(source_dir).write_bytes(BUILD_JSON, text)


def read_build(source_dir: Path | str | Store) -> dict:
    """`build.json` of a finished build; `BuildDirError` when there is none."""
    folder = open_store(source_dir)
    where = folder.where(BUILD_JSON)
    if folder.local and not Path(folder.location).is_dir():
        raise BuildDirError(f"{source_dir}: no such directory")
    try:
        data = folder.read_bytes(BUILD_JSON)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise BuildDirError(
            f"{source_dir}: no {BUILD_JSON} (not a build directory, or its build is unfinished)"
        ) from None
    try:
        build = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BuildDirError(f"{where}: unreadable ({error})") from None
    problem = _build_json_problem(build)
    if problem:
        raise BuildDirError(f"{where}: {problem}; rebuild the source")
    return build


@dataclass(frozen=True)
class ShardRecord:
    """One shard as build.json lists it: readers check its size and sha256 before trusting it."""

    name: str  # `<split>-NNNNNN.tar`
    split: str
    samples: int
    bytes: int
    sha256: str


# What readers rely on in build.json: top-level key -> type, and the keys of each shard entry.
_BUILD_KEYS = {"source": str, "config": dict, "config_hash": str, "shards": list, "counts": dict}
_SHARD_KEYS = tuple(f.name for f in fields(ShardRecord))
_COUNT_KEYS = ("samples", "quarantined", "splits")


def _build_json_problem(build: object) -> str | None:
    """What is wrong with a parsed build.json, or None."""
    if not isinstance(build, dict):
        return "not a JSON object"
    for key, kind in _BUILD_KEYS.items():
        if not isinstance(build.get(key), kind):
            return f"lacks {key!r}" if key not in build else f"{key!r} is not a {kind.__name__}"
    missing = [key for key in _COUNT_KEYS if key not in build["counts"]]
    if missing:
        return f"'counts' lacks {', '.join(map(repr, missing))}"
    for number, shard in enumerate(build["shards"]):
        if not isinstance(shard, dict) or any(key not in shard for key in _SHARD_KEYS):
            return f"shard entry {number} lacks one of {', '.join(_SHARD_KEYS)}"
    return None


def write_quarantine(folder: Store, rows: list[dict]) -> None:
    lines = [encode_json({k: row[k] for k in ("split", "id", "reason", "fingerprint")}) for row in rows]
    folder.write_bytes(QUARANTINE, b"".join(line + b"\n" for line in lines))


def uncommit(folder: Store) -> None:
    """Remove build.json first of all when a build starts changing a directory: readers then refuse it."""
    folder.remove(BUILD_JSON)


def committed_hash(folder: Store) -> str | None:
    """The config hash of the build committed in `folder`; None when no readable build.json is there."""
    try:
        return read_build(folder)["config_hash"]
    except (BuildDirError, OSError):
        return None


def commit_matches(folder: Store, shards: set[tuple[str, int, str | None]], rows: int) -> bool:
    """Whether the commit there is whole and is of these shards: build.json lists exactly `shards`
    (name, bytes, sha256), the manifest holds `rows` rows, and the quarantine list is there."""
    try:
        listed = {(s["name"], s["bytes"], s["sha256"]) for s in read_build(folder)["shards"]}
        held = pq.read_metadata(pa.BufferReader(folder.read_bytes(MANIFEST))).num_rows
    except (BuildDirError, OSError, pa.ArrowException):  # unreadable or missing means "repair"
        return False
    return listed == shards and held == rows and folder.is_file(QUARANTINE)


@dataclass(frozen=True)
class BuildRecord:
    """What build.json records of a finished build besides the counts, which the manifest rows give."""

    source: str
    config: dict  # `BuildConfig.hashed_fields`: every setting that decides the bytes
    config_hash: str
    tasks: tuple[str, ...]  # the tasks the adapter provides
    adapter_version: str
    label_spaces: dict[str, str | None]  # segm_space, box_space: the one space the samples name, or None
    shards: list[ShardRecord]  # in name order
    timings: dict  # seconds, units_built, units_reused


def commit(folder: Store, record: BuildRecord, rows: list[dict]) -> None:
    """Write manifest.parquet and quarantine.jsonl, then build.json: the commit marker goes last."""
    write_manifest(folder, rows)
    write_quarantine(folder, [row for row in rows if row["status"] == "quarantined"])
    write_build(folder, build_document(record, rows))


def build_document(record: BuildRecord, rows: list[dict]) -> dict:
    """The content of build.json."""
    return {
        "source": record.source,
        "config": record.config,
        "config_hash": record.config_hash,
        "tasks": list(record.tasks),
        **record.label_spaces,
        "versions": {
            "pvit-pipeline": __version__,
            "adapter": record.adapter_version,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pyarrow": version("pyarrow"),
            "webdataset": version("webdataset"),
        },
        "counts": _counts(rows),
        "shards": [asdict(shard) for shard in record.shards],
        "timings": {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record.timings},
    }


def _counts(rows: list[dict]) -> dict:
    """Samples and quarantined inputs, in all and per split, with the samples per task."""
    per_split: dict[str, dict] = {}
    for row in rows:
        counts = per_split.setdefault(row["split"], {"samples": 0, "quarantined": 0, "tasks": Counter()})
        if row["status"] == "ok":
            counts["samples"] += 1
            counts["tasks"].update(tasks_of(row["mask"]))
        else:
            counts["quarantined"] += 1
    ok = sum(row["status"] == "ok" for row in rows)
    return {
        "samples": ok,
        "quarantined": len(rows) - ok,
        "splits": {split: {**c, "tasks": dict(sorted(c["tasks"].items()))} for split, c in per_split.items()},
    }


@dataclass(frozen=True)
class BuildInfo:
    """What a reader of the shards needs from build.json, typed; `from_json` is its one reader."""

    source: str
    config: BuildConfig  # the geometry: frames, size, crop, label_stride, max_objects, codec, ...
    config_hash: str
    tasks: tuple[str, ...]  # the tasks the adapter provides
    segm_space: str | None  # the label space of segm.npy (the samples' meta.json); None = no segm
    box_space: str | None  # the label space of boxes_cls.npy; None = no boxes
    shards: tuple[dict, ...]  # build.json "shards": name, split, samples, bytes, sha256

    @classmethod
    def from_json(cls, build: Mapping[str, Any]) -> BuildInfo:
        """Type a parsed build.json (`read_build` checked its common keys).

        One-line ValueError, saying to rebuild, when it lacks what this version writes.
        """
        config = BuildConfig.from_json(build["config"])  # first: another format says so, whatever it lacks
        missing = [key for key in ("tasks", *LABEL_SPACES) if key not in build]
        if missing:
            raise ValueError(
                f"lacks {missing[0]!r} (written by an older pvit-pipeline): "
                f"rebuild the source with `pvit-pipeline build`"
            )
        return cls(
            source=build["source"],
            config=config,
            config_hash=build["config_hash"],
            tasks=tuple(build["tasks"]),
            segm_space=build["segm_space"],
            box_space=build["box_space"],
            shards=tuple(build["shards"]),
        )

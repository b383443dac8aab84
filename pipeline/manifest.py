"""`manifest.parquet` (one row per sample, quarantined ones included) and `build.json` (DESIGN §4).

`build.json` is written last, through a rename: it is the commit marker of a build. A source
directory without it is a build in progress (or an interrupted one), and readers refuse it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.fileio import atomic_write, atomic_write_bytes, first_line
from pipeline.schema import TASKS
from pipeline.shards import encode_json

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


def write_manifest(path: Path, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def read_manifest(source_dir: Path) -> pa.Table:
    """The manifest of a finished build; `BuildDirError` (one line) when it is missing or unreadable."""
    read_build(source_dir)
    path = Path(source_dir) / MANIFEST
    if not path.is_file():
        raise BuildDirError(f"{source_dir}: no {MANIFEST} (rebuild the source to restore it)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise BuildDirError(
            f"{path}: unreadable ({first_line(error)}); rebuild the source to restore it"
        ) from None
    missing = [name for name in MANIFEST_SCHEMA.names if name not in table.column_names]
    if missing:
        raise BuildDirError(f"{path}: lacks column(s) {', '.join(missing)}; rebuild the source")
    return table


def write_build(source_dir: Path, build: dict) -> None:
    atomic_write_bytes(
        Path(source_dir) / BUILD_JSON, json.dumps(build, indent=2, sort_keys=True).encode() + b"\n"
    )


def read_build(source_dir: Path | str) -> dict:
    """`build.json` of a finished build; `BuildDirError` when there is none."""
    path = Path(source_dir) / BUILD_JSON
    if not Path(source_dir).is_dir():
        raise BuildDirError(f"{source_dir}: no such directory")
    if not path.is_file():
        raise BuildDirError(
            f"{source_dir}: no {BUILD_JSON} (not a build directory, or its build is unfinished)"
        )
    try:
        build = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BuildDirError(f"{path}: unreadable ({error})") from None
    problem = _build_json_problem(build)
    if problem:
        raise BuildDirError(f"{path}: {problem}; rebuild the source")
    return build


# What readers rely on in build.json: top-level key -> type, and the keys of each shard entry.
_BUILD_KEYS = {"source": str, "config": dict, "config_hash": str, "shards": list, "counts": dict}
_SHARD_KEYS = ("name", "split", "samples", "bytes", "sha256")
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


def write_quarantine(source_dir: Path, rows: list[dict]) -> None:
    lines = [encode_json({k: row[k] for k in ("split", "id", "reason", "fingerprint")}) for row in rows]
    atomic_write_bytes(Path(source_dir) / QUARANTINE, b"".join(line + b"\n" for line in lines))

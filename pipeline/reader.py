"""Reading built sources back, torch-free: decoded samples, shard lists, and `verify`.

`decode_sample()` turns the raw members of one sample into arrays: the trainer's loader and `show` use it
on the members of one span read at its manifest offset (`pipeline.shards.read_sample_span`),
`iter_samples()` on whole shards read in order. `verify` checks the manifest against the tars: every row's
span holds the sample the row names, and every sample of the tars has exactly one row.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from io import BufferedIOBase
from pathlib import Path

import numpy as np

from pipeline.fileio import first_line
from pipeline.manifest import BUILD_JSON, MANIFEST, QUARANTINE, read_build, read_manifest
from pipeline.schema import LABEL_MEMBERS, META_JSON, SampleError, validate_sample
from pipeline.shards import (
    ShardEntry,
    SpanError,
    decode_npy,
    decode_video,
    file_sha256,
    index_shard,
    read_sample_span,
    read_shard,
)
from pipeline.storage import Store, open_store


def decode_sample(
    key: str,
    members: Mapping[str, bytes | memoryview],
    video_decoder: Callable[[Mapping], np.ndarray] = decode_video,
) -> dict:
    """`{"__key__", "meta": dict, "video": uint8 [T,H,W,3], "<label>.npy": array, ...}`.

    Arrays are views of the member buffers (no copy): writable when those are (the trainer's spans),
    read-only for `bytes`. `video_decoder` lets a caller bring a faster JPEG decoder (the trainer's).
    """
    if META_JSON not in members:
        raise SampleError(f"{key}: no {META_JSON}")
    name = META_JSON
    try:  # a member that does not parse is one line naming the sample and the member
        sample = {"__key__": key, "meta": json.loads(bytes(members[META_JSON]))}
        name = "video"
        sample["video"] = video_decoder(members)
        for name in members:
            if name in LABEL_MEMBERS:
                sample[name] = decode_npy(members[name], copy=False)  # views: read-only for `bytes`
    except Exception as error:  # json, npy and JPEG decoders fail in different ways
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SampleError(f"{key}: {name} does not parse ({first})") from None
    return sample


def shard_paths(source_dir: Path | str | Store, split: str | None = None) -> list[str]:
    """The shards of a finished build (optionally one split), in build.json order: paths or URLs."""
    folder = open_store(source_dir)
    return [folder.where(name) for name in shard_names(folder, split)]


def shard_names(folder: Store, split: str | None = None) -> list[str]:
    build = read_build(folder)
    return [shard["name"] for shard in build["shards"] if split in (None, shard["split"])]


def iter_samples(source_dir: Path | str | Store, split: str | None = None) -> Iterator[dict]:
    """Every sample of a finished build (optionally one split), decoded, in shard order."""
    folder = open_store(source_dir)
    for name in shard_names(folder, split):
        with folder.local_copy(name) as path:
            for key, members in read_shard(path):
                yield decode_sample(key, members)


def verify(source_dir: Path | str | Store) -> list[str]:
    """Re-hash every shard and check every sample against the schema, the manifest and the tars.

    Every manifest row is re-read at its offset (bounded by its tar's size) and must hold the sample it
    names, with the size, label, mask, split, view and hw it records; every sample of the tars must have
    exactly one row (none trained twice, none never). Returns one line per problem found, naming the shard
    and the key; an empty list means the build is intact. A remote shard is downloaded, one at a time.
    """
    folder = open_store(source_dir)
    build = read_build(folder)
    rows = [row for row in read_manifest(folder).to_pylist() if row["status"] == "ok"]
    listed = {shard["name"] for shard in build["shards"]}
    problems = [f"{key}: in {count} manifest rows" for key, count in _repeated(row["key"] for row in rows)]
    problems += [
        f"{row['key']}: the manifest names shard {row['shard']!r}, which build.json does not list"
        for row in rows
        if row["shard"] not in listed
    ]
    by_shard: dict[str, list[dict]] = {}
    for row in rows:
        by_shard.setdefault(row["shard"], []).append(row)
    present = folder.listing()
    for shard in build["shards"]:
        mine = by_shard.get(shard["name"], [])
        problems.extend(_verify_present_shard(folder, shard, mine, build["config_hash"], present))
    return problems


def _verify_present_shard(
    folder: Store, shard: dict, rows: list[dict], config_hash: str, present: dict[str, int]
) -> list[str]:
    """`_verify_shard` on a local copy of the shard; a missing or unreadable shard is a finding too."""
    name = shard["name"]
    if name not in present:
        return [
            f"{name}: missing",
            *(f"{name}: {row['key']}: in the manifest but in no shard" for row in rows),
        ]
    try:
        with folder.local_copy(name) as path:
            return _verify_shard(path, shard, rows, config_hash)
    except OSError as error:  # a shard we may not read (permissions, I/O error) is a finding too
        return [f"{name}: cannot be read ({error.strerror or first_line(error)})"]


def stray_files(source_dir: Path | str | Store) -> list[str]:
    """Files in a build directory that the build does not commit: temporaries of killed writes, shards
    of no build. Readers never open them (they follow build.json); `build` removes the temporaries."""
    folder = open_store(source_dir)
    known = {BUILD_JSON, MANIFEST, QUARANTINE} | {s["name"] for s in read_build(folder)["shards"]}
    stray = [name for name in sorted(folder.listing()) if name not in known]
    if folder.local:  # a directory that is not ours (an object store has no empty folders)
        root = Path(folder.location)
        stray += [p.name for p in sorted(root.iterdir()) if p.is_dir() and p.name != ".parts"]
    stray += [f".parts/{name}" for name in sorted(folder.listing(".parts")) if not name.endswith(".json")]
    return sorted(stray)


def _repeated(values: Iterable[str]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return [(value, count) for value, count in counts.items() if count > 1]


def _verify_shard(path: Path, shard: dict, rows: list[dict], config_hash: str) -> list[str]:
    """The problems of one (local) shard and of the manifest rows that point into it."""
    name = shard["name"]
    problems = []
    if file_sha256(path) != shard["sha256"]:
        problems.append(f"{name}: sha256 differs from build.json (the file changed)")
    spans, unreadable = _tar_spans(path)
    if unreadable:
        problems.append(f"{name}: unreadable tar ({unreadable})")
    elif len(spans) != shard["samples"]:
        problems.append(f"{name}: {len(spans)} samples, build.json says {shard['samples']}")
    with open(path, "rb") as handle:
        for row in rows:
            problem = _row_problem(handle, row, spans if not unreadable else None, config_hash)
            if problem:
                problems.append(f"{name}: {row['key']}: {problem}")
    if not unreadable:
        problems.extend(f"{name}: {line}" for line in _coverage_problems(spans, rows))
    return problems


def _tar_spans(path: Path) -> tuple[dict[int, ShardEntry], str | None]:
    """The tar's samples by the offset of their first header (headers only), or why the tar cannot be read."""
    try:
        return {entry.offset: entry for entry in index_shard(path)}, None
    except (tarfile.TarError, OSError, ValueError) as error:
        return {}, first_line(error)


def _row_problem(
    handle: BufferedIOBase, row: dict, spans: dict[int, ShardEntry] | None, config_hash: str
) -> str | None:
    """What is wrong with one manifest row, against the span at its offset; None if nothing.

    One line: a span that is not the row's sample makes every other comparison noise, so it is said alone.
    """
    try:
        members = read_sample_span(handle, row["offset"], row["size"], key=row["key"])
    except SpanError as error:
        return str(error)
    if spans is not None:
        entry = spans.get(row["offset"])
        if entry is None:
            return f"byte {row['offset']} is inside a sample, not where one starts"
        if entry.size != row["size"]:
            return f"manifest size={row['size']} but the sample spans {entry.size} bytes"
    try:
        sample = decode_sample(row["key"], members)
        arrays = {name: value for name, value in sample.items() if name in LABEL_MEMBERS}
        validate_sample(sample["meta"], arrays, sample["video"].shape)
    except Exception as error:  # undecodable members are findings too
        return first_line(error)
    mismatches = _meta_mismatches(row, sample["meta"], len(sample["video"]), config_hash)
    return "; ".join(mismatches) or None


# Manifest columns that meta.json holds too (the same name and value).
_META_COLUMNS = ("source", "id", "split", "view", "view_group", "mask", "label", "hw", "config_hash")


def _meta_mismatches(row: dict, meta: dict, frames: int, config_hash: str) -> list[str]:
    problems = [
        f"manifest {column}={row[column]!r} but meta.json has {meta.get(column)!r}"
        for column in _META_COLUMNS
        if row[column] != meta.get(column)
    ]
    if row["frames"] != frames:
        problems.append(f"manifest frames={row['frames']!r} but the clip has {frames}")
    if meta.get("config_hash") != config_hash:
        problems.append(f"config hash {meta.get('config_hash')} differs from the build's {config_hash}")
    return problems


def _coverage_problems(spans: dict[int, ShardEntry], rows: list[dict]) -> list[str]:
    """Samples of the tar that no manifest row points at (never trained) or several do (trained twice)."""
    pointing: dict[int, list[str]] = {}
    for row in rows:
        pointing.setdefault(row["offset"], []).append(row["key"])
    problems = []
    for offset, entry in sorted(spans.items()):
        keys = pointing.get(offset, [])
        if not keys:
            problems.append(f"{entry.key}: in the tar at byte {offset} but no manifest row points at it")
        elif len(keys) > 1:
            rows_text = ", ".join(keys)
            problems.append(
                f"{entry.key}: {len(keys)} manifest rows point at its span at byte {offset} ({rows_text})"
            )
    return problems

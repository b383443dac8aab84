"""Reading built sources back, torch-free: decoded samples, shard lists, and `verify`.

`decode_sample()` turns the raw members of one sample (as a tar or webdataset yields them) into
arrays; the trainer's streaming loader uses it on webdataset samples, `iter_samples()` on shards
read directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from pipeline.manifest import BUILD_JSON, MANIFEST, QUARANTINE, read_build, read_manifest
from pipeline.schema import LABEL_MEMBERS, META_JSON, SampleError, validate_sample
from pipeline.shards import decode_npy, decode_video, file_sha256, read_shard


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


def shard_paths(source_dir: Path | str, split: str | None = None) -> list[Path]:
    """The shards of a finished build (optionally one split), in build.json order."""
    build = read_build(source_dir)
    return [Path(source_dir) / shard["name"] for shard in build["shards"] if split in (None, shard["split"])]


def iter_samples(source_dir: Path | str, split: str | None = None) -> Iterator[dict]:
    """Every sample of a finished build (optionally one split), decoded, in shard order."""
    for path in shard_paths(source_dir, split):
        for key, members in read_shard(path):
            yield decode_sample(key, members)


def verify(source_dir: Path | str) -> list[str]:
    """Re-hash every shard and check every sample against the schema and the manifest.

    Returns one line per problem found; an empty list means the build is intact.
    """
    source_dir = Path(source_dir)
    build = read_build(source_dir)
    rows = {row["key"]: row for row in read_manifest(source_dir).to_pylist() if row["status"] == "ok"}
    problems: list[str] = []
    seen: set[str] = set()
    for shard in build["shards"]:
        path = source_dir / shard["name"]
        if not path.is_file():
            problems.append(f"{shard['name']}: missing")
            continue
        if file_sha256(path) != shard["sha256"]:
            problems.append(f"{shard['name']}: sha256 differs from build.json (the file changed)")
        problems.extend(_verify_shard(path, shard, rows, build["config_hash"], seen))
    problems.extend(f"{key}: in the manifest but in no shard" for key in sorted(set(rows) - seen))
    return problems


def stray_files(source_dir: Path | str) -> list[str]:
    """Files in a build directory that the build does not commit: temporaries of killed writes, shards
    of no build. Readers never open them (they follow build.json); `build` removes the temporaries."""
    source_dir = Path(source_dir)
    known = {BUILD_JSON, MANIFEST, QUARANTINE, ".parts"} | {
        s["name"] for s in read_build(source_dir)["shards"]
    }
    stray = [path for path in sorted(source_dir.iterdir()) if path.name not in known]
    parts = source_dir / ".parts"
    if parts.is_dir():
        stray += [path for path in sorted(parts.iterdir()) if path.suffix != ".json"]
    return [str(path.relative_to(source_dir)) for path in stray]


def _verify_shard(
    path: Path, shard: dict, rows: dict[str, dict], config_hash: str, seen: set[str]
) -> list[str]:
    problems: list[str] = []
    count = 0
    try:
        for key, members in read_shard(path):
            count += 1
            seen.add(key)
            problems.extend(
                f"{shard['name']}: {key}: {p}" for p in _verify_sample(key, members, rows, config_hash)
            )
    except Exception as error:  # a corrupt tar is a finding, not a crash
        problems.append(f"{shard['name']}: unreadable tar ({error})")
    if count != shard["samples"]:
        problems.append(f"{shard['name']}: {count} samples, build.json says {shard['samples']}")
    return problems


def _verify_sample(key: str, members: dict[str, bytes], rows: dict[str, dict], config_hash: str) -> list[str]:
    try:
        sample = decode_sample(key, members)
        arrays = {name: value for name, value in sample.items() if name in LABEL_MEMBERS}
        validate_sample(sample["meta"], arrays, sample["video"].shape)
    except Exception as error:  # undecodable members are findings too
        return [str(error).splitlines()[0] if str(error) else type(error).__name__]
    row, meta = rows.get(key), sample["meta"]
    if row is None:
        return ["not in the manifest"]
    problems = []
    for field in ("id", "split", "mask"):
        if row[field] != meta[field]:
            problems.append(f"manifest {field}={row[field]!r} but meta.json has {meta[field]!r}")
    if meta["config_hash"] != config_hash:
        problems.append(f"config hash {meta['config_hash']} differs from the build's {config_hash}")
    return problems

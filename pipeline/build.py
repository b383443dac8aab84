"""The build engine: plan work units, build the missing ones in parallel, merge (DESIGN §4).

A build lists the source's items, groups them into deterministic work units (one unit = one
shard), and compares each unit's fingerprint (config hash + its items' raw-input fingerprints)
with the parts already on disk:

- a unit whose part is there and matches is not rebuilt (a shard that only moved to a new
  number is renamed), so an unchanged build does no work and an added raw input rebuilds only the
  unit it falls into;
- every finished unit leaves its shard and a small part file (`.parts/<shard>.json`, the unit's
  manifest rows), both written atomically, so a killed build resumes where it stopped;
- a changed config hash (a new `--size`, say) removes `build.json` first, then every shard of the
  old config: readers never see old and new shards together.

The merge writes `manifest.parquet`, `quarantine.jsonl` and finally `build.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from pipeline import __version__, parallel
from pipeline.config import BuildConfig
from pipeline.geometry import (
    centre_square,
    crop_and_resize_frames,
    crop_and_resize_map,
    crop_boxes,
    pad_box_slots,
)
from pipeline.manifest import (
    BUILD_JSON,
    MANIFEST,
    manifest_row,
    read_build,
    write_build,
    write_manifest,
    write_quarantine,
)
from pipeline.schema import (
    LABEL_MEMBERS,
    MEMBER_SPECS,
    SampleError,
    mask_of,
    sample_key,
    tasks_of,
    validate_sample,
)
from pipeline.shards import encode_members, file_sha256, write_atomic, write_shard
from pipeline.sources import Item, Quarantine, Sample, Source, SourceError, get_source

PARTS = ".parts"
DENSE_MEMBERS = ("depth.npy", "normal.npy", "segm.npy")


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Unit:
    """One work unit: the items that go into one shard."""

    split: str
    shard: str  # file name, `<split>-NNNNNN.tar`
    fingerprint: str
    items: tuple[Item, ...]


def unit_boundary(item_id: str, samples_per_unit: int) -> bool:
    """Whether `item_id` starts a new unit: content-defined, so inserting an item moves no boundary.

    Fixed-size chunks would shift every later unit when one item is added in the middle; a
    boundary decided by the item's own id changes only the unit the new item lands in.
    """
    digest = int.from_bytes(hashlib.sha1(item_id.encode()).digest()[:8], "big")
    return digest % samples_per_unit == 0


def plan_units(items: list[Item], split: str, config_hash: str, samples_per_unit: int) -> list[Unit]:
    """Group one split's items (sorted by id) into units and name their shards in order."""
    groups: list[list[Item]] = []
    for item in sorted(items, key=lambda item: item.id):
        if not groups or unit_boundary(item.id, samples_per_unit):
            groups.append([])
        groups[-1].append(item)
    units = []
    for index, group in enumerate(groups):
        digest = hashlib.sha1(config_hash.encode())
        for item in group:
            digest.update(f"{item.id}\0{item.fingerprint}\n".encode())
        units.append(Unit(split, f"{split}-{index:06d}.tar", digest.hexdigest()[:20], tuple(group)))
    return units


def list_items(adapter: Source, split: str) -> list[Item]:
    items = list(adapter.items(split))
    seen = Counter(item.id for item in items)
    duplicates = [item_id for item_id, count in seen.items() if count > 1]
    if duplicates:
        raise SourceError(f"{adapter.name}: split {split} lists id {duplicates[0]!r} more than once")
    return items


# ----------------------------------------------------------------------------- one sample


def _as_member_dtype(name: str, array: np.ndarray) -> np.ndarray:
    """Cast an adapter's array to the member's dtype, refusing casts that would change values."""
    want = np.dtype(MEMBER_SPECS[name].dtype)
    array = np.asarray(array)
    if array.dtype == want:
        return array
    if want.kind == "f":
        if array.dtype.kind not in "fiu":
            raise SampleError(f"{name}: dtype {array.dtype} is not numeric")
        return array.astype(want)
    info = np.iinfo(want)
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise SampleError(f"{name}: NaN in an integer label")
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise SampleError(f"{name}: values outside the {want} range")
    return array.astype(want)


def fit_geometry(sample: Sample, config: BuildConfig) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Centre-crop and resize the clip to `size` and dense maps to `label_size`; fit the boxes."""
    video = sample.video
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise SampleError(f"video: {video.dtype} {video.shape}, expected uint8 [T,H,W,3]")
    if video.shape[0] != config.frames:
        raise SampleError(f"video has {video.shape[0]} frames, expected {config.frames}")
    window = centre_square(*video.shape[1:3])
    labels = {
        name: _as_member_dtype(name, array) for name, array in sample.labels.items() if name in MEMBER_SPECS
    }
    unknown = sorted(set(sample.labels) - set(MEMBER_SPECS))
    if unknown:
        raise SampleError(f"unknown label member(s) {', '.join(unknown)}")
    for name in DENSE_MEMBERS:
        if name in labels:
            if labels[name].ndim < 3:
                raise SampleError(f"{name}: shape {labels[name].shape}, expected [T,h,w,...]")
            labels[name] = crop_and_resize_map(labels[name], config.label_size)
    if "boxes.npy" in labels or "boxes_cls.npy" in labels:
        if not {"boxes.npy", "boxes_cls.npy"} <= set(labels):
            raise SampleError("boxes.npy and boxes_cls.npy must come together")
        boxes, classes = labels["boxes.npy"], labels["boxes_cls.npy"]
        if boxes.ndim != 3 or boxes.shape[-1] != 4 or classes.shape != boxes.shape[:2]:
            raise SampleError(f"boxes {boxes.shape} / boxes_cls {classes.shape}, expected [T,N,4] / [T,N]")
        boxes, classes = crop_boxes(boxes, classes, window)
        labels["boxes.npy"], labels["boxes_cls.npy"] = pad_box_slots(boxes, classes, config.max_objects)
    return crop_and_resize_frames(video, config.size), labels


def finalize(
    sample: Sample, item: Item, source: str, config: BuildConfig, config_hash: str
) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """Turn an adapter's `Sample` into `(meta, video, labels)` that satisfy the schema."""
    video, labels = fit_geometry(sample, config)
    present = {LABEL_MEMBERS[name] for name in labels}
    if sample.label is not None:
        present.add("action")
    if sample.oscc is not None:
        present.add("oscc")
    mask = mask_of(present)
    meta = {
        **sample.extra,
        "source": source,
        "id": item.id,
        "split": item.split,
        "mask": mask,
        "tasks": tasks_of(mask),
        "label": None if sample.label is None else int(sample.label),
        "label_name": sample.label_name,
        "fps": float(sample.fps),
        "frame_indices": [int(i) for i in sample.frame_indices],
        "orig_hw": list(sample.orig_hw or sample.video.shape[1:3]),
        "config_hash": config_hash,
    }
    if sample.oscc is not None:
        meta["oscc"] = int(sample.oscc)
    validate_sample(meta, labels, video.shape)
    return meta, video, labels


# ----------------------------------------------------------------------------- one unit (a Ray task)


@dataclass(frozen=True)
class UnitJob:
    source: str
    root: str | None
    config: BuildConfig
    config_hash: str
    out_dir: str
    unit: Unit


@dataclass(frozen=True)
class UnitResult:
    shard: str
    samples: int
    quarantined: int
    bytes: int


@cache
def _adapter(source: str, root: str | None, config: BuildConfig) -> Source:
    """One adapter per worker process and build: adapters may cache annotation files."""
    return get_source(source)(Path(root) if root else None, config)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(error, (Quarantine, SampleError)):
        return message or type(error).__name__
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def build_unit(job: UnitJob) -> UnitResult:
    """Load, finalise and write every item of one unit; quarantine the bad ones. Idempotent."""
    adapter = _adapter(job.source, job.root, job.config)
    out_dir = Path(job.out_dir)
    rows, members = [], []
    for item in job.unit.items:
        key = sample_key(job.source, item.id)
        base = {
            "key": key,
            "source": job.source,
            "id": item.id,
            "split": item.split,
            "config_hash": job.config_hash,
            "fingerprint": item.fingerprint,
        }
        try:
            meta, video, labels = finalize(adapter.load(item), item, job.source, job.config, job.config_hash)
        except Exception as error:  # noqa: BLE001 - any failure of one input quarantines that input only
            rows.append(manifest_row(**base, status="quarantined", reason=_one_line(error), mask=0))
            continue
        members.append((key, encode_members(meta, video, labels, job.config.codec, job.config.jpeg_quality)))
        rows.append(
            manifest_row(**base, status="ok", mask=meta["mask"], label=meta["label"], frames=len(video))
        )
    part = {
        "fingerprint": job.unit.fingerprint,
        "config_hash": job.config_hash,
        "split": job.unit.split,
        "shard": None,
        "sha256": None,
        "bytes": 0,
    }
    if members:
        shard_path = out_dir / job.unit.shard
        entries = {entry.key: entry for entry in write_shard(shard_path, members)}
        for row in rows:
            if row["status"] == "ok":
                row.update(
                    shard=job.unit.shard, offset=entries[row["key"]].offset, size=entries[row["key"]].size
                )
        part.update(shard=job.unit.shard, sha256=file_sha256(shard_path), bytes=shard_path.stat().st_size)
    part["rows"] = rows
    write_atomic(out_dir / PARTS / f"{job.unit.shard}.json", json.dumps(part).encode())
    return UnitResult(job.unit.shard, len(members), len(rows) - len(members), part["bytes"])


# ----------------------------------------------------------------------------- reconciling with disk


def load_parts(out_dir: Path, config_hash: str) -> dict[str, dict]:
    """Finished parts of this config by shard name; a part whose shard is gone or changed is ignored."""
    parts = {}
    for path in sorted((out_dir / PARTS).glob("*.json")):
        try:
            part = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if part.get("config_hash") != config_hash:
            continue
        shard_path = out_dir / path.name[: -len(".json")]
        if part["shard"] is not None and (
            not shard_path.is_file() or shard_path.stat().st_size != part["bytes"]
        ):
            continue
        parts[path.name[: -len(".json")]] = part
    return parts


def move_part(out_dir: Path, parts: dict[str, dict], old: str, new: str) -> None:
    """Rename a finished unit's shard and part from shard name `old` to `new`."""
    part = parts.pop(old)
    if part["shard"] is not None:
        os.replace(out_dir / old, out_dir / new)
        part["shard"] = new
        for row in part["rows"]:
            if row["status"] == "ok":
                row["shard"] = new
    write_atomic(out_dir / PARTS / f"{new}.json", json.dumps(part).encode())
    (out_dir / PARTS / f"{old}.json").unlink(missing_ok=True)
    parts[new] = part


def reuse_moved_units(out_dir: Path, units: list[Unit], parts: dict[str, dict]) -> None:
    """Give finished units that now carry another shard number their new name (two-phase renames)."""
    by_fingerprint = {part["fingerprint"]: name for name, part in parts.items()}
    moves = [
        (by_fingerprint[unit.fingerprint], unit.shard)
        for unit in units
        if parts.get(unit.shard, {}).get("fingerprint") != unit.fingerprint
        and by_fingerprint.get(unit.fingerprint) not in (None, unit.shard)
    ]
    staged = []
    for old, new in moves:  # first out of the way, so a chain or cycle of renames never clobbers
        staging = f".moving-{parts[old]['fingerprint']}.tar"
        move_part(out_dir, parts, old, staging)
        staged.append((staging, new))
    for staging, new in staged:
        move_part(out_dir, parts, staging, new)


def remove_shard(out_dir: Path, name: str) -> None:
    (out_dir / PARTS / f"{name}.json").unlink(missing_ok=True)
    (out_dir / name).unlink(missing_ok=True)


def drop_other_configs(out_dir: Path, config_hash: str) -> int:
    """Remove build.json, then every shard and part of another config. Returns how many shards went."""
    (out_dir / BUILD_JSON).unlink(missing_ok=True)
    removed = 0
    for path in sorted((out_dir / PARTS).glob("*.json")):
        try:
            stale = json.loads(path.read_text())["config_hash"] != config_hash
        except (OSError, json.JSONDecodeError, KeyError):
            stale = True
        if stale:
            remove_shard(out_dir, path.name[: -len(".json")])
            removed += 1
    for path in out_dir.glob("*.tar"):  # shards without a part: an interrupted unit or an old layout
        if not (out_dir / PARTS / f"{path.name}.json").is_file():
            path.unlink()
    remove_temporaries(out_dir)
    return removed


def remove_temporaries(out_dir: Path) -> None:
    """Temporary files of writes that a killed build never renamed into place."""
    for path in [*out_dir.glob(".*.tmp"), *(out_dir / PARTS).glob(".*.tmp")]:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the build


@dataclass
class BuildReport:
    """What a build did, for the CLI summary and for tests."""

    source: str
    out_dir: Path
    config_hash: str
    units_total: int = 0
    units_built: int = 0
    units_reused: int = 0
    shards_removed: int = 0
    samples: int = 0
    quarantined: list[tuple[str, str, str]] = field(default_factory=list)  # (split, id, reason)
    seconds: float = 0.0
    up_to_date: bool = False
    config_changed: bool = False


def check_root(adapter_class: type[Source], root: Path | None) -> None:
    if adapter_class.needs_root and root is None:
        raise SourceError(f"source {adapter_class.name} reads a dataset from disk: pass --root DIR")
    if root is not None and not Path(root).is_dir():
        raise SourceError(f"--root {root}: no such directory")


def build_source(
    source: str,
    out: Path | str,
    config: BuildConfig,
    root: Path | str | None = None,
    splits: Sequence[str] | None = None,
    workers: int = 0,
    ray_address: str | None = None,
    progress: bool = False,
) -> BuildReport:
    """Build (or bring up to date) `<out>/<source>/` from the raw dataset at `root`."""
    started = time.time()
    adapter_class = get_source(source)
    root = Path(root) if root is not None else None
    check_root(adapter_class, root)
    adapter = adapter_class(root, config)
    config_hash = config.stable_hash(adapter_class.name, adapter_class.version)
    out_dir = Path(out) / source
    splits = list(splits or adapter_class.splits)
    units = [
        unit
        for split in splits
        for unit in plan_units(list_items(adapter, split), split, config_hash, config.samples_per_unit)
    ]
    report = BuildReport(source, out_dir, config_hash, units_total=len(units))
    (out_dir / PARTS).mkdir(parents=True, exist_ok=True)
    previous = _previous_hash(out_dir)
    report.config_changed = previous is not None and previous != config_hash
    report.shards_removed = drop_other_configs(out_dir, config_hash) if report.config_changed else 0
    parts = load_parts(out_dir, config_hash)
    reuse_moved_units(out_dir, units, parts)
    todo = [unit for unit in units if parts.get(unit.shard, {}).get("fingerprint") != unit.fingerprint]
    planned = {unit.shard for unit in units}
    stale = [name for name, part in parts.items() if part["split"] in splits and name not in planned]
    report.units_reused = len(units) - len(todo)
    if not todo and not stale and previous == config_hash and _build_covers(out_dir, parts):
        report.up_to_date = True
        report.samples = sum(part["shard"] is not None and len(part["rows"]) for part in parts.values())
        return _finish(report, parts, started, write=False)
    (out_dir / BUILD_JSON).unlink(missing_ok=True)  # un-commit: readers must not see the change happening
    remove_temporaries(out_dir)
    for name in stale:
        remove_shard(out_dir, name)
        parts.pop(name)
    _run_units(todo, source, root, config, config_hash, out_dir, workers, ray_address, progress)
    report.units_built = len(todo)
    parts = load_parts(out_dir, config_hash)
    missing = [
        unit.shard for unit in units if parts.get(unit.shard, {}).get("fingerprint") != unit.fingerprint
    ]
    if missing:
        raise RuntimeError(f"{len(missing)} unit(s) did not finish, e.g. {missing[0]}; run the build again")
    report = _finish(report, parts, started, write=True, config=config, adapter_class=adapter_class)
    return report


def _previous_hash(out_dir: Path) -> str | None:
    """The config hash the directory holds: from build.json, else from any part on disk."""
    try:
        return read_build(out_dir)["config_hash"]
    except Exception:  # noqa: BLE001 - an unreadable or missing build.json just means "look at the parts"
        pass
    for path in sorted((out_dir / PARTS).glob("*.json")):
        try:
            return json.loads(path.read_text())["config_hash"]
        except (OSError, json.JSONDecodeError, KeyError):
            continue
    return None


def _build_covers(out_dir: Path, parts: dict[str, dict]) -> bool:
    """Whether build.json exists and lists exactly the shards the parts on disk hold."""
    try:
        listed = {shard["name"] for shard in read_build(out_dir)["shards"]}
    except Exception:  # noqa: BLE001
        return False
    return listed == {part["shard"] for part in parts.values() if part["shard"] is not None}


def _run_units(
    todo: list[Unit],
    source: str,
    root: Path | None,
    config: BuildConfig,
    config_hash: str,
    out_dir: Path,
    workers: int,
    ray_address: str | None,
    progress: bool,
) -> None:
    jobs = [
        UnitJob(source, str(root) if root else None, config, config_hash, str(out_dir), unit) for unit in todo
    ]
    bar = None
    if progress and jobs:
        from tqdm import tqdm

        bar = tqdm(
            total=sum(len(unit.items) for unit in todo),
            unit="clip",
            desc=f"build {source}",
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def on_result(result: UnitResult) -> None:
        if bar is not None:
            bar.update(result.samples + result.quarantined)
            bar.set_postfix(quarantined=result.quarantined, refresh=False)

    try:
        parallel.run(build_unit, jobs, on_result, workers=workers, ray_address=ray_address)
    finally:
        if bar is not None:
            bar.close()


def _finish(
    report: BuildReport, parts: dict[str, dict], started: float, write: bool, **build_info
) -> BuildReport:
    ordered = [parts[name] for name in sorted(parts)]
    rows = [row for part in ordered for row in part["rows"]]
    report.samples = sum(row["status"] == "ok" for row in rows)
    report.quarantined = [(r["split"], r["id"], r["reason"]) for r in rows if r["status"] == "quarantined"]
    report.seconds = time.time() - started
    if write:
        out_dir = report.out_dir
        write_manifest(out_dir / MANIFEST, rows)
        write_quarantine(out_dir, [row for row in rows if row["status"] == "quarantined"])
        write_build(out_dir, _build_json(report, ordered, rows, **build_info))
    return report


def _build_json(
    report: BuildReport, parts: list[dict], rows: list[dict], config: BuildConfig, adapter_class: type[Source]
) -> dict:
    from importlib.metadata import version

    ok = [row for row in rows if row["status"] == "ok"]
    per_split: dict[str, dict] = {}
    for row in rows:
        counts = per_split.setdefault(row["split"], {"samples": 0, "quarantined": 0, "tasks": Counter()})
        if row["status"] == "ok":
            counts["samples"] += 1
            counts["tasks"].update(tasks_of(row["mask"]))
        else:
            counts["quarantined"] += 1
    return {
        "source": report.source,
        "config": config.hashed_fields(adapter_class.name, adapter_class.version),
        "config_hash": report.config_hash,
        "tasks": list(adapter_class.tasks),
        "versions": {
            "pvit-pipeline": __version__,
            "adapter": adapter_class.version,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pyarrow": version("pyarrow"),
            "webdataset": version("webdataset"),
        },
        "counts": {
            "samples": len(ok),
            "quarantined": len(rows) - len(ok),
            "splits": {
                split: {**c, "tasks": dict(sorted(c["tasks"].items()))} for split, c in per_split.items()
            },
        },
        "shards": [
            {
                "name": p["shard"],
                "split": p["split"],
                "samples": sum(r["status"] == "ok" for r in p["rows"]),
                "bytes": p["bytes"],
                "sha256": p["sha256"],
            }
            for p in parts
            if p["shard"] is not None
        ],
        "timings": {
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(report.seconds, 3),
            "units_built": report.units_built,
            "units_reused": report.units_reused,
        },
    }

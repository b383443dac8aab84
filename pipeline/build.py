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

The merge writes `manifest.parquet`, `quarantine.jsonl` and finally `build.json`, which records, with
the config, the label spaces (`segm_space`, `box_space`) the parts saw in their samples' meta.json.
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
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline import __version__, parallel
from pipeline.config import LABEL_SPACES, BuildConfig
from pipeline.fileio import atomic_write_bytes, first_line
from pipeline.geometry import (
    FrameGeometry,
    crop_boxes,
    frame_geometry,
    pad_box_slots,
    resize_frames,
    resize_map,
)
from pipeline.manifest import (
    BUILD_JSON,
    MANIFEST,
    QUARANTINE,
    manifest_row,
    read_build,
    write_build,
    write_manifest,
    write_quarantine,
)
from pipeline.schema import (
    DENSE_MEMBERS,
    LABEL_MEMBERS,
    MEMBER_SPECS,
    SampleError,
    mask_of,
    sample_key,
    tasks_of,
    validate_sample,
)
from pipeline.shards import encode_members, file_sha256, write_shard
from pipeline.sources import Item, Quarantine, Sample, Source, SourceError, get_source

PARTS = ".parts"
REASON_LIMIT = 1000  # characters of a quarantine reason: one line, but never cut short of its cause


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
    """One split's items; `SourceError` when two of them would be written under one sample key."""
    items = with_train_views(list(adapter.items(split)), adapter)
    check_unique_keys(adapter.name, items)
    return items


def with_train_views(items: list[Item], adapter: Source) -> list[Item]:
    """Training items as `--train-views K` views each: K independent train-mode temporal samplings.

    View k of video `id` is item `id_t<k>` (K > 1; `id` itself when K = 1) in the view group `id`;
    the adapter draws its frames with `base.sampling_rng`, seeded by (seed, video, view). An
    adapter whose protocol has no temporal jitter (AVA's keyframe-centred clips) keeps one view.
    """
    views = adapter.config.train_views if adapter.temporal_jitter else 1
    out = []
    for item in items:
        if item.split != "train":
            out.append(item)
            continue
        for view in range(views):
            item_id = f"{item.id}_t{view}" if views > 1 else item.id
            out.append(replace(item, id=item_id, view=view, view_group=item.group))
    return out


def check_unique_keys(source: str, items: Sequence[Item]) -> None:
    """Refuse two items with one sample key: the tar would hold one member set for two manifest rows.

    Keys, not ids, are what must differ: ids that differ only in characters a key cannot hold would
    otherwise share a key and pass an id check.
    """
    first: dict[str, Item] = {}
    for item in items:
        key = sample_key(source, item.id)
        other = first.setdefault(key, item)
        if other is item:
            continue
        if other.id == item.id:
            raise SourceError(f"{source}: split {item.split} lists id {item.id!r} more than once")
        raise SourceError(
            f"{source}: ids {other.id!r} ({other.split}) and {item.id!r} ({item.split}) "
            f"both become sample key {key!r}"
        )


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


def fit_geometry(
    sample: Sample, config: BuildConfig
) -> tuple[np.ndarray, dict[str, np.ndarray], FrameGeometry]:
    """Frame the clip (`pipeline.geometry`): the kept window at short side `size`, dense maps on the
    label grid, boxes normalised to the stored frame and padded to the slots."""
    video = sample.video
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise SampleError(f"video: {video.dtype} {video.shape}, expected uint8 [T,H,W,3]")
    if video.shape[0] != config.frames:
        raise SampleError(f"video has {video.shape[0]} frames, expected {config.frames}")
    height, width = sample.orig_hw or video.shape[1:3]
    geometry = frame_geometry(height, width, config)
    labels = {
        name: _as_member_dtype(name, array) for name, array in sample.labels.items() if name in MEMBER_SPECS
    }
    unknown = sorted(set(sample.labels) - set(MEMBER_SPECS))
    if unknown:
        raise SampleError(f"unknown label member(s) {', '.join(unknown)}")
    for name in DENSE_MEMBERS:
        if name in labels:
            labels[name] = _fit_dense(name, labels[name], geometry, sample.dense_on_label_grid)
    if "boxes.npy" in labels or "boxes_cls.npy" in labels:
        if not {"boxes.npy", "boxes_cls.npy"} <= set(labels):
            raise SampleError("boxes.npy and boxes_cls.npy must come together")
        boxes, classes = labels["boxes.npy"], labels["boxes_cls.npy"]
        if boxes.ndim != 3 or boxes.shape[-1] != 4 or classes.shape != boxes.shape[:2]:
            raise SampleError(f"boxes {boxes.shape} / boxes_cls {classes.shape}, expected [T,N,4] / [T,N]")
        boxes, classes = crop_boxes(boxes, classes, geometry.window)
        labels["boxes.npy"], labels["boxes_cls.npy"] = pad_box_slots(boxes, classes, config.max_objects)
    return _fit_frames(video, geometry), labels, geometry


def _fit_frames(video: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """The stored frames: as they are when the decoder already framed them, else resized here."""
    if video.shape[1:3] == geometry.hw:
        return np.ascontiguousarray(video)
    if video.shape[1:3] != geometry.source_hw:
        (src_h, src_w), (out_h, out_w) = geometry.source_hw, geometry.hw
        raise SampleError(
            f"video frames are {video.shape[2]}x{video.shape[1]}, neither the source size "
            f"{src_w}x{src_h} nor the stored {out_w}x{out_h}"
        )
    return resize_frames(video, geometry)


def _fit_dense(name: str, array: np.ndarray, geometry: FrameGeometry, on_grid: bool) -> np.ndarray:
    if array.ndim < 3:
        raise SampleError(f"{name}: shape {array.shape}, expected [T,h,w,...]")
    if not on_grid:
        return resize_map(array, geometry)
    if array.shape[1:3] != geometry.label_hw:
        raise SampleError(f"{name}: {array.shape[1:3]} is not the label grid {geometry.label_hw}")
    return np.ascontiguousarray(array)


def finalize(
    sample: Sample, item: Item, source: str, config: BuildConfig, config_hash: str
) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """Turn an adapter's `Sample` into `(meta, video, labels)` that satisfy the schema."""
    video, labels, geometry = fit_geometry(sample, config)
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
        "orig_hw": list(geometry.source_hw),
        "hw": list(video.shape[1:3]),
        "crop_box": list(geometry.crop_box),  # the kept window, source pixels (top, left, height, width)
        "view": item.view,
        "view_group": item.group,
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
    """The quarantine reason: the error's first line, named by its type unless it is a reason already."""
    line = first_line(error, limit=REASON_LIMIT)
    if isinstance(error, (Quarantine, SampleError)) or not str(error).strip():
        return line
    return f"{type(error).__name__}: {line}"


def build_unit(job: UnitJob) -> UnitResult:
    """Load, finalise and write every item of one unit; quarantine the bad ones. Idempotent."""
    adapter = _adapter(job.source, job.root, job.config)
    out_dir = Path(job.out_dir)
    rows, members = [], []
    spaces: dict[str, set[str]] = {key: set() for key in LABEL_SPACES}
    for item in job.unit.items:
        key = sample_key(job.source, item.id)
        base = {
            "key": key,
            "source": job.source,
            "id": item.id,
            "split": item.split,
            "config_hash": job.config_hash,
            "fingerprint": item.fingerprint,
            "view": item.view,
            "view_group": item.group,
        }
        if item.problem:  # found bad while listing: quarantined without calling load()
            reason = _one_line(Quarantine(item.problem))
            rows.append(manifest_row(**base, status="quarantined", reason=reason, mask=0))
            continue
        try:
            meta, video, labels = finalize(adapter.load(item), item, job.source, job.config, job.config_hash)
        except Exception as error:  # any failure of one input quarantines that input only
            rows.append(manifest_row(**base, status="quarantined", reason=_one_line(error), mask=0))
            continue
        members.append((key, encode_members(meta, video, labels, job.config.codec, job.config.jpeg_quality)))
        for name, values in spaces.items():
            if meta.get(name) is not None:
                values.add(str(meta[name]))
        rows.append(
            manifest_row(
                **base, status="ok", mask=meta["mask"], label=meta["label"], frames=len(video), hw=meta["hw"]
            )
        )
    part: dict[str, Any] = {
        "fingerprint": job.unit.fingerprint,
        "config_hash": job.config_hash,
        "split": job.unit.split,
        "shard": None,
        "sha256": None,
        "bytes": 0,
        "label_spaces": {name: sorted(values) for name, values in spaces.items()},  # what its samples name
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
    atomic_write_bytes(out_dir / PARTS / f"{job.unit.shard}.json", json.dumps(part).encode())
    return UnitResult(job.unit.shard, len(members), len(rows) - len(members), part["bytes"])


# ----------------------------------------------------------------------------- reconciling with disk


def load_parts(out_dir: Path, config_hash: str, verify: bool = False) -> dict[str, dict]:
    """Finished parts of this config by shard name; a part whose shard is gone or changed is ignored.

    "Changed" is a different size; with `verify`, also a different sha256 (reads every shard).
    """
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
            not shard_path.is_file()
            or shard_path.stat().st_size != part["bytes"]
            or (verify and file_sha256(shard_path) != part["sha256"])
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
    atomic_write_bytes(out_dir / PARTS / f"{new}.json", json.dumps(part).encode())
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


def remove_temporaries(out_dir: Path) -> int:
    """Temporary files of writes that a killed build (or a dead Ray worker) never renamed into place."""
    stray = [*out_dir.glob(".*.tmp"), *(out_dir / PARTS).glob(".*.tmp")]
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
    verify: bool = False,
    ray_timeout: float = parallel.CONNECT_TIMEOUT,
) -> BuildReport:
    """Build (or bring up to date) `<out>/<source>/` from the raw dataset at `root`.

    `verify` re-hashes the shards already on disk, so one whose bytes changed at the same size is
    rebuilt too (without it, a shard is trusted when its size matches).
    """
    started = time.time()
    adapter_class = get_source(source)
    # Options first (before any work): an unknown or bad one is a one-line SourceError, and the
    # hash below sees only declared options, normalised, defaults left out.
    config = replace(config, options=adapter_class.resolve_options(config.options))
    root = Path(root) if root is not None else None
    check_root(adapter_class, root)
    adapter = adapter_class(root, config)
    config_hash = config.stable_hash(adapter_class.name, adapter_class.version)
    out_dir = Path(out) / source
    requested = list(splits or [])
    splits = requested or list(adapter_class.splits)
    check_splits(adapter_class, splits)
    prepare_out(out_dir)
    items = {split: list_items(adapter, split) for split in splits}
    check_found_inputs(source, root, items, requested)
    check_unique_keys(source, [item for split_items in items.values() for item in split_items])
    units = [
        unit
        for split in splits
        for unit in plan_units(items[split], split, config_hash, config.samples_per_unit)
    ]
    report = BuildReport(source, out_dir, config_hash, units_total=len(units))
    remove_temporaries(out_dir)  # before deciding "up to date": a dead writer's file must not outlive it
    previous = _previous_hash(out_dir)
    report.config_changed = previous is not None and previous != config_hash
    report.shards_removed = drop_other_configs(out_dir, config_hash) if report.config_changed else 0
    parts = load_parts(out_dir, config_hash, verify=verify)
    reuse_moved_units(out_dir, units, parts)
    todo = [unit for unit in units if parts.get(unit.shard, {}).get("fingerprint") != unit.fingerprint]
    planned = {unit.shard for unit in units}
    stale = [name for name, part in parts.items() if part["split"] in splits and name not in planned]
    report.units_reused = len(units) - len(todo)
    if not todo and not stale and previous == config_hash and _commit_intact(out_dir, parts):
        report.up_to_date = True
        report.samples = sum(part["shard"] is not None and len(part["rows"]) for part in parts.values())
        return _finish(report, parts, started, write=False)
    (out_dir / BUILD_JSON).unlink(missing_ok=True)  # un-commit: readers must not see the change happening
    for name in stale:
        remove_shard(out_dir, name)
        parts.pop(name)
    _run_units(todo, source, root, config, config_hash, out_dir, workers, ray_address, progress, ray_timeout)
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
    except Exception:  # an unreadable or missing build.json just means "look at the parts"
        pass
    for path in sorted((out_dir / PARTS).glob("*.json")):
        try:
            return json.loads(path.read_text())["config_hash"]
        except (OSError, json.JSONDecodeError, KeyError):
            continue
    return None


def _commit_intact(out_dir: Path, parts: dict[str, dict]) -> bool:
    """Whether everything build.json commits is there: the shards the parts hold (same names, sizes and
    hashes), a readable manifest with one row per part row, and the quarantine list.

    The shards' own bytes were checked by `load_parts` (size, and sha256 with `--verify`).
    """
    try:
        listed = {(s["name"], s["bytes"], s["sha256"]) for s in read_build(out_dir)["shards"]}
        rows = pq.read_metadata(out_dir / MANIFEST).num_rows
    except Exception:  # any unreadable or missing file means "repair"
        return False
    held = {(p["shard"], p["bytes"], p["sha256"]) for p in parts.values() if p["shard"] is not None}
    return (
        listed == held
        and rows == sum(len(part["rows"]) for part in parts.values())
        and (out_dir / QUARANTINE).is_file()
    )


def check_splits(adapter_class: type[Source], splits: Sequence[str]) -> None:
    unknown = [split for split in splits if split not in adapter_class.splits]
    if unknown:
        raise SourceError(
            f"source {adapter_class.name} has split(s) {', '.join(adapter_class.splits)}, not {unknown[0]!r}"
        )


def check_found_inputs(
    source: str, root: Path | None, items: dict[str, list[Item]], requested: Sequence[str]
) -> None:
    """A build that finds nothing to build is a mistake (a wrong header, a wrong --root), not success."""
    where = f" under {root}" if root is not None else ""
    for split in requested:
        if not items[split]:
            raise SourceError(
                f"{source}: no inputs found for split {split}{where} (check the annotation files)"
            )
    if not any(items.values()):
        raise SourceError(f"{source}: no inputs found for any split{where} (check the annotation files)")


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
    ray_timeout: float = parallel.CONNECT_TIMEOUT,
) -> None:
    if not todo:  # nothing to build: never pay Ray's start-up
        return
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
        parallel.run(
            build_unit, jobs, on_result, workers=workers, ray_address=ray_address, timeout=ray_timeout
        )
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


def label_spaces(source: str, parts: list[dict]) -> dict[str, str | None]:
    """`{"segm_space": ..., "box_space": ...}`: the one space the source's samples name, None if none.

    Samples carry their label spaces in meta.json; the trainer reads them from build.json, once per
    source, so two samples that name different spaces are an adapter bug, refused before the commit.
    """
    spaces: dict[str, str | None] = {}
    for name in LABEL_SPACES:
        named = sorted({space for part in parts for space in part["label_spaces"][name]})
        if len(named) > 1:
            raise SourceError(
                f"{source}: samples name {name} {named[0]!r} and {named[1]!r}; a source has one"
            )
        spaces[name] = named[0] if named else None
    return spaces


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
        **label_spaces(report.source, parts),
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

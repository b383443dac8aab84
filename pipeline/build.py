"""Running a build: plan it, build the missing units in parallel, commit (architecture.md §4).

`build_source` takes a `BuildRequest` through its four concepts:

- planning (`pipeline.plan`): every check before any work, then the source's items grouped into
  deterministic units, one per shard;
- the ledger (`pipeline.ledger`): the parts already on disk say which units are finished; an
  unchanged build does no work, an added raw input rebuilds only the unit it falls into, and a
  changed config hash un-commits the directory, then removes every shard of the old config;
- finishing each sample (`pipeline.finish`), inside `build_unit`, the Ray task that writes one
  shard and its part;
- the commit (`pipeline.manifest`): `manifest.parquet`, `quarantine.jsonl`, and last `build.json`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pipeline import parallel
from pipeline.config import LABEL_SPACES, BuildConfig
from pipeline.fileio import first_line
from pipeline.finish import finish_sample
from pipeline.ledger import (
    Part,
    drop_other_configs,
    is_done,
    label_spaces,
    load_parts,
    previous_hash,
    remove_shard,
    remove_temporaries,
    reuse_moved_units,
    write_part,
)
from pipeline.manifest import BuildRecord, commit, commit_matches, committed_hash, manifest_row, uncommit
from pipeline.plan import BuildPlan, BuildRequest, Unit, make_plan
from pipeline.schema import SampleError, sample_key
from pipeline.shards import Codecs, encode_members, write_shard_to
from pipeline.sources import Item, Quarantine, Source, get_source
from pipeline.storage import Store

__all__ = ["BuildReport", "BuildRequest", "build_source", "build_unit"]

REASON_LIMIT = 1000  # characters of a quarantine reason: one line, but never cut short of its cause


@dataclass
class BuildReport:
    """What a build did, for the CLI summary and for tests."""

    source: str
    out_dir: Path | str  # <out>/<source>: a local Path, or the URL of a remote build
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


def build_source(request: BuildRequest) -> BuildReport:
    """Build (or bring up to date) `<out>/<source>/` from the raw dataset at `root`."""
    started = time.time()
    plan = make_plan(request)
    shown = Path(plan.out.location) if plan.out.local else plan.out.location
    report = BuildReport(plan.source, shown, plan.config_hash, units_total=len(plan.units))
    remove_temporaries(plan.out)  # before deciding "up to date": a dead writer's file must not outlive it
    parts = _reconcile(plan, report)
    todo = [unit for unit in plan.units if not is_done(unit, parts)]
    planned = {unit.shard for unit in plan.units}
    stale = [name for name, part in parts.items() if part.split in plan.splits and name not in planned]
    report.units_reused = len(plan.units) - len(todo)
    if not todo and not stale and not report.config_changed and _committed(plan, parts):
        report.up_to_date = True
        return _summarise(report, parts, started)
    uncommit(plan.out)  # readers must not see the change happening
    for name in stale:
        remove_shard(plan.out, name)
        parts.pop(name)
    _run_units(plan, todo)
    report.units_built = len(todo)
    parts = _finished_parts(plan)
    _summarise(report, parts, started)
    commit(plan.out, _record(plan, report, parts), _rows(parts))
    return report


def _reconcile(plan: BuildPlan, report: BuildReport) -> dict[str, Part]:
    """The finished parts of this config, after dropping another config's shards and renaming moved units."""
    previous = previous_hash(plan.out, committed_hash(plan.out))
    report.config_changed = previous is not None and previous != plan.config_hash
    report.shards_removed = drop_other_configs(plan.out, plan.config_hash) if report.config_changed else 0
    parts = load_parts(plan.out, plan.config_hash, verify=plan.request.verify)
    reuse_moved_units(plan.out, plan.units, parts)
    return parts


def _committed(plan: BuildPlan, parts: dict[str, Part]) -> bool:
    """Whether build.json commits this config and everything it commits is there: the shards the parts
    hold (same names, sizes and hashes), the manifest with one row per part row, and the quarantine list.

    The shards' own bytes were checked by `load_parts` (size, and sha256 with `--verify`).
    """
    held = {(p.shard, p.bytes, p.sha256) for p in parts.values() if p.shard is not None}
    rows = sum(len(part.rows) for part in parts.values())
    return committed_hash(plan.out) == plan.config_hash and commit_matches(plan.out, held, rows)


def _finished_parts(plan: BuildPlan) -> dict[str, Part]:
    """Every unit's part after the run; `RuntimeError` when one is missing (a task that never finished)."""
    parts = load_parts(plan.out, plan.config_hash)
    missing = [unit.shard for unit in plan.units if not is_done(unit, parts)]
    if missing:
        raise RuntimeError(f"{len(missing)} unit(s) did not finish, e.g. {missing[0]}; run the build again")
    return parts


def _rows(parts: dict[str, Part]) -> list[dict]:
    """The manifest rows of every part, in shard-name order."""
    return [row for name in sorted(parts) for row in parts[name].rows]


def _summarise(report: BuildReport, parts: dict[str, Part], started: float) -> BuildReport:
    rows = _rows(parts)
    report.samples = sum(row["status"] == "ok" for row in rows)
    report.quarantined = [(r["split"], r["id"], r["reason"]) for r in rows if r["status"] == "quarantined"]
    report.seconds = time.time() - started
    return report


def _record(plan: BuildPlan, report: BuildReport, parts: dict[str, Part]) -> BuildRecord:
    adapter = type(plan.adapter)
    ordered = [parts[name] for name in sorted(parts)]
    return BuildRecord(
        source=plan.source,
        config=plan.config.hashed_fields(adapter.name, adapter.version),
        config_hash=plan.config_hash,
        tasks=tuple(adapter.tasks),
        adapter_version=adapter.version,
        label_spaces=label_spaces(plan.source, ordered),
        shards=[record for part in ordered if (record := part.shard_record()) is not None],
        timings={
            "seconds": round(report.seconds, 3),
            "units_built": report.units_built,
            "units_reused": report.units_reused,
        },
    )


# ----------------------------------------------------------------------------- running the units


def _run_units(plan: BuildPlan, todo: list[Unit]) -> None:
    """Build the `todo` units, serially or on Ray, with a progress bar when the request asks for one."""
    if not todo:  # nothing to build: never pay Ray's start-up
        return
    request = plan.request
    root = str(plan.adapter.root) if plan.adapter.root else None
    jobs = [UnitJob(plan.source, root, plan.config, plan.config_hash, plan.out, unit) for unit in todo]
    workers = parallel.Workers(request.workers, request.ray_address, request.ray_timeout)
    with _progress(plan.source, sum(len(unit.items) for unit in todo), request.progress) as advance:
        parallel.run(build_unit, jobs, advance, workers)


@contextlib.contextmanager
def _progress(source: str, clips: int, shown: bool) -> Iterator[Callable[[UnitResult], None]]:
    """A callback for each finished unit: a tqdm bar on stderr counting clips (nothing unless `shown`)."""
    if not shown:
        yield lambda result: None
        return
    from tqdm import tqdm

    bar = tqdm(total=clips, unit="clip", desc=f"build {source}", dynamic_ncols=True, file=sys.stderr)

    def advance(result: UnitResult) -> None:
        bar.update(result.samples + result.quarantined)
        bar.set_postfix(quarantined=result.quarantined, refresh=False)

    try:
        yield advance
    finally:
        bar.close()


# ----------------------------------------------------------------------------- one unit (a Ray task)


@dataclass(frozen=True)
class UnitJob:
    """What a worker needs to build one unit: small and picklable."""

    source: str
    root: str | None
    config: BuildConfig
    config_hash: str
    out: Store  # where the shard goes (a remote store makes its filesystem in the worker process)
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


def quarantine_reason(error: BaseException) -> str:
    """The one-line reason an input is quarantined: the error's first line, named by its type unless
    it is a reason already (`Quarantine`, `SampleError`)."""
    line = first_line(error, limit=REASON_LIMIT)
    if isinstance(error, (Quarantine, SampleError)) or not str(error).strip():
        return line
    return f"{type(error).__name__}: {line}"


def build_unit(job: UnitJob) -> UnitResult:
    """Load, finish and write every item of one unit; quarantine the bad ones. Idempotent."""
    adapter = _adapter(job.source, job.root, job.config)
    rows, members = [], []
    spaces: dict[str, set[str]] = {name: set() for name in LABEL_SPACES}
    for item in job.unit.items:
        base = _row_fields(job, item)
        try:
            if item.problem:  # found bad while listing: quarantined without calling load()
                raise Quarantine(item.problem)
            meta, video, labels = finish_sample(
                adapter.load(item), item, job.source, job.config, job.config_hash
            )
        except Exception as error:  # any failure of one input quarantines that input only
            rows.append(manifest_row(**base, status="quarantined", reason=quarantine_reason(error), mask=0))
            continue
        members.append((base["key"], encode_members(meta, video, labels, _codecs(job.config))))
        for name, values in spaces.items():
            if meta.get(name) is not None:
                values.add(str(meta[name]))
        row = manifest_row(
            **base, status="ok", mask=meta["mask"], label=meta["label"], frames=len(video), hw=meta["hw"]
        )
        rows.append(row)
    part = _write_unit(job, rows, members, spaces)
    return UnitResult(job.unit.shard, len(members), len(rows) - len(members), part.bytes)


def _codecs(config: BuildConfig) -> Codecs:
    return Codecs(config.codec, config.jpeg_quality, config.label_codec)


def _row_fields(job: UnitJob, item: Item) -> dict[str, Any]:
    """The manifest fields of an item that do not depend on how its build went."""
    return {
        "key": sample_key(job.source, item.id),
        "source": job.source,
        "id": item.id,
        "split": item.split,
        "config_hash": job.config_hash,
        "fingerprint": item.fingerprint,
        "view": item.view,
        "view_group": item.group,
    }


def _write_unit(
    job: UnitJob, rows: list[dict], members: list[tuple[str, dict[str, bytes]]], spaces: dict[str, set[str]]
) -> Part:
    """Write the unit's shard (when any sample was built), then its part: the unit is finished.

    On a URL the shard is written locally and uploaded whole, then the part: a part is never there
    without its shard, so a build killed between the two rebuilds only that unit.
    """
    part = Part(
        fingerprint=job.unit.fingerprint,
        config_hash=job.config_hash,
        split=job.unit.split,
        shard=None,
        sha256=None,
        bytes=0,
        label_spaces={name: sorted(values) for name, values in spaces.items()},  # what its samples name
        rows=rows,
    )
    if members:
        written = write_shard_to(job.out, job.unit.shard, members)
        entries = {entry.key: entry for entry in written.entries}
        for row in rows:
            if row["status"] == "ok":
                row.update(
                    shard=job.unit.shard, offset=entries[row["key"]].offset, size=entries[row["key"]].size
                )
        part.shard, part.sha256, part.bytes = job.unit.shard, written.sha256, written.bytes
    write_part(job.out, part, job.unit.shard)
    return part

"""Planning a build: check the request before any work, list the inputs, group them into units.

A build lists the source's items and groups them into deterministic work units (one unit = one
shard). A unit's fingerprint (config hash + its items' raw-input fingerprints) is what the ledger
(`pipeline.ledger`) compares with the parts already on disk. Every user mistake (unknown source or
option, missing `--root`, unknown split, an `--out` that cannot be written, a split with no inputs,
two inputs under one sample key) is found here, as a one-line `SourceError`, before anything is built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.config import BuildConfig
from pipeline.ledger import prepare_out
from pipeline.parallel import CONNECT_TIMEOUT
from pipeline.schema import sample_key
from pipeline.sources import Item, Source, SourceError, get_source
from pipeline.storage import StorageError, Store, open_store


@dataclass(frozen=True)
class BuildRequest:
    """One `pvit-pipeline build`: what to build, from where, to where, and how to run it."""

    source: str  # the adapter's registry name (`pvit-pipeline sources`)
    out: Path | str  # the shards go to <out>/<source>/: a local directory or a URL (s3://bucket/prefix)
    config: BuildConfig
    root: Path | str | None = None  # the raw dataset; None for a source that reads none (procedural)
    splits: Sequence[str] = ()  # the splits to build; empty = every split of the source
    workers: int = 0  # local Ray workers; 0 = serially, in this process
    ray_address: str | None = None  # join a running Ray cluster ("auto", host:port)
    ray_timeout: float = CONNECT_TIMEOUT  # seconds to wait for ray_address to answer
    progress: bool = False  # a progress bar on stderr
    verify: bool = False  # re-hash the shards on disk, so one whose bytes changed at its size is rebuilt
    storage_options: Mapping[str, Any] = field(default_factory=dict)  # fsspec options of a URL --out


@dataclass(frozen=True)
class Unit:
    """One work unit: the items that go into one shard."""

    split: str
    shard: str  # file name, `<split>-NNNNNN.tar`
    fingerprint: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class BuildPlan:
    """A checked request: the adapter (options resolved), the config hash, and every unit to hold."""

    request: BuildRequest
    adapter: Source
    config_hash: str
    out: Store  # <out>/<source>: a local directory or a prefix of an object store
    splits: tuple[str, ...]
    units: tuple[Unit, ...]

    @property
    def source(self) -> str:
        return self.request.source

    @property
    def config(self) -> BuildConfig:
        """The request's config with the adapter's options checked and normalised: what the hash covers."""
        return self.adapter.config


def make_plan(request: BuildRequest) -> BuildPlan:
    """Check the request in the order a user fixes it, then list and group the inputs."""
    adapter_class = get_source(request.source)
    # Options first: an unknown or bad one is a one-line SourceError, and the hash sees declared ones only.
    config = replace(request.config, options=adapter_class.resolve_options(request.config.options))
    root = Path(request.root) if request.root is not None else None
    adapter_class.check_root(root)
    adapter = adapter_class(root, config)
    adapter.check_sampling()
    config_hash = config.stable_hash(adapter_class.name, adapter_class.version)
    splits = tuple(request.splits) or adapter_class.splits
    check_splits(adapter_class, splits)
    try:
        out = open_store(request.out, request.storage_options).child(request.source)
    except StorageError as error:
        raise SourceError(f"--out: {error}") from None
    prepare_out(out)
    units = plan_source(adapter, request.source, splits, tuple(request.splits), config_hash)
    return BuildPlan(request, adapter, config_hash, out, splits, units)


def plan_source(
    adapter: Source, source: str, splits: Sequence[str], requested: Sequence[str], config_hash: str
) -> tuple[Unit, ...]:
    """Every unit of the `splits`; `SourceError` when a `requested` split (or all) finds no inputs."""
    items = {split: list_items(adapter, split) for split in splits}
    check_found_inputs(source, adapter.root, items, requested)
    check_unique_keys(source, [item for split_items in items.values() for item in split_items])
    per_shard = adapter.config.samples_per_shard
    return tuple(unit for split in splits for unit in plan_units(items[split], split, config_hash, per_shard))


def unit_boundary(item_id: str, samples_per_shard: int) -> bool:
    """Whether `item_id` starts a new unit: content-defined, so inserting an item moves no boundary.

    Fixed-size chunks would shift every later unit when one item is added in the middle; a
    boundary decided by the item's own id changes only the unit the new item lands in.
    """
    digest = int.from_bytes(hashlib.sha1(item_id.encode()).digest()[:8], "big")
    return digest % samples_per_shard == 0


def plan_units(items: list[Item], split: str, config_hash: str, samples_per_shard: int) -> list[Unit]:
    """Group one split's items (sorted by id) into units and name their shards in order."""
    groups: list[list[Item]] = []
    for item in sorted(items, key=lambda item: item.id):
        if not groups or unit_boundary(item.id, samples_per_shard):
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
    adapter whose rule has no random draw (AVA's keyframe-centred clips) refuses K > 1 (`check_sampling`).
    """
    views = adapter.config.train_views if "train_views" in adapter.sampling_rule().reads else 1
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

"""Opening built sources for training, and refusing, before any step runs, shards that disagree.

A source is `<shards>/<name>/` with `build.json` (the commit marker of a finished build) and
`manifest.parquet`, in a local directory or under a URL (`s3://bucket/prefix`: `pipeline.storage`).
Everything the trainer knows about a source (its geometry and label spaces, shard list, per-sample byte
spans, masks and labels) comes from those two files, never from reading samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import BuildConfig
from pipeline.manifest import BUILD_JSON, BuildDirError, BuildInfo, read_build, read_manifest
from pipeline.schema import TASK_BIT
from pipeline.shardcache import CacheError
from pipeline.shards import file_sha256, span_problem
from pipeline.spans import ReadSettings, SpanReader
from pipeline.storage import Store, open_store
from train.plan import view_matrix


class ShardMismatch(ValueError):
    """Shards disagree with each other or with the model; the message says which and how to fix it."""


@dataclass
class SplitTable:
    """The `ok` samples of one split of one source, as parallel arrays (cheap to pickle into workers)."""

    shard: np.ndarray  # int32 index into SourceData.shards
    offset: np.ndarray  # int64 byte offset of the sample's first tar header
    size: np.ndarray  # int64 byte span of the sample in its tar
    mask: np.ndarray  # int64 availability mask (bit i = pipeline.schema.TASKS[i])
    label: np.ndarray  # int64 action label, -1 where absent
    group: np.ndarray  # object: the view group (video) of each sample
    view: np.ndarray  # int64: its temporal view within the group
    key: np.ndarray  # object: the sample's key, which the tar member names at `offset` must carry

    def __len__(self) -> int:
        return len(self.shard)

    def view_matrix(self) -> np.ndarray:
        """`[videos, K]` rows of each video's views (`train.plan.view_matrix`)."""
        return view_matrix(self.group, self.view)


@dataclass
class SourceData:
    name: str
    directory: Store  # <shards>/<name>: a local directory or a prefix of an object store
    config_hash: str
    config: BuildConfig  # build.json "config": frames, size, label_stride, codec, max_objects, ...
    tasks: tuple[str, ...]  # the tasks the adapter provides
    shards: list[str]  # tar paths (or URLs), in build.json order
    splits: dict[str, SplitTable]
    segm_space: str | None  # build.json segm_space: its samples' segm label space (None: no segm)
    box_space: str | None  # build.json box_space (None: no boxes)
    build_shards: list[dict] = field(default_factory=list)  # build.json "shards": name, bytes, sha256, ...
    settings: ReadSettings = field(default_factory=ReadSettings)  # storage options and the local shard cache

    def reader(self) -> SpanReader:
        """A reader of this source's sample spans for the calling process (handles, a remote filesystem)."""
        return SpanReader(self.directory, self.build_shards, self.settings.cache())

    def split(self, name: str) -> SplitTable:
        if name not in self.splits or len(self.splits[name]) == 0:
            have = ", ".join(sorted(self.splits)) or "none"
            raise ShardMismatch(f"source {self.name}: no '{name}' samples (splits built: {have})")
        return self.splits[name]


def open_source(shards_dir: str | Path, name: str, settings: ReadSettings | None = None) -> SourceData:
    """Read build.json and the manifest of `<shards_dir>/<name>` and check they agree with each other.

    `shards_dir` is a directory or a URL; `settings` hold its storage options and the local shard cache.
    """
    settings = settings or ReadSettings()
    directory = open_store(shards_dir, settings.storage_options).child(name)
    try:
        build = read_build(directory)
        table = read_manifest(directory).to_pydict()
    except BuildDirError as error:
        raise ShardMismatch(f"source {name}: {error}") from None
    try:
        info = BuildInfo.from_json(build)
    except ValueError as error:  # an older or hand-edited build.json: one line, saying to rebuild
        raise ShardMismatch(f"source {name}: {directory.where(BUILD_JSON)}: {error}") from None
    shards = [directory.where(shard["name"]) for shard in info.shards]
    _check_shards(name, info, table, directory)
    index = {shard["name"]: i for i, shard in enumerate(info.shards)}
    ok = [i for i, status in enumerate(table["status"]) if status == "ok"]
    splits: dict[str, SplitTable] = {}
    for split in sorted({table["split"][i] for i in ok}):
        rows = [i for i in ok if table["split"][i] == split]
        splits[split] = SplitTable(
            shard=np.array([index[table["shard"][i]] for i in rows], dtype=np.int32),
            offset=np.array([table["offset"][i] for i in rows], dtype=np.int64),
            size=np.array([table["size"][i] for i in rows], dtype=np.int64),
            mask=np.array([table["mask"][i] for i in rows], dtype=np.int64),
            label=np.array(
                [-1 if table["label"][i] is None else table["label"][i] for i in rows], dtype=np.int64
            ),
            group=np.array([table["view_group"][i] for i in rows], dtype=object),
            view=np.array([table["view"][i] for i in rows], dtype=np.int64),
            key=np.array([table["key"][i] for i in rows], dtype=object),
        )
    return SourceData(
        name=name,
        directory=directory,
        config_hash=info.config_hash,
        config=info.config,
        tasks=info.tasks,
        shards=shards,
        splits=splits,
        segm_space=info.segm_space,
        box_space=info.box_space,
        build_shards=list(info.shards),
        settings=settings,
    )


def _check_shards(name: str, build: BuildInfo, table: dict, directory: Store) -> None:
    want = build.config_hash
    hashes = {h for h, status in zip(table["config_hash"], table["status"], strict=True) if status == "ok"}
    if hashes - {want}:
        raise ShardMismatch(
            f"source {name}: manifest rows carry config hash(es) {', '.join(sorted(hashes - {want}))} but "
            f"build.json says {want}: shards from different builds are mixed; rebuild the source"
        )
    listed = {shard["name"]: shard["samples"] for shard in build.shards}
    counted: dict[str, int] = {}
    for shard, status in zip(table["shard"], table["status"], strict=True):
        if status == "ok":
            counted[shard] = counted.get(shard, 0) + 1
    for shard_name, samples in listed.items():
        if counted.get(shard_name, 0) != samples:
            raise ShardMismatch(
                f"source {name}: {shard_name} has {samples} samples in build.json but "
                f"{counted.get(shard_name, 0)} in manifest.parquet; rebuild the source"
            )
    unlisted = sorted(set(counted) - set(listed))
    if unlisted:
        raise ShardMismatch(
            f"source {name}: manifest names shard(s) not in build.json: {', '.join(unlisted)}"
        )
    _check_spans(name, build, table)
    sizes = directory.listing()  # one request (a directory scan) for every shard's size
    missing = [directory.where(shard["name"]) for shard in build.shards if shard["name"] not in sizes]
    if missing:
        raise ShardMismatch(f"source {name}: shard file(s) missing: {', '.join(missing[:3])}")
    for shard in build.shards:
        size = sizes[shard["name"]]
        if size != shard["bytes"]:
            raise ShardMismatch(
                f"source {name}: {directory.where(shard['name'])} is {size} bytes but build.json says "
                f"{shard['bytes']} (truncated, or a tar from another build); rebuild the source"
            )


def _check_spans(name: str, build: BuildInfo, table: dict) -> None:
    """Every ok row's span lies inside its tar and no two rows share one (nothing read twice, or never).

    Cheap (no tar is read): a manifest edited or torn after the build fails here in one line, before a
    worker reads a 1e12-byte span or trains one sample twice; the key at each offset is checked on read.
    """
    tar_bytes = {shard["name"]: int(shard["bytes"]) for shard in build.shards}
    seen: dict[tuple[str, int], str] = {}
    for key, shard, offset, size, status in zip(table["key"], table["shard"], table["offset"], table["size"],
                                                 table["status"], strict=True):  # fmt: skip
        if status != "ok":
            continue
        problem = span_problem(offset, size, tar_bytes.get(shard, 0))
        if problem:
            raise ShardMismatch(
                f"source {name}: manifest row {key} in {shard}: {problem}; rebuild the source"
            )
        other = seen.setdefault((shard, offset), key)
        if other != key:
            raise ShardMismatch(
                f"source {name}: manifest rows {other} and {key} both point at byte {offset} of {shard}; "
                "rebuild the source"
            )


def verify_shards(sources: list[SourceData], mode: str, limit: int) -> str | None:
    """sha256 every shard against build.json (`mode` on, or auto with all shards under `limit` bytes).

    Sizes were checked when each source was opened; this catches same-size changes (flipped bytes, a tar
    of another build with the same length). Returns a note when auto skipped hashing, else None.
    """
    if mode == "off":
        return None
    listed = [(s, path, entry) for s in sources for path, entry in zip(s.shards, s.build_shards, strict=True)]
    total = sum(entry["bytes"] for _, _, entry in listed)
    if mode == "auto" and total > limit:
        return (
            f"note: shards not hashed before training ({total / 1e9:.1f} GB > {limit / 1e9:.1f} GB); "
            f"--verify-shards on hashes them, `pvit-pipeline verify DIR` checks one source"
        )
    for source, path, entry in listed:
        if shard_sha256(source, entry) != entry["sha256"]:
            raise ShardMismatch(
                f"source {source.name}: {path} differs from build.json's sha256 (its bytes changed); "
                f"run `pvit-pipeline verify {source.directory}` and rebuild the source"
            )
    return None


def shard_sha256(source: SourceData, entry: dict) -> str:
    """The sha256 of a shard's bytes: a local file hashed in place, a remote one streamed, or, with a shard
    cache, filled into the cache (which checks it: the download then serves training too)."""
    if source.directory.local:
        return file_sha256(Path(source.directory.where(entry["name"])))
    cache = source.settings.cache()
    if cache is None:
        return source.directory.sha256(entry["name"])
    try:
        cache.open(source.directory, entry).close()
    except CacheError:
        return "differs"
    return entry["sha256"]


def check_compatible(
    sources: list[SourceData], label_stride: int, labelled: list[SourceData] | None = None
) -> dict:
    """Refuse sources that disagree on clip geometry or label spaces, or with the model's label stride.

    Stored sizes and aspect ratios may differ (every clip is cropped to the model's square before
    collation); frame counts and the label stride may not. Returns the shared geometry
    `{"frames", "label_stride", "max_objects", "segm_space", "box_space"}`. Label spaces are compared among
    `labelled` (default all): the sources whose segm/box labels the synthetic heads read.
    """
    geometry = {}
    for key in ("frames", "label_stride"):
        values = {source.name: getattr(source.config, key) for source in sources}
        if len(set(values.values())) > 1:
            listing = ", ".join(f"{n}={v}" for n, v in values.items())
            flag = "--" + key.replace("_", "-")
            raise ShardMismatch(f"sources disagree on {key} ({listing}): rebuild them with the same {flag}")
        geometry[key] = next(iter(values.values()))
    if geometry["label_stride"] != label_stride:
        raise ShardMismatch(
            f"shards store dense labels at stride {geometry['label_stride']} but the model's dense heads "
            f"predict at stride {label_stride}: rebuild with --label-stride {label_stride}"
        )
    geometry["max_objects"] = max(source.config.max_objects for source in sources)
    for attr, task in (("segm_space", "segm"), ("box_space", "boxes")):
        read = sources if labelled is None else labelled
        spaces = {s.name: getattr(s, attr) for s in read if task in s.tasks and getattr(s, attr)}
        if len(set(spaces.values())) > 1:
            listing = ", ".join(f"{n}={v}" for n, v in spaces.items())
            raise ShardMismatch(
                f"sources disagree on the {task} label space ({listing}): map them to one space"
            )
        geometry[attr] = next(iter(spaces.values()), None)
    return geometry


def num_action_classes(sources: list[SourceData], configured: int) -> int:
    """`configured` if set (and no label exceeds it), else the largest label of the real sources + 1."""
    top = max((int(t.label.max()) for s in sources for t in s.splits.values() if len(t)), default=-1)
    if configured:
        if top >= configured:
            raise ShardMismatch(f"a real sample has action label {top} but --num-classes is {configured}")
        return configured
    if top < 0:
        raise ShardMismatch("the real sources carry no action labels: nothing to classify")
    return top + 1


def has_task(mask: np.ndarray, task: str) -> np.ndarray:
    return (mask >> TASK_BIT[task]) & 1 == 1

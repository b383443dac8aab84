"""The streaming loader: sample spans read from the tars, decoded, augmented and collated in workers.

Each step takes one batch from every stream (real, synthetic). Which samples form that batch is a pure
function of (seed, step, rank) through `train.plan`, so workers need no shared state, resuming is starting at
a step, and batches are bit-identical whatever the worker count. Each sample is read straight from its byte
span (manifest offset/size) by `pipeline.shards.read_sample_span`, which checks that the span lies inside its
tar and holds the manifest's key; its meta.json must then carry the manifest's label and mask.

A worker yields uint8 clips and labels at their stored dtypes; the float conversion and normalisation happen
on the training device (`to_device`), which keeps inter-process traffic 4x smaller.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pvit
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.io import ImageReadMode, decode_jpeg

from pipeline.fileio import first_line
from pipeline.reader import decode_sample
from pipeline.schema import REAL_TASKS, SYNTHETIC_TASKS, TASK_BIT
from pipeline.shards import ZSTD_MAGIC, decode_video
from pipeline.spans import ShardSpan, SpanReader, SpanRequest
from train.augment import Protocol, eval_view, full_frame_view, train_view
from train.plan import StreamPlan, _rng
from train.realaug import rand_augment_sample
from train.sources import ShardMismatch, SourceData, SplitTable
from train.tasks import TASK_LABEL_KEYS, TRAIN_TASKS, label_key, mask_width, target_keys

ROLE_TASKS = {"real": REAL_TASKS, "synthetic": SYNTHETIC_TASKS}


def role_mask(role: str, extra: tuple[str, ...] = ()) -> int:
    """Bits a stream may use: the real stream its real-task labels, the synthetic stream its scene labels,
    plus `extra` (--real-tasks: the real stream's boxes, which the loss scores for `real_boxes` only)."""
    return sum(1 << TASK_BIT[t] for t in {*ROLE_TASKS[role], *extra})


def span_of(table: SplitTable, row: int) -> ShardSpan:
    """Where the sample of `table`'s row `row` is: its shard, byte span and key."""
    return ShardSpan(int(table.shard[row]), SpanRequest(int(table.offset[row]), int(table.size[row]),
                                                        str(table.key[row])))  # fmt: skip


class SpanReaders:
    """This process's span readers, one per source, made on first use (a forked worker starts afresh: file
    handles and remote filesystems are per process), and the spans of a batch read ahead in one go."""

    def __init__(self) -> None:
        self.readers: dict[str, SpanReader] = {}
        self.ready: dict[tuple[str, ShardSpan], dict[str, memoryview]] = {}
        self.pid = os.getpid()

    def of(self, source: SourceData) -> SpanReader:
        if self.pid != os.getpid():
            self.readers, self.ready, self.pid = {}, {}, os.getpid()
        if source.name not in self.readers:
            self.readers[source.name] = source.reader()
        return self.readers[source.name]

    def prefetch(self, wanted: list[tuple[SourceData, ShardSpan]]) -> None:
        """Read the spans of remote sources without a cache together: concurrent ranged requests, adjacent
        spans coalesced. Only an optimisation: a failure here is met again, and named, by `read`."""
        by_source: dict[str, list[ShardSpan]] = {}
        for source, span in wanted:
            if self.of(source).ranged:
                by_source.setdefault(source.name, []).append(span)
        for name, spans in by_source.items():
            try:
                got = self.readers[name].read_many(spans)
            except Exception:  # noqa: BLE001 - each span is read (and its problem named) again by `read`
                continue
            self.ready.update({(name, span): members for span, members in zip(spans, got, strict=True)})

    def read(self, source: SourceData, span: ShardSpan) -> dict[str, memoryview]:
        members = self.ready.pop((source.name, span), None)
        return members if members is not None else self.of(source).read(span)

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        self.readers, self.ready = {}, {}


def read_span(
    source: SourceData, table: SplitTable, row: int, readers: SpanReaders | None = None
) -> dict[str, memoryview]:
    """The members of the sample of `table`'s row `row` (`{"meta.json": b"..."}`), read at its manifest span.

    The span must lie inside its tar and the tar's member names there must carry the row's key (the manifest
    said which sample is at that offset); a span that is short, out of bounds, of another sample, with a
    broken tar header or a member that cannot be what its name says is a `ShardMismatch` naming the shard,
    the sample and the byte offset, so training stops with one line. A remote shard is read by a ranged
    request (or from the local shard cache); `readers` keeps handles and filesystems across samples.
    """
    span = span_of(table, row)
    path, offset, key = source.shards[span.shard], span.span.offset, span.span.key
    own = readers if readers is not None else SpanReaders()
    try:
        members = own.read(source, span)
        for name, value in members.items():  # cheap header checks; payload bytes are sha256's job
            if name.endswith(".npy") and value[:6] != b"\x93NUMPY" and bytes(value[:4]) != ZSTD_MAGIC:
                raise ValueError(f"{name} is not an .npy payload")
            if name == "meta.json":
                json.loads(bytes(value))
        return members
    except Exception as error:  # noqa: BLE001 - any parse failure of the span is the same finding
        raise ShardMismatch(
            f"{path}: sample {key} at byte {offset} cannot be read ({first_line(error)}); "
            f"run `pvit-pipeline verify` on its source and rebuild it"
        ) from None
    finally:
        if readers is None:
            own.close()


def load_sample(source: SourceData, table: SplitTable, row: int, readers: SpanReaders | None = None) -> dict:
    """The decoded sample of `table`'s row `row`; its meta.json must carry the manifest's label and mask (the
    plan and the head size come from the manifest, the targets from meta.json: they may not disagree)."""
    sample = with_proposals(decode_sample(str(table.key[row]), read_span(source, table, row, readers),
                                          decode_video_fast))  # fmt: skip
    meta = sample["meta"]
    label = -1 if meta.get("label") is None else meta["label"]
    if label != table.label[row] or meta.get("mask") != table.mask[row]:
        raise ShardMismatch(
            f"source {source.name}: sample {table.key[row]} holds label {label}, mask {meta.get('mask')} but "
            f"the manifest says {table.label[row]}, {table.mask[row]}; run `pvit-pipeline verify` and rebuild"
        )
    return sample


def decode_video_fast(members: Mapping) -> np.ndarray:
    """The clip `[T,H,W,3]` uint8 of a sample; JPEG frames through torchvision's libjpeg-turbo binding, one
    batched call (about 4x less time per frame than PIL's open/decode/convert path here)."""
    names = sorted(name for name in members if name.startswith("video.") and name.endswith(".jpg"))
    if not names:
        return decode_video(members)
    buffers = [torch.frombuffer(members[name], dtype=torch.uint8) for name in names]
    frames = decode_jpeg(buffers, mode=ImageReadMode.RGB)
    return torch.stack([frame.permute(1, 2, 0) for frame in frames]).numpy()


def with_proposals(sample: dict) -> dict:
    """meta.json's stored detections (`[x1, y1, x2, y2, score]` rows) as an array the augmentation moves."""
    rows = sample["meta"].get("ava_proposals")
    if rows is not None:
        sample["ava_proposals"] = np.asarray(rows, dtype=np.float32).reshape(-1, 5)
    return sample


def sample_arrays(sample: dict, allowed: int, box_slots: int, evaluating: bool = False) -> dict:
    """The labels of one decoded sample that its stream may use, plus its availability mask; each task's
    entry of the task table (`train.tasks.TRAIN_TASKS`) reads its own."""
    mask = int(sample["meta"]["mask"]) & allowed
    out: dict = {"video": sample["video"], "mask": mask}  # a view is fine: `collate` stacks (one copy)
    for task in TRAIN_TASKS.values():
        if mask >> task.bit & 1:
            out.update(task.read(sample, box_slots, evaluating))
    return out


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack samples with different label sets: placeholders where a label is absent, plus `mask`.

    A task no sample of the batch has is left out altogether (the loss then adds nothing for it). Each task's
    entry of the task table says how its samples stack and what its placeholders are.
    """
    width = mask_width()
    batch = {
        "video": torch.from_numpy(np.stack([item["video"] for item in items])),
        "mask": torch.tensor([[item["mask"] >> bit & 1 for bit in range(width)] for item in items]).bool(),
    }
    for task in TRAIN_TASKS.values():
        batch.update(task.stack(items, task.keys))
    return batch


def donor_order(have: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each sample, the sample whose label it gets: the samples with `have` set pass their labels round
    one random cycle (each takes the next one's in a random order), so with two or more of them no sample
    keeps its own label; the others keep theirs (their label slot is a placeholder)."""
    donor = np.arange(len(have))
    holders = rng.permutation(np.flatnonzero(have))
    donor[holders] = np.roll(holders, -1)
    return donor


def shuffle_task_labels(batch: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """The §A.2 control: each synthetic task's labels permuted among the batch's samples that have it,
    independently per task. Clips, masks and the multiset of every task's labels stay as they were; only
    which clip a label belongs to changes (all of a sample's box tensors move together)."""
    for task in SYNTHETIC_TASKS:
        keys = [key for key in TASK_LABEL_KEYS[task] if key in batch]
        have = batch["mask"][:, TASK_BIT[task]].numpy()
        # Drawn for every task, present or not, so one task's absence never changes another's permutation.
        donor = torch.from_numpy(donor_order(have, rng))
        for key in keys:
            batch[key] = batch[key][donor]
    return batch


@dataclass
class StreamSpec:
    """One stream on one rank: its plan, the split tables it reads, and its per-rank batch size."""

    role: str  # "real" or "synthetic"
    plan: StreamPlan
    sources: list[SourceData]
    tables: list[SplitTable]
    batch_size: int  # per rank
    world: int
    rank: int
    shuffle_labels: bool = False  # `shuffle_task_labels` on every batch (--shuffle-synthetic-labels)
    label_tasks: tuple[str, ...] = ()  # labels read beyond the role's own (--real-tasks on the real stream)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def batches_per_epoch(self) -> int:
        return self.plan.per_rank(self.world) // self.batch_size

    def rows(self, step: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(epoch, source index, row index, position in the rank's epoch) of the samples of `step`."""
        epoch, batch = divmod(step, self.batches_per_epoch)
        if epoch not in self._cache:
            self._cache.clear()  # one epoch at a time: orders are cheap to recompute
            self._cache[epoch] = self.plan.rank_order(epoch, self.rank, self.world)
        source, rows = self._cache[epoch]
        span = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
        return epoch, source[span], rows[span], np.arange(span.start, span.stop)


@dataclass
class Geometry:
    """What every batch of a run shares: the spatial protocol and the box slots of the model."""

    protocol: Protocol
    box_slots: int


class MixedBatches(IterableDataset):
    """Steps `start..stop-1`, each `{"step", "real": batch, "synthetic": batch}`; worker w makes every k-th.

    DataLoader collects worker outputs round-robin from worker 0, so worker w serving steps start+w,
    start+w+k, ... returns them in step order.
    """

    def __init__(
        self,
        streams: list[StreamSpec],
        start: int,
        stop: int,
        geometry: Geometry,
        seed: int,
    ) -> None:
        super().__init__()
        self.streams, self.start, self.stop, self.geometry = streams, start, stop, geometry
        self.seed = seed
        self.readers = SpanReaders()

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if info:
            torch.set_num_threads(1)  # workers are many; let each use one core
        for step in range(self.start + worker, self.stop, workers):
            yield self.batch(step)

    def batch(self, step: int) -> dict:
        out: dict = {"step": step}
        for stream_id, stream in enumerate(self.streams):
            epoch, sources, rows, places = stream.rows(step)
            self.readers.prefetch([(stream.sources[int(s)], span_of(stream.tables[int(s)], int(r)))
                                   for s, r in zip(sources, rows, strict=True)])  # fmt: skip
            items = []
            for source, row, place in zip(sources, rows, places, strict=True):
                rng = _rng(self.seed, stream_id, epoch, stream.rank, int(place), 7)
                sample = self.load(stream, int(source), int(row))
                sample = train_view(sample, self.geometry.protocol, rng)
                allowed = role_mask(stream.role, stream.label_tasks)
                if stream.role == "real" and self.geometry.protocol.rand_augment:  # MViTv2's, on action clips
                    sample = rand_augment_sample(sample, self.geometry.protocol.rand_augment, allowed, rng)
                items.append(sample_arrays(sample, allowed, self.geometry.box_slots))
            batch = collate(items)
            # Which rows are real: the loss scores synthetic tasks on the others and real tasks on these.
            batch["real"] = torch.full((len(items),), stream.role == "real")
            if stream.shuffle_labels:
                # From (seed, epoch, step, rank) alone, like the samples: any worker makes the same batch.
                shuffle_task_labels(batch, _rng(self.seed, stream_id, epoch, step, stream.rank, 11))
            batch["source"] = torch.as_tensor(sources)
            out[stream.role] = batch
        return out

    def load(self, stream: StreamSpec, source: int, row: int) -> dict:
        table, data = stream.tables[source], stream.sources[source]
        return load_sample(data, table, row, self.readers)


class EvalBatches(IterableDataset):
    """One split of one source in manifest order, this rank's padded slice, with `views` spatial crops each.

    Every stored sample is one temporal view of its video (`view_group`); each is cut into `views` spatial
    crops, so a video is scored over temporal x spatial views. A detection source (AVA) is seen whole instead
    (`full_frame`, one clip per batch since frames may differ in shape). Every rank gets the same number of
    batches; `valid` marks the padding repeats so metrics skip them, and `metas` carries each sample's
    meta.json for the official metrics. `label_tasks` are labels read beyond the role's own (--real-tasks).
    """

    def __init__(
        self,
        source: SourceData,
        split: str,
        role: str,
        rank: int,
        world: int,
        batch_size: int,
        geometry: Geometry,
        views: int = 1,
        full_frame: bool = False,
        label_tasks: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.source, self.table, self.role = source, source.split(split), role
        self.allowed = role_mask(role, label_tasks)  # --real-tasks: the real boxes are scored too
        self.rank, self.world = rank, world
        self.batch_size = 1 if full_frame else batch_size
        self.geometry, self.views, self.full_frame = geometry, 1 if full_frame else views, full_frame
        self.readers = SpanReaders()
        total = len(self.table)
        self.per_rank = -(-total // world)
        self.positions = np.arange(rank * self.per_rank, (rank + 1) * self.per_rank)
        self.rows = self.positions % total

    def __len__(self) -> int:
        return -(-self.per_rank // self.batch_size)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for index in range(worker, len(self), workers):
            yield self.batch(index)

    def batch(self, index: int) -> dict:
        span = slice(index * self.batch_size, (index + 1) * self.batch_size)
        items, groups, metas = [], [], []
        self.readers.prefetch([(self.source, span_of(self.table, int(row))) for row in self.rows[span]])
        for row in self.rows[span]:
            sample = load_sample(self.source, self.table, int(row), self.readers)
            meta = sample["meta"]
            groups.append(str(meta.get("view_group", meta.get("id", row))))
            metas.append(meta)
            for view in range(self.views):
                viewed = (
                    full_frame_view(sample, self.geometry.protocol)
                    if self.full_frame
                    else eval_view(sample, view, self.views, self.geometry.protocol)
                )
                items.append(sample_arrays(viewed, self.allowed, self.geometry.box_slots, True))
        batch: dict[str, Any] = collate(items)
        batch["valid"] = torch.from_numpy(self.positions[span] < len(self.table))
        batch["groups"] = groups
        batch["metas"] = metas
        batch["views"] = self.views
        return batch


def make_loader(dataset: IterableDataset, workers: int) -> DataLoader:
    """batch_size=None: the dataset batches itself (webdataset's recommendation for streaming)."""
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


@functools.cache
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: a new torch.tensor(..., device="cuda") per step is a blocking copy (host sync).
    # The pretrained weights' normalisation (pvit owns it: it belongs to the weights, not to the loader).
    pairs = (pvit.KINETICS_MEAN, pvit.KINETICS_STD)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1, 1) for v in pairs)
    return mean, std


def to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """uint8 `[B,T,H,W,3]` -> normalised float `[B,3,T,H,W]` on `device`, and the targets."""
    video = batch["video"].to(device, non_blocking=True).permute(0, 4, 1, 2, 3).float().div_(255)
    mean, std = _mean_std(device)
    video = (video - mean) / std
    keys = target_keys()
    targets = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in keys}
    for key in targets:
        entry = label_key(key)
        if entry is not None and entry.device_dtype is not None:
            targets[key] = targets[key].to(entry.device_dtype)
    return video, targets


def merge(parts: list[dict]) -> dict:
    """Concatenate the real and the synthetic batch into one, filling placeholders for absent tasks."""
    if len(parts) == 1:
        return parts[0]
    out = {"video": torch.cat([p["video"] for p in parts]), "mask": torch.cat([p["mask"] for p in parts])}
    for key in target_keys()[1:]:
        have = [p[key] for p in parts if key in p]
        if not have:
            continue
        filled = []
        for part in parts:
            if key in part:
                filled.append(part[key])
                continue
            shape = (part["video"].shape[0], *have[0].shape[1:])
            entry = label_key(key)
            fill = entry.fill if entry is not None else float("nan")
            filled.append(torch.full(shape, fill, dtype=have[0].dtype))
        out[key] = torch.cat(filled)
    return out

"""The trainer's half of the task table, keyed by the names of ``pvit.TASK_SPECS`` (architecture.md §5).

Per task: how its label is read from a decoded sample (``read``), the batch tensors that carry it with their
placeholder for a sample or stream lacking it (``keys``), how its samples are stacked (``stack``), its
accumulator for ``evaluate_tasks`` (``metric``, synthetic val splits) and the official scorer of a real source
that carries it (``scorer``, ``train.scorers``). ``train.data`` (``sample_arrays``, ``collate``, ``merge``,
``to_device``) and ``train.evaluate`` iterate ``TRAIN_TASKS`` and name no task; a new task is one
``register_train_task(TrainTask(...))`` next to its ``pvit.register_task``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pvit
import torch

from pipeline.schema import BOX_CLS_PADDING, NUM_AVA_CLASSES, SEGM_IGNORE, TASK_BIT, TASKS

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LabelKey:
    """One batch tensor of a task's label."""

    name: str
    fill: float  # placeholder where a sample (collate) or a whole stream (merge) lacks the label
    stack_dtype: type | None = None  # numpy dtype collate casts to (uint16 segm -> int32: torch lacks uint16)
    device_dtype: torch.dtype | None = None  # dtype `to_device` casts to (stored float16 -> float32)


@dataclass(frozen=True)
class TaskMetric:
    """A task's metric in ``evaluate_tasks``: sums over batches and ranks, then ratios."""

    start: Callable[[int], dict[str, Any]]  # num_seg -> zero sums (floats, or float64 CPU tensors)
    update: Callable[[dict, dict, torch.Tensor, dict], None]  # (preds, targets, rows, sums), in place
    result: Callable[[dict], dict[str, float]]  # reduced sums -> metrics (none when nothing was scored)


def stack_arrays(items: list[dict], keys: tuple[LabelKey, ...]) -> Batch:
    """Per key, the samples' arrays stacked, the key's placeholder where a sample lacks it (architecture.md
    §2: masked anyway); a key no sample has is left out (the loss then adds nothing for it)."""
    out = {}
    for key in keys:
        present = [item[key.name] for item in items if key.name in item]
        if not present:
            continue
        filler = np.full(present[0].shape, key.fill, dtype=present[0].dtype)
        stacked = np.stack([item.get(key.name, filler) for item in items])
        out[key.name] = torch.from_numpy(
            stacked if key.stack_dtype is None else stacked.astype(key.stack_dtype)
        )
    return out


def stack_classes(items: list[dict], keys: tuple[LabelKey, ...]) -> Batch:
    """One int class id per sample, the key's fill (-1) where a sample lacks it."""
    return {
        key.name: torch.tensor([item.get(key.name, int(key.fill)) for item in items], dtype=torch.int64)
        for key in keys
        if any(key.name in item for item in items)
    }


@dataclass(frozen=True)
class TrainTask:
    """The trainer's entry of one task. ``keys[0]`` is the label the metric and the loss check for."""

    name: str
    keys: tuple[LabelKey, ...]
    read: Callable[[dict, int, bool], dict]  # (decoded sample, box slots, evaluating) -> its label arrays
    stack: Callable[[list[dict], tuple[LabelKey, ...]], Batch] = stack_arrays
    metric: TaskMetric | None = None
    scorer: str = ""  # the scorer of a real source carrying this task, a key of train.scorers.SCORERS
    bit: int = -1  # its bit of meta.json's mask and column of the batch's `mask`; default TASK_BIT[name]

    def __post_init__(self) -> None:
        bit = self.bit if self.bit >= 0 else TASK_BIT.get(self.name, -1)
        if bit < 0:
            raise ValueError(f"task {self.name!r} is not in the schema's TASKS: give its mask bit")
        object.__setattr__(self, "bit", bit)

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)


TRAIN_TASKS: dict[str, TrainTask] = {}  # in TASKS order for the built-in tasks; a new task appends


def register_train_task(task: TrainTask, replace: bool = False) -> TrainTask:
    """Add ``task`` to the trainer's table (loading, collate, merge, device casts and evaluation read it)."""
    if task.name in TRAIN_TASKS and not replace:
        raise ValueError(f"task {task.name!r} is already registered")
    TRAIN_TASKS[task.name] = task
    return task


def unregister_train_task(name: str) -> TrainTask:
    """Remove a task from the trainer's table (tests that add a toy task restore the table with it)."""
    return TRAIN_TASKS.pop(name)


def target_keys() -> tuple[str, ...]:
    """The batch keys `to_device` moves and `merge` concatenates: `mask`, every task's, `real`."""
    return ("mask", *(name for task in TRAIN_TASKS.values() for name in task.key_names), "real")


def label_key(name: str) -> LabelKey | None:
    """The table's entry for a batch key (None for `mask`, `real`, ...)."""
    return next((key for task in TRAIN_TASKS.values() for key in task.keys if key.name == name), None)


def mask_width() -> int:
    """Columns of a batch's `mask`: the schema's tasks, or more when a registered task has a later bit."""
    return max(len(TASKS), *(task.bit + 1 for task in TRAIN_TASKS.values()))


class _TaskLabelKeys(Mapping[str, tuple[str, ...]]):
    """task -> the batch tensors carrying its label, read live from ``TRAIN_TASKS``."""

    def __getitem__(self, task: str) -> tuple[str, ...]:
        return TRAIN_TASKS[task].key_names

    def __iter__(self) -> Iterator[str]:
        return iter(TRAIN_TASKS)

    def __len__(self) -> int:
        return len(TRAIN_TASKS)


TASK_LABEL_KEYS: Mapping[str, tuple[str, ...]] = _TaskLabelKeys()


# --- reading labels from a decoded sample ----------------------------------------------------------------


def read_member(task: str, member: str) -> Callable[[dict, int, bool], dict]:
    """A reader of the label stored whole in the shard member ``member`` (``depth.npy``)."""

    def read(sample: dict, box_slots: int, evaluating: bool) -> dict:
        return {task: np.ascontiguousarray(sample[member])}

    return read


def read_meta(task: str, field: str) -> Callable[[dict, int, bool], dict]:
    """A reader of a class id stored in meta.json's ``field``."""

    def read(sample: dict, box_slots: int, evaluating: bool) -> dict:
        return {task: int(sample["meta"][field])}

    return read


def fit_slots(boxes: np.ndarray, classes: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad (NaN / -1) or cut the box slots of `[T, O, 4]` / `[T, O]` to the model's `slots`."""
    t, have = classes.shape
    out_boxes = np.full((t, slots, 4), np.nan, dtype=np.float32)
    out_cls = np.full((t, slots), BOX_CLS_PADDING, dtype=np.int64)
    keep = min(have, slots)
    out_boxes[:, :keep], out_cls[:, :keep] = boxes[:, :keep], classes[:, :keep]
    return out_boxes, out_cls


def _read_boxes(sample: dict, box_slots: int, evaluating: bool) -> dict:
    boxes, classes = fit_slots(sample["boxes.npy"], sample["boxes_cls.npy"], box_slots)
    return {"boxes": boxes, "boxes_cls": classes}


def ava_persons(sample: dict, evaluating: bool) -> tuple[np.ndarray, np.ndarray]:
    """The person boxes the AVA head sees and their labels (paper §C.5, SlowFast's box lists).

    Training: the ground-truth persons plus the stored detections overlapping one by IoU > 0.9 (they take
    its labels). Evaluation: the stored detections when the build has them (`--option proposals=...`), else
    the ground truth (the "oracle boxes" setting); their labels are only used for a loss, never for mAP,
    which is scored against the original CSV.
    """
    boxes, labels = sample["ava_boxes.npy"], sample["ava_labels.npy"]
    proposals = sample.get("ava_proposals")
    if proposals is None or not len(proposals):
        return boxes, labels
    if evaluating:
        return proposals[:, :4].astype(np.float32), np.full((len(proposals), labels.shape[1]), -1, np.int16)
    kept_boxes, kept_labels = pvit.ava_training_boxes(
        torch.from_numpy(np.asarray(boxes)),
        torch.from_numpy(labels.astype(np.float32)),
        torch.from_numpy(proposals),
    )
    return kept_boxes.numpy(), kept_labels.numpy().astype(labels.dtype)


def _read_ava(sample: dict, box_slots: int, evaluating: bool) -> dict:
    boxes, labels = ava_persons(sample, evaluating)
    return {"ava_boxes": boxes, "ava": labels}


def collate_persons(items: list[dict], keys: tuple[LabelKey, ...] = ()) -> Batch:
    """AVA persons, a different number per clip, padded to the batch's most: NaN boxes, -1 label rows."""
    if not any("ava" in item for item in items):
        return {}
    most = max(1, max(len(item.get("ava_boxes", ())) for item in items))
    boxes = np.full((len(items), most, 4), np.nan, dtype=np.float32)
    labels = np.full((len(items), most, NUM_AVA_CLASSES), -1, dtype=np.int16)
    for i, item in enumerate(items):
        if "ava" in item:
            count = len(item["ava_boxes"])
            boxes[i, :count], labels[i, :count] = item["ava_boxes"], item["ava"]
    return {"ava_boxes": torch.from_numpy(boxes), "ava": torch.from_numpy(labels)}


# --- evaluation metrics (evaluate_tasks) --------------------------------------------------------------


def ratio_metric(
    name: str, num: str, den: str, scale: float, update: Callable[[dict, dict, torch.Tensor, dict], None]
) -> TaskMetric:
    """A metric ``name = scale * sums[num] / sums[den]`` over the ranks' batches, absent when ``den`` is 0."""

    def result(sums: dict) -> dict[str, float]:
        return {name: scale * sums[num] / sums[den]} if sums[den] > 0 else {}

    return TaskMetric(lambda num_seg: {num: 0.0, den: 0.0}, update, result)


def _depth_update(preds: dict, targets: dict, rows: torch.Tensor, sums: dict) -> None:
    gt = targets["depth"]
    valid = torch.isfinite(gt) & (gt > 0) & rows.view(-1, 1, 1, 1)
    err = (preds["depth"] - gt).abs() / gt
    sums["depth_err"] += float(err[valid].sum())
    sums["depth_n"] += float(valid.sum())


def _normal_update(preds: dict, targets: dict, rows: torch.Tensor, sums: dict) -> None:
    gt = targets["normal"]
    valid = torch.isfinite(gt).all(-1) & rows.view(-1, 1, 1, 1)
    cos = (torch.nn.functional.normalize(preds["normal"], dim=-1) * gt.nan_to_num()).sum(-1)
    sums["normal_deg"] += float(torch.rad2deg(torch.acos(cos.clamp(-1, 1)))[valid].sum())
    sums["normal_n"] += float(valid.sum())


def _pose_update(preds: dict, targets: dict, rows: torch.Tensor, sums: dict) -> None:
    gt = targets["pose3d"]
    valid = torch.isfinite(gt).all(-1) & rows.view(-1, 1, 1)
    dist_m = (preds["pose3d"] - gt.nan_to_num()).norm(dim=-1)
    sums["pose_err"] += float(dist_m[valid].sum())
    sums["pose_n"] += float(valid.sum())


def pair_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of box a[i] with box b[i] (xyxy), elementwise over leading dims."""
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1) + (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area - inter).clamp(min=1e-9)


def box_iou_sums(boxes: torch.Tensor, target: torch.Tensor, rows: torch.Tensor) -> tuple[float, float]:
    """(sum of IoUs, count) of slot i against target row i, over the real target boxes of `rows`."""
    valid = torch.isfinite(target).all(-1) & rows.view(-1, 1, 1)
    return float(pair_iou(boxes, target.nan_to_num())[valid].sum()), float(valid.sum())


def _box_update(preds: dict, targets: dict, rows: torch.Tensor, sums: dict) -> None:
    iou, count = box_iou_sums(preds["boxes"], targets["boxes"], rows)
    sums["box_iou"] += iou
    sums["box_n"] += count


def confusion(logits: torch.Tensor, gt: torch.Tensor, rows: torch.Tensor, num: int) -> torch.Tensor:
    """The ``num x num`` (ground truth, prediction) pixel counts of the rows ``rows``."""
    pred = logits.argmax(1)
    valid = (gt != SEGM_IGNORE) & (gt >= 0) & (gt < num) & rows.view(-1, 1, 1, 1)
    index = gt[valid] * num + pred[valid]
    return torch.bincount(index, minlength=num * num).view(num, num).double()


def _segm_start(num_seg: int) -> dict[str, Any]:
    return {"confusion": torch.zeros(max(num_seg, 1), max(num_seg, 1), dtype=torch.float64)}


def _segm_update(preds: dict, targets: dict, rows: torch.Tensor, sums: dict) -> None:
    num = sums["confusion"].shape[0]
    sums["confusion"] += confusion(preds["segm"], targets["segm"], rows, num).cpu()


def _segm_result(sums: dict) -> dict[str, float]:
    matrix = sums["confusion"]
    union = matrix.sum(0) + matrix.sum(1) - matrix.diag()
    if union.sum() == 0:
        return {}
    return {"segm_miou": float(100.0 * (matrix.diag()[union > 0] / union[union > 0]).mean())}


# --- the table ----------------------------------------------------------------------------------------

NAN = float("nan")
BUILTIN_TRAIN_TASKS: tuple[TrainTask, ...] = (
    TrainTask(
        "action", (LabelKey("action", -1),), read_meta("action", "label"), stack_classes, scorer="action"
    ),
    TrainTask(
        "depth",
        (LabelKey("depth", NAN, device_dtype=torch.float32),),
        read_member("depth", "depth.npy"),
        metric=ratio_metric("depth_absrel", "depth_err", "depth_n", 1.0, _depth_update),
    ),
    TrainTask(
        "normal",
        (LabelKey("normal", NAN, device_dtype=torch.float32),),
        read_member("normal", "normal.npy"),
        metric=ratio_metric("normal_angle_deg", "normal_deg", "normal_n", 1.0, _normal_update),
    ),
    TrainTask(
        "segm",
        (LabelKey("segm", SEGM_IGNORE, stack_dtype=np.int32, device_dtype=torch.int64),),
        read_member("segm", "segm.npy"),
        metric=TaskMetric(_segm_start, _segm_update, _segm_result),
    ),
    TrainTask(
        "pose3d",
        (LabelKey("pose3d", NAN),),
        read_member("pose3d", "pose3d.npy"),
        metric=ratio_metric("pose_mpjpe_mm", "pose_err", "pose_n", 1000.0, _pose_update),
    ),
    TrainTask(
        "boxes",
        (LabelKey("boxes", NAN), LabelKey("boxes_cls", BOX_CLS_PADDING)),
        _read_boxes,
        metric=ratio_metric("box_iou", "box_iou", "box_n", 1.0, _box_update),
    ),
    TrainTask("oscc", (LabelKey("oscc", -1),), read_meta("oscc", "oscc"), stack_classes, scorer="ego4d"),
    # All zeros = no PNR frame, which the loss skips.
    TrainTask("pnr", (LabelKey("pnr", 0),), read_member("pnr", "pnr.npy"), scorer="ego4d"),
    TrainTask(
        "ava",
        (LabelKey("ava", -1, device_dtype=torch.float32), LabelKey("ava_boxes", NAN)),
        _read_ava,
        collate_persons,
        scorer="ava",
    ),
)
for _task in BUILTIN_TRAIN_TASKS:
    register_train_task(_task, replace=True)

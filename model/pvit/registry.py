"""The built-in entries of the task table (architecture.md §5): one ``TaskSpec`` per task, in ``TASKS`` order.

Each entry says what the model builds for the task (``head``: a factory given the config and the backbone's
dims), how it is called (``call``), how it is scored (``loss``, with its default weight ``weight``) and which
prediction and target keys it produces and reads. ``PViT`` and ``MultiTaskLoss`` iterate the table and name
no task; adding a task is one ``register_task(TaskSpec(...))`` here (or in the user's own module), plus the
trainer's entry in ``train/tasks.py`` (how its label is read, collated and evaluated).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn as nn

from .backbone import spatial_stride_until
from .heads import (
    AvaHead,
    BoxHead,
    DenseHead,
    HeadContext,
    HeadInput,
    OsccHead,
    PnrHead,
    PoseHead,
    depth_map,
    unit_normals,
)
from .losses import (
    MultiTaskLoss,
    action_loss,
    ava_loss,
    ava_valid,
    box_counts,
    class_valid,
    depth_loss,
    depth_valid,
    normal_loss,
    pnr_loss,
    pnr_valid,
    pose_loss,
    segm_loss,
    segm_valid,
    vector_valid,
)
from .tasks import (
    CountFn,
    HeadFactory,
    TaskSpec,
    default_loss_weights,
    register_task,
)

Tensors = Mapping[str, torch.Tensor]


# --- head factories ------------------------------------------------------------------------------------


def dense_head(
    task: str, channels: int | str, output: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> HeadFactory:
    """A factory of ``task``'s ``DenseHead`` with ``channels`` outputs (or the config field naming them)."""

    def make(ctx: HeadContext) -> nn.Module:
        cfg = ctx.cfg
        return DenseHead(
            task,
            tap_channels=list(ctx.tap_channels),
            tap_strides=list(ctx.tap_strides),
            token_dim=ctx.dim,
            out_channels=channels if isinstance(channels, int) else int(getattr(cfg, channels)),
            label_stride=cfg.label_stride,
            dim=cfg.dense_dim,
            hidden=cfg.dense_hidden,
            dropout=cfg.dense_dropout,
            output=output,
        )

    return make


def _pose_head(ctx: HeadContext) -> nn.Module:
    return PoseHead(ctx.dim, ctx.cfg.num_frames, ctx.cfg.num_joints)


def _box_head(ctx: HeadContext) -> nn.Module:
    cfg = ctx.cfg
    classes = cfg.num_real_box_classes if ctx.real and cfg.num_real_box_classes else cfg.num_box_classes
    return BoxHead(ctx.dim, cfg.num_frames, cfg.num_box_slots, classes)


def _oscc_head(ctx: HeadContext) -> nn.Module:
    return OsccHead(ctx.dim, ctx.cfg.head_dropout)


def _pnr_head(ctx: HeadContext) -> nn.Module:
    t_stride = spatial_stride_until(ctx.cfg, ctx.cfg.num_blocks - 1)[0]
    return PnrHead(ctx.dim, t_stride, ctx.cfg.head_dropout)


def _ava_head(ctx: HeadContext) -> nn.Module:
    return AvaHead(ctx.dim, ctx.cfg.num_ava_classes, ctx.cfg.ava_roi_size, ctx.cfg.head_dropout)


# --- how the downstream heads are called (their signatures differ) -------------------------------------


def _call_features(head: nn.Module, x: HeadInput) -> dict[str, torch.Tensor]:
    return head(x.feats)


def _call_frames(head: nn.Module, x: HeadInput) -> dict[str, torch.Tensor]:
    return head(x.feats, x.label_size[0])


def _call_boxes(head: nn.Module, x: HeadInput) -> dict[str, torch.Tensor]:
    # Without boxes the head still runs on none, which keeps it in the autograd graph for DDP.
    boxes = x.boxes if x.boxes is not None else x.feats.cls.new_zeros(x.feats.cls.shape[0], 0, 4)
    return head(x.feats, boxes)


# --- losses: (predictions, targets, rows, criterion) -> unweighted scalar; counts: the same from targets only


def _action(p: Tensors, t: Tensors, rows: torch.Tensor, crit: MultiTaskLoss) -> torch.Tensor:
    # Soft targets (the trainer's mixup/cutmix) already carry the smoothing; int labels get it here.
    smoothing = 0.0 if t["action"].is_floating_point() else crit.action_label_smoothing
    return action_loss(p["action"], t["action"], rows, smoothing, crit.count())


# Regression in fp32 even under autocast: squared metres lose too much in bf16.
def _depth(p: Tensors, t: Tensors, rows: torch.Tensor, crit: MultiTaskLoss) -> torch.Tensor:
    return depth_loss(p["depth"].float(), t["depth"].float(), rows, crit.max_depth, crit.count())


def _normal(p: Tensors, t: Tensors, rows: torch.Tensor, crit: MultiTaskLoss) -> torch.Tensor:
    return normal_loss(p["normal"].float(), t["normal"].float(), rows, crit.count())


def _segm(p: Tensors, t: Tensors, rows: torch.Tensor, crit: MultiTaskLoss) -> torch.Tensor:
    return segm_loss(p["segm"], t["segm"], rows, crit.count())


def _pose(p: Tensors, t: Tensors, rows: torch.Tensor, crit: MultiTaskLoss) -> torch.Tensor:
    return pose_loss(p["pose3d"].float(), t["pose3d"].float(), rows, crit.count())


def _boxes(p: Tensors, t: Tensors, rows: torch.Tensor, crit: MultiTaskLoss) -> torch.Tensor:
    return crit.box_loss(p, t, rows)


def _oscc(p: Tensors, t: Tensors, rows: torch.Tensor, crit: MultiTaskLoss) -> torch.Tensor:
    return action_loss(p["oscc"], t["oscc"], rows, count=crit.count())  # 2-way CE, label -1 = missing


def _pnr(p: Tensors, t: Tensors, rows: torch.Tensor, crit: MultiTaskLoss) -> torch.Tensor:
    return pnr_loss(p["pnr"], t["pnr"], rows, crit.count())


def _ava(p: Tensors, t: Tensors, rows: torch.Tensor, crit: MultiTaskLoss) -> torch.Tensor:
    return ava_loss(p["ava"], t["ava"], rows, crit.count())


def counted(key: str, valid: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CountFn:
    """The count of a one-term loss: its valid elements of ``targets[key]``."""

    def count(t: Tensors, rows: torch.Tensor, crit: MultiTaskLoss) -> dict[str, torch.Tensor]:
        return {"": valid(t[key], rows).sum()}

    return count


def _count_boxes(t: Tensors, rows: torch.Tensor, crit: MultiTaskLoss) -> dict[str, torch.Tensor]:
    return box_counts(t["boxes"], t.get("boxes_cls"), rows, crit.box_noobj_weight)


# --- the table: weights are the paper's lambdas; Ego4D's baseline sums its two losses unweighted and
# SlowFast's AVA loss has weight 1 -----------------------------------------------------------------------

BUILTIN_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("action", "action", _action, weight=1.0, count=counted("action", class_valid)),
    TaskSpec("depth", "dense", _depth, weight=0.5, head=dense_head("depth", 1, depth_map),
             count=counted("depth", depth_valid)),
    TaskSpec("normal", "dense", _normal, weight=0.5, head=dense_head("normal", 3, unit_normals),
             count=counted("normal", vector_valid)),
    TaskSpec("segm", "dense", _segm, weight=0.1, head=dense_head("segm", "num_seg_classes"),
             count=counted("segm", segm_valid)),
    TaskSpec("pose3d", "token", _pose, weight=3.0, head=_pose_head, count=counted("pose3d", vector_valid)),
    TaskSpec("boxes", "token", _boxes, weight=0.1, head=_box_head, pred_keys=("boxes", "boxes_cls"),
             target_keys=("boxes", "boxes_cls"), count=_count_boxes),
    TaskSpec("oscc", "downstream", _oscc, head=_oscc_head, call=_call_features,
             count=counted("oscc", class_valid)),
    TaskSpec("pnr", "downstream", _pnr, head=_pnr_head, call=_call_frames, count=counted("pnr", pnr_valid)),
    TaskSpec("ava", "downstream", _ava, head=_ava_head, call=_call_boxes, count=counted("ava", ava_valid)),
)  # fmt: skip
for _spec in BUILTIN_TASKS:
    register_task(_spec, replace=True)  # replace: a module reload must not fail

DEFAULT_LOSS_WEIGHTS: dict[str, float] = default_loss_weights()  # the built-in tasks' lambdas

__all__ = ["BUILTIN_TASKS", "DEFAULT_LOSS_WEIGHTS", "dense_head"]

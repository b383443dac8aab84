"""Masked multi-task losses (DESIGN §5).

Every loss is masked twice: per sample by the availability mask (``targets["mask"]``, column order
``TASKS``) and per element (NaN depth/normal pixels, segm 65535, NaN joints, NaN box rows). Invalid
entries are replaced *before* the arithmetic and selected away with ``torch.where``, so they contribute
exactly zero value and exactly zero gradient, and a task with no valid element gives ``0.0``, never NaN.
Each task's loss is a mean over its valid elements in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou, generalized_box_iou_loss

from .tasks import SEGM_IGNORE, TASK_INDEX, TASKS

DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "action": 1.0,
    "depth": 0.5,
    "normal": 0.5,
    "segm": 0.1,
    "pose3d": 3.0,
    "boxes": 0.1,
    # Downstream heads: Ego4D's baseline sums its two losses unweighted; SlowFast's AVA loss has weight 1.
    "oscc": 1.0,
    "pnr": 1.0,
    "ava": 1.0,
}


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``valid``; 0 (with a zero gradient) when nothing is valid."""
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / valid.sum().clamp(min=1)


def _sample_mask(valid_samples: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample bool ``[B]`` against ``like`` ``[B, ...]``."""
    return valid_samples.reshape(-1, *([1] * (like.dim() - 1)))


def depth_loss(
    pred: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor, max_depth: float
) -> torch.Tensor:
    """MSE on ``[B, T, h, w]`` metres; the target is clipped at ``max_depth`` to focus on near surfaces."""
    valid = torch.isfinite(target) & _sample_mask(sample_mask, target)
    clean = torch.where(valid, target, torch.zeros_like(target)).clamp(max=max_depth)
    return _masked_mean((pred - clean) ** 2, valid)


def normal_loss(pred: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """MSE on ``[B, T, h, w, 3]`` unit normals; a pixel counts when all three components are finite."""
    valid = torch.isfinite(target).all(-1, keepdim=True) & _sample_mask(sample_mask, target)
    clean = torch.where(valid, target, torch.zeros_like(target))
    return _masked_mean((pred - clean) ** 2, valid.expand_as(target))


def segm_loss(logits: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """Pixel cross-entropy; ``logits`` ``[B, K, T, h, w]``, ``target`` ``[B, T, h, w]`` (65535 = ignore)."""
    valid = (target >= 0) & (target != SEGM_IGNORE) & _sample_mask(sample_mask, target)
    clean = torch.where(valid, target, torch.zeros_like(target)).long()
    return _masked_mean(F.cross_entropy(logits, clean, reduction="none"), valid)


def pose_loss(pred: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """MSE on ``[B, T, J, 3]`` joints in metres; a joint counts when its row is finite."""
    valid = torch.isfinite(target).all(-1, keepdim=True) & _sample_mask(sample_mask, target)
    clean = torch.where(valid, target, torch.zeros_like(target))
    return _masked_mean((pred - clean) ** 2, valid.expand_as(target))


def action_loss(
    logits: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy on ``[B, C]`` logits; label -1 = missing."""
    valid = (target >= 0) & sample_mask
    clean = torch.where(valid, target, torch.zeros_like(target)).long()
    ce = F.cross_entropy(logits, clean, reduction="none", label_smoothing=label_smoothing)
    return _masked_mean(ce, valid)


def pnr_loss(logits: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the frames, ``logits`` ``[B, T]`` against the one-hot ``target`` ``[B, T]``.

    Only samples with a state change count: a negative clip's target is all zeros (``pnr.npy``).
    """
    clean = torch.where(torch.isfinite(target), target, torch.zeros_like(target))
    valid = sample_mask & (clean.sum(-1) > 0)
    ce = F.cross_entropy(logits.float(), clean.argmax(-1), reduction="none")
    return _masked_mean(ce, valid)


def ava_loss(logits: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per person and class (SlowFast's AVA loss), mean over the real persons' entries.

    ``logits`` and ``target`` are ``[B, P, C]``; a target row with a negative entry is padding (the collate
    pads with -1), and so are all rows of a sample whose ``ava`` bit is unset.
    """
    valid = (target >= 0).all(-1, keepdim=True) & _sample_mask(sample_mask, target)
    clean = torch.where(valid, target.float(), torch.zeros_like(target, dtype=torch.float32))
    bce = F.binary_cross_entropy_with_logits(logits.float(), clean, reduction="none")
    return _masked_mean(bce, valid.expand_as(bce))


def box_losses(
    boxes: torch.Tensor,
    logits: torch.Tensor | None,
    target: torch.Tensor,
    target_cls: torch.Tensor | None,
    sample_mask: torch.Tensor,
    noobj_weight: float = 0.1,
) -> dict[str, torch.Tensor]:
    """L1, GIoU and slot classification losses, slot ``i`` predicting target row ``i`` (the fixed order).

    ``boxes``/``target`` are ``[B, T, O, 4]`` xyxy in [0, 1]; target rows with a NaN are padding. L1 is the
    mean absolute coordinate error and GIoU the mean ``1 - GIoU`` over real boxes. With ``logits``
    ``[B, T, O, C + 1]``, every slot of a labelled sample is classified, padding slots as "no object" (the
    last class), down-weighted by ``noobj_weight`` as in DETR.
    """
    real = torch.isfinite(target).all(-1) & _sample_mask(sample_mask, target[..., 0])  # [B, T, O]
    if target_cls is not None:
        real = real & (target_cls >= 0)
    # Padding rows get a harmless unit box so GIoU stays finite; where() then drops them.
    filler = torch.tensor([0.0, 0.0, 1.0, 1.0], device=target.device, dtype=target.dtype)
    clean = torch.where(real[..., None], target, filler)
    out = {
        "l1": _masked_mean((boxes - clean).abs(), real[..., None].expand_as(boxes)),
        "giou": _masked_mean(generalized_box_iou_loss(boxes, clean, reduction="none"), real),
    }
    if logits is not None and target_cls is not None:
        noobj = logits.shape[-1] - 1
        labelled = _sample_mask(sample_mask, target_cls).expand_as(target_cls)
        cls = torch.where(real, target_cls, torch.full_like(target_cls, noobj)).long()
        ce = F.cross_entropy(logits.flatten(0, -2), cls.flatten(), reduction="none").view_as(cls)
        weight = torch.where(real, 1.0, noobj_weight) * labelled
        out["cls"] = (ce * weight).sum() / weight.sum().clamp(min=1e-6)
    return out


@torch.no_grad()
def match_boxes(
    boxes: torch.Tensor,
    logits: torch.Tensor | None,
    target: torch.Tensor,
    target_cls: torch.Tensor | None,
    l1_weight: float = 1.0,
    giou_weight: float = 1.0,
    cls_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hungarian matching (scipy) of predicted slots to real target boxes, per sample and frame.

    Returns the targets re-ordered into prediction-slot order (unmatched slots become padding: NaN rows and
    class -1), so ``box_losses`` can then be applied as in the fixed order.
    """
    from scipy.optimize import linear_sum_assignment  # optional dependency, only needed here

    lead = target.shape[:-2]
    num_slots = boxes.shape[-2]
    flat_pred, flat_tgt = boxes.reshape(-1, num_slots, 4), target.reshape(-1, target.shape[-2], 4)
    flat_cls = None if target_cls is None else target_cls.reshape(-1, target_cls.shape[-1])
    flat_prob = None if logits is None else logits.reshape(-1, num_slots, logits.shape[-1]).softmax(-1)
    matched = torch.full(
        (flat_pred.shape[0], num_slots, 4), float("nan"), dtype=target.dtype, device=target.device
    )
    matched_cls = torch.full((flat_pred.shape[0], num_slots), -1, dtype=torch.long, device=target.device)
    for i in range(flat_pred.shape[0]):
        real = torch.isfinite(flat_tgt[i]).all(-1)
        if flat_cls is not None:
            real &= flat_cls[i] >= 0
        gt = flat_tgt[i][real]
        if gt.shape[0] == 0:
            continue
        cost = l1_weight * torch.cdist(flat_pred[i].float(), gt.float(), p=1)
        cost = cost - giou_weight * generalized_box_iou(flat_pred[i].float(), gt.float())
        if flat_prob is not None and flat_cls is not None:
            cost = cost - cls_weight * flat_prob[i][:, flat_cls[i][real].long()]
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        rows_t, cols_t = (
            torch.as_tensor(rows, device=target.device),
            torch.as_tensor(cols, device=target.device),
        )
        matched[i, rows_t] = gt[cols_t]
        if flat_cls is not None:
            matched_cls[i, rows_t] = flat_cls[i][real][cols_t].long()
    out_cls = None if target_cls is None else matched_cls.reshape(*lead, num_slots)
    return matched.reshape(*lead, num_slots, 4), out_cls


class MultiTaskLoss(nn.Module):
    """``loss(predictions, targets) -> (total, {task: loss})``.

    ``predictions`` is ``PViT``'s output; ``targets`` the trainer's batch (see the package docstring).
    The per-task losses are unweighted; ``total = sum(weights[task] * loss[task])``. A task is scored when
    it is both predicted and present in ``targets``; a task predicted but absent from ``targets`` adds
    ``0 * prediction`` so its head stays in the autograd graph (DDP needs every parameter used).
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        max_depth: float = 20.0,  # metres; depth targets beyond are clipped
        box_matching: str = "fixed",  # "fixed" (the paper's slot order) or "hungarian"
        box_l1_weight: float = 1.0,
        box_giou_weight: float = 1.0,
        box_cls_weight: float = 1.0,  # 0 disables the slot classification term
        box_noobj_weight: float = 0.1,  # weight of padding slots in the slot classification
        action_label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if box_matching not in ("fixed", "hungarian"):
            raise ValueError(f"box_matching must be 'fixed' or 'hungarian', got {box_matching!r}")
        self.weights = {**DEFAULT_LOSS_WEIGHTS, **(weights or {})}
        self.max_depth, self.box_matching = max_depth, box_matching
        self.box_weights = (box_l1_weight, box_giou_weight, box_cls_weight)
        self.box_noobj_weight, self.action_label_smoothing = box_noobj_weight, action_label_smoothing

    def forward(
        self, predictions: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses: dict[str, torch.Tensor] = {}
        anchor = next(iter(predictions.values()))
        total = anchor.new_zeros(())
        for task in TASKS:
            if task not in predictions:
                continue
            if task not in targets:
                total = total + 0.0 * predictions[task].sum()  # keep the head in the graph, contribute 0
                continue
            losses[task] = self.task_loss(task, predictions, targets, self._sample_mask(task, targets))
            total = total + self.weights.get(task, 1.0) * losses[task]
        return total, losses

    def _sample_mask(self, task: str, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        target = targets[task]
        if "mask" not in targets:
            return torch.ones(target.shape[0], dtype=torch.bool, device=target.device)
        # The mask may carry more columns than TASKS (downstream tasks append bits); ours come first.
        return targets["mask"][:, TASK_INDEX[task]].to(device=target.device, dtype=torch.bool)

    def task_loss(
        self,
        task: str,
        predictions: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        sample_mask: torch.Tensor,
    ) -> torch.Tensor:
        pred, target = predictions[task], targets[task]
        if task in ("depth", "normal", "pose3d"):
            # Regression in fp32 even under autocast: squared metres lose too much in bf16.
            pred, target = pred.float(), target.float()
        if task == "action":
            return action_loss(pred, target, sample_mask, self.action_label_smoothing)
        if task == "oscc":
            return action_loss(pred, target, sample_mask)  # 2-way CE, label -1 = missing
        if task == "pnr":
            return pnr_loss(pred, target, sample_mask)
        if task == "ava":
            return ava_loss(pred, target, sample_mask)
        if task == "depth":
            return depth_loss(pred, target, sample_mask, self.max_depth)
        if task == "normal":
            return normal_loss(pred, target, sample_mask)
        if task == "segm":
            return segm_loss(pred, target, sample_mask)
        if task == "pose3d":
            return pose_loss(pred, target, sample_mask)
        if task == "boxes":
            return self._boxes(predictions, targets, sample_mask)
        raise KeyError(task)

    def _boxes(
        self,
        predictions: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        sample_mask: torch.Tensor,
    ) -> torch.Tensor:
        l1_w, giou_w, cls_w = self.box_weights
        boxes, target = predictions["boxes"].float(), targets["boxes"].float()
        logits = predictions.get("boxes_cls") if cls_w > 0 else None
        target_cls = targets.get("boxes_cls")
        if self.box_matching == "hungarian":
            target, target_cls = match_boxes(boxes, logits, target, target_cls, l1_w, giou_w, cls_w)
        parts = box_losses(boxes, logits, target, target_cls, sample_mask, self.box_noobj_weight)
        loss = l1_w * parts["l1"] + giou_w * parts["giou"]
        return loss + cls_w * parts["cls"] if "cls" in parts else loss

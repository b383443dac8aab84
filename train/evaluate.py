"""Evaluation: action top-1/top-5 with multi-view averaging, and per-task metrics on synthetic val splits.

Views: each real val sample is scored over `views` spatial crops; samples that share a `video_id` in their
meta.json (the pipeline's temporal clips `_v0.._vK`) are averaged too, so the score is per video over
spatial crops x temporal clips. Padding repeats (equal per-rank counts) are dropped via `valid`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist

from pipeline.schema import SEGM_IGNORE, TASK_BIT
from train.data import to_device


def _gather(values: list) -> list:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    out: list[list] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(out, values)
    return [v for part in out for v in part]


@torch.no_grad()
def evaluate_action(
    model: torch.nn.Module, batches: Iterable[dict], device: torch.device, autocast: Callable
) -> dict[str, float]:
    """Top-1/top-5 (percent) per video, softmax averaged over spatial and temporal views."""
    model.eval()
    scored = []
    for batch in batches:
        video, targets = to_device(batch, device)
        with autocast():
            logits = model(video)["action"].float()
        probs = logits.softmax(-1).view(len(batch["groups"]), batch["views"], -1).mean(1).cpu()
        labels = targets["action"].view(len(batch["groups"]), batch["views"])[:, 0].cpu()
        for group, label, prob, valid in zip(batch["groups"], labels, probs, batch["valid"], strict=True):
            if valid and label >= 0:
                scored.append((group, int(label), prob))
    scored = _gather(scored)
    per_video: dict[str, list] = defaultdict(list)
    for group, label, prob in scored:
        per_video[group].append((label, prob))
    if not per_video:
        return {"top1": float("nan"), "top5": float("nan"), "videos": 0, "clips": 0}
    top1 = top5 = 0
    for entries in per_video.values():
        label = entries[0][0]
        ranked = torch.stack([p for _, p in entries]).mean(0).argsort(descending=True)
        top1 += int(ranked[0] == label)
        top5 += int(label in ranked[:5].tolist())
    n = len(per_video)
    return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "videos": n, "clips": len(scored)}


# Sums reduced over ranks, in this order; each metric is a ratio of two of them.
_SUMS = ("depth_err", "depth_n", "normal_deg", "normal_n", "pose_err", "pose_n", "box_iou", "box_n")


@torch.no_grad()
def evaluate_tasks(
    model: torch.nn.Module, batches: Iterable[dict], device: torch.device, autocast: Callable, num_seg: int
) -> dict[str, float]:
    """Depth AbsRel, normal angle error (deg), segm mIoU (%), pose MPJPE (mm), box IoU (slot i vs row i)."""
    model.eval()
    sums = dict.fromkeys(_SUMS, 0.0)
    confusion = torch.zeros(max(num_seg, 1), max(num_seg, 1), dtype=torch.float64)
    for batch in batches:
        video, targets = to_device(batch, device)
        with autocast():
            preds = {k: v.float() for k, v in model(video).items()}
        keep = batch["valid"].to(device)
        _accumulate(preds, targets, keep, sums)
        if "segm" in preds and "segm" in targets:
            confusion += _confusion(
                preds["segm"], targets["segm"], _rows(targets, "segm", keep), num_seg
            ).cpu()
    totals = torch.tensor([sums[k] for k in _SUMS], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
        dist.all_reduce(confusion)
    s = dict(zip(_SUMS, totals.tolist(), strict=True))
    out = {}
    for name, num, den, scale in (
        ("depth_absrel", "depth_err", "depth_n", 1.0),
        ("normal_angle_deg", "normal_deg", "normal_n", 1.0),
        ("pose_mpjpe_mm", "pose_err", "pose_n", 1000.0),
        ("box_iou", "box_iou", "box_n", 1.0),
    ):
        if s[den] > 0:
            out[name] = scale * s[num] / s[den]
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    if union.sum() > 0:
        out["segm_miou"] = float(100.0 * (confusion.diag()[union > 0] / union[union > 0]).mean())
    return out


def _rows(targets: dict, task: str, keep: torch.Tensor) -> torch.Tensor:
    return keep & targets["mask"][:, TASK_BIT[task]]


def _accumulate(preds: dict, targets: dict, keep: torch.Tensor, sums: dict) -> None:
    if "depth" in preds and "depth" in targets:
        gt, rows = targets["depth"], _rows(targets, "depth", keep)
        valid = torch.isfinite(gt) & (gt > 0) & rows.view(-1, 1, 1, 1)
        err = (preds["depth"] - gt).abs() / gt
        sums["depth_err"] += float(err[valid].sum())
        sums["depth_n"] += float(valid.sum())
    if "normal" in preds and "normal" in targets:
        gt, rows = targets["normal"], _rows(targets, "normal", keep)
        valid = torch.isfinite(gt).all(-1) & rows.view(-1, 1, 1, 1)
        cos = (torch.nn.functional.normalize(preds["normal"], dim=-1) * gt.nan_to_num()).sum(-1)
        sums["normal_deg"] += float(torch.rad2deg(torch.acos(cos.clamp(-1, 1)))[valid].sum())
        sums["normal_n"] += float(valid.sum())
    if "pose3d" in preds and "pose3d" in targets:
        gt, rows = targets["pose3d"], _rows(targets, "pose3d", keep)
        valid = torch.isfinite(gt).all(-1) & rows.view(-1, 1, 1)
        dist_m = (preds["pose3d"] - gt.nan_to_num()).norm(dim=-1)
        sums["pose_err"] += float(dist_m[valid].sum())
        sums["pose_n"] += float(valid.sum())
    if "boxes" in preds and "boxes" in targets:
        gt, rows = targets["boxes"], _rows(targets, "boxes", keep)
        valid = torch.isfinite(gt).all(-1) & rows.view(-1, 1, 1)
        sums["box_iou"] += float(_pair_iou(preds["boxes"], gt.nan_to_num())[valid].sum())
        sums["box_n"] += float(valid.sum())


def _pair_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of box a[i] with box b[i] (xyxy), elementwise over leading dims."""
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1) + (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area - inter).clamp(min=1e-9)


def _confusion(logits: torch.Tensor, gt: torch.Tensor, rows: torch.Tensor, num: int) -> torch.Tensor:
    pred = logits.argmax(1)
    valid = (gt != SEGM_IGNORE) & (gt >= 0) & (gt < num) & rows.view(-1, 1, 1, 1)
    index = gt[valid] * num + pred[valid]
    return torch.bincount(index, minlength=num * num).view(num, num).double()

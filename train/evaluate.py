"""Evaluation: action top-1/top-5 with multi-view averaging, and per-task metrics on synthetic val splits.

Views: each real val sample is scored over `views` spatial crops (PySlowFast's `uniform_crop` along the long
side); samples that share a `view_group` in their meta.json (the build's temporal views `_v0.._vK`) are
averaged too, so the score is per video over spatial crops x temporal views, softmax averaged. Padding
repeats (equal per-rank counts) are dropped via `valid`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from timm.utils import accuracy

from train import metrics
from train.data import to_device
from train.tasks import TRAIN_TASKS


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
    scored, views = [], 1
    for batch in batches:
        views = batch["views"]
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
    # One row per video (its clips' softmax averaged), so timm's batch top-k is the percent of videos.
    probs = torch.stack([torch.stack([p for _, p in entries]).mean(0) for entries in per_video.values()])
    labels = torch.tensor([entries[0][0] for entries in per_video.values()])
    top1, top5 = (float(v) for v in accuracy(probs, labels, topk=(1, 5)))  # top-5 of <5 classes: 100
    n = len(per_video)
    return {
        "top1": top1,
        "top5": top5,
        "videos": n,
        "clips": len(scored),
        "views_per_video": len(scored) * views / n,  # temporal views stored x spatial test crops
    }


@torch.no_grad()
def evaluate_tasks(
    model: torch.nn.Module, batches: Iterable[dict], device: torch.device, autocast: Callable, num_seg: int
) -> dict[str, float]:
    """Each task's metric of the task table (`train.tasks.TRAIN_TASKS`): depth AbsRel, normal angle error
    (deg), segm mIoU (%), pose MPJPE (mm), box IoU (slot i vs row i)."""
    model.eval()
    scored = [(name, t.bit, t.keys[0].name, t.metric) for name, t in TRAIN_TASKS.items() if t.metric]
    sums = {name: metric.start(num_seg) for name, _, _, metric in scored}
    for batch in batches:
        video, targets = to_device(batch, device)
        with autocast():
            preds = {k: v.float() for k, v in model(video).items()}
        keep = batch["valid"].to(device)
        for name, bit, key, metric in scored:
            if key in preds and key in targets:
                metric.update(preds, targets, _rows(targets, bit, keep), sums[name])
    _all_reduce(sums)
    out: dict[str, float] = {}
    for name, _, _, metric in scored:
        out.update(metric.result(sums[name]))
    return out


def _all_reduce(sums: dict[str, dict]) -> None:
    """Sum every task's sums over ranks, in place: the float ones in one float64 tensor, tensors each."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    floats = [(task, key) for task, part in sums.items() for key, v in part.items() if isinstance(v, float)]
    totals = torch.tensor([sums[task][key] for task, key in floats], dtype=torch.float64)
    dist.all_reduce(totals)
    for (task, key), value in zip(floats, totals.tolist(), strict=True):
        sums[task][key] = value
    for part in sums.values():
        for value in part.values():
            if isinstance(value, torch.Tensor):
                dist.all_reduce(value)


def _rows(targets: dict, bit: int, keep: torch.Tensor) -> torch.Tensor:
    return keep & targets["mask"][:, bit]


# ----------------------------------------------------------------------------- Ego4D and AVA


def _predict(model: torch.nn.Module, batch: dict, device: torch.device, autocast: Callable) -> dict:
    video, targets = to_device(batch, device)
    with autocast():
        preds = model(video, boxes=targets.get("ava_boxes"))
    return {key: value.float().cpu() for key, value in preds.items()}


@torch.no_grad()
def evaluate_ego4d(
    model: torch.nn.Module, batches: Iterable[dict], device: torch.device, autocast: Callable, out: Path
) -> dict[str, float]:
    """OSCC accuracy and PNR localisation error (s) as the official code computes them (`train.metrics`);
    writes the submission files `pnr.json` and `oscc.json` under `out`. Logits are averaged over views."""
    model.eval()
    rows = []
    for batch in batches:
        preds = _predict(model, batch, device, autocast)
        count, views = len(batch["metas"]), batch["views"]
        oscc = preds["oscc"].view(count, views, -1).mean(1).numpy()
        pnr = preds["pnr"].view(count, views, -1).mean(1).numpy()
        for meta, valid, o, p in zip(batch["metas"], batch["valid"], oscc, pnr, strict=True):
            if valid:
                rows.append((meta, o, p))
    rows = _gather(rows)
    out.mkdir(parents=True, exist_ok=True)
    ids = [str(meta.get("unique_id") or meta["id"]) for meta, _, _ in rows]
    oscc = np.stack([o for _, o, _ in rows]) if rows else np.zeros((0, 2))
    pnr = np.stack([p for _, _, p in rows]) if rows else np.zeros((0, 1))
    start = np.array([m["parent_start_frame"] for m, _, _ in rows], dtype=float)
    end = np.array([m["parent_end_frame"] for m, _, _ in rows], dtype=float)
    metrics.write_pnr_json(out / "pnr.json", ids, metrics.pnr_predicted_frames(pnr, start, end).tolist())
    metrics.write_oscc_json(out / "oscc.json", ids, oscc)
    labelled = [i for i, (meta, _, _) in enumerate(rows) if meta.get("state_change") is not None]
    if not labelled:
        return {"clips": len(rows)}  # an unannotated test split: the files are the result
    change = np.array([bool(rows[i][0]["state_change"]) for i in labelled])
    fps = np.array([rows[i][0].get("clip_fps") or math.nan for i in labelled], dtype=float)
    pnr_frame = np.array([rows[i][0].get("pnr_frame") or 0 for i in labelled], dtype=float)
    return {
        "oscc_accuracy": 100.0 * metrics.oscc_accuracy(oscc[labelled], change.astype(int)),
        "pnr_error_s": metrics.pnr_localisation_error(
            pnr[labelled], start[labelled], end[labelled], pnr_frame, fps, change
        ),
        "clips": len(rows),
    }


def to_full_frame(boxes: np.ndarray, crop_box: list[int], orig_hw: list[int]) -> np.ndarray:
    """Boxes normalised to the stored frame -> normalised to the source frame (through `crop_box`)."""
    top, left, height, width = crop_box
    src_h, src_w = orig_hw
    scale = np.array([width / src_w, height / src_h] * 2)
    shift = np.array([left / src_w, top / src_h] * 2)
    return np.asarray(boxes, dtype=float) * scale + shift


@torch.no_grad()
def evaluate_ava(
    model: torch.nn.Module,
    batches: Iterable[dict],
    device: torch.device,
    autocast: Callable,
    out: Path,
    annotations: str = "",
    split: str = "val",
) -> dict[str, float]:
    """Frame-mAP@0.5 of the official ActivityNet evaluation against the original CSV of `annotations`.

    Writes `ava_detections.csv` (`video_id,sec,x1,y1,x2,y2,action_id,score`, boxes in full-frame normalised
    coordinates, mapped back through each sample's `crop_box`) under `out`; scores it when `annotations`
    (the raw dataset's annotation folder) is given, else says so.
    """
    model.eval()
    predictions, class_ids = [], None
    for batch in batches:
        scores = _predict(model, batch, device, autocast)["ava"].sigmoid().numpy()
        for i, (meta, valid) in enumerate(zip(batch["metas"], batch["valid"], strict=True)):
            boxes = batch["ava_boxes"][i].numpy()
            real = np.isfinite(boxes).all(-1)
            if not valid or not real.any():
                continue
            class_ids = meta["ava_action_ids"]
            full = to_full_frame(boxes[real], meta["crop_box"], meta["orig_hw"])
            predictions.append(
                metrics.AvaKeyframePrediction(meta["video_id"], int(meta["timestamp"]), full, scores[i][real])
            )
    predictions = _gather(predictions)
    out.mkdir(parents=True, exist_ok=True)
    detections = out / "ava_detections.csv"
    rows = metrics.write_ava_detections(detections, predictions, class_ids or [])
    result: dict[str, float] = {"keyframes": len(predictions), "detection_rows": rows}
    if annotations:
        files = ava_annotation_files(Path(annotations), split)
        result["frame_map"] = (
            100.0
            * metrics.evaluate_ava(
                files["labelmap"], files["groundtruth"], detections, files.get("exclusions")
            )["mAP"]
        )
    return result


def ava_annotation_files(folder: Path, split: str) -> dict[str, Path]:
    """The official files in `folder`: label map, `ava_<split>_v2.x.csv` and its excluded timestamps."""
    found: dict[str, Path] = {}
    for version in ("2.2", "2.1"):
        if (folder / f"ava_{split}_v{version}.csv").is_file():
            found["groundtruth"] = folder / f"ava_{split}_v{version}.csv"
            excluded = folder / f"ava_{split}_excluded_timestamps_v{version}.csv"
            if excluded.is_file():
                found["exclusions"] = excluded
            break
    for name in (
        "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
        "ava_action_list_v2.1_for_activitynet_2018.pbtxt",
    ):
        if (folder / name).is_file():
            found["labelmap"] = folder / name
            break
    missing = {"groundtruth", "labelmap"} - set(found)
    if missing:
        raise FileNotFoundError(
            f"--ava-annotations {folder}: no {' or '.join(sorted(missing))} file for {split}"
        )
    return found

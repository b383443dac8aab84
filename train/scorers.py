"""The real benchmarks' scorers, each with its official metric: action top-1/top-5 over views, Ego4D OSCC and
PNR, AVA frame-mAP. Each task of the task table (`train.tasks.TRAIN_TASKS`) names the scorer (a key of
`SCORERS`) of a real source that carries it; all take `(model, batches, ScoreContext)` and return
`{metric: value}`.

Views: each real val sample is scored over `views` spatial crops (PySlowFast's `uniform_crop` along the long
side); samples that share a `view_group` in their meta.json (the build's temporal views `_v0.._vK`) are
averaged too, so a score is per video over spatial crops x temporal views, softmax averaged. Padding repeats
(equal per-rank counts) are dropped via `valid`.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from timm.utils import accuracy

from pipeline.schema import TASK_BIT
from train import metrics
from train.data import to_device
from train.tasks import box_iou_sums


@dataclass(frozen=True)
class ScoreContext:
    """Where and how a scorer runs, and what the official metrics need beyond the predictions."""

    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    files: Path | None = None  # where the official output files go (Ego4D JSON, AVA CSV)
    ava_annotations: str = ""  # AVA's annotation folder; "" = write the detections, score nothing
    split: str = "val"


Scorer = Callable[[torch.nn.Module, Iterable[dict], ScoreContext], dict[str, float]]


def gather(values: list) -> list:
    """Every rank's list, concatenated in rank order (the list itself on one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    out: list[list] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(out, values)
    return [v for part in out for v in part]


# ----------------------------------------------------------------------------- action recognition


@torch.no_grad()
def score_action(model: torch.nn.Module, batches: Iterable[dict], ctx: ScoreContext) -> dict[str, float]:
    """Top-1/top-5 (percent) per video, softmax averaged over spatial and temporal views.

    With a real-task boxes head (`--real-tasks boxes`, the model predicts `real_boxes`), also its box IoU on
    the val clips that carry boxes (`real_box_iou`, slot i against row i, as the synthetic boxes are scored).
    """
    model.eval()
    scored, views, box_sums = [], 1, [0.0, 0.0]
    for batch in batches:
        views = batch["views"]
        video, targets = to_device(batch, ctx.device)
        with ctx.autocast():
            preds = model(video)
        probs = preds["action"].float().softmax(-1).view(len(batch["groups"]), views, -1).mean(1).cpu()
        labels = targets["action"].view(len(batch["groups"]), views)[:, 0].cpu()
        for group, label, prob, valid in zip(batch["groups"], labels, probs, batch["valid"], strict=True):
            if valid and label >= 0:
                scored.append((group, int(label), prob))
        if "real_boxes" in preds and "boxes" in targets:
            rows = targets["mask"][:, TASK_BIT["boxes"]] & batch["valid"].repeat_interleave(views).to(
                ctx.device
            )
            iou, count = box_iou_sums(preds["real_boxes"].float(), targets["boxes"], rows)
            box_sums = [box_sums[0] + iou, box_sums[1] + count]
    return {**_video_accuracy(gather(scored), views), **_real_box_iou(box_sums)}


def _video_accuracy(scored: list, views: int) -> dict[str, float]:
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


def _real_box_iou(sums: list[float]) -> dict[str, float]:
    iou, count = (sum(gather([value])) for value in sums)
    return {"real_box_iou": iou / count} if count > 0 else {}


# ----------------------------------------------------------------------------- Ego4D and AVA


def _predict(model: torch.nn.Module, batch: dict, ctx: ScoreContext) -> dict:
    video, targets = to_device(batch, ctx.device)
    with ctx.autocast():
        preds = model(video, boxes=targets.get("ava_boxes"))
    return {key: value.float().cpu() for key, value in preds.items()}


def _files(ctx: ScoreContext) -> Path:
    out = ctx.files or Path(".")
    out.mkdir(parents=True, exist_ok=True)
    return out


@torch.no_grad()
def score_ego4d(model: torch.nn.Module, batches: Iterable[dict], ctx: ScoreContext) -> dict[str, float]:
    """OSCC accuracy and PNR localisation error (s) as the official code computes them (`train.metrics`);
    writes the submission files `pnr.json` and `oscc.json` under `ctx.files`; logits averaged over views."""
    model.eval()
    rows = []
    for batch in batches:
        preds = _predict(model, batch, ctx)
        count, views = len(batch["metas"]), batch["views"]
        oscc = preds["oscc"].view(count, views, -1).mean(1).numpy()
        pnr = preds["pnr"].view(count, views, -1).mean(1).numpy()
        for meta, valid, o, p in zip(batch["metas"], batch["valid"], oscc, pnr, strict=True):
            if valid:
                rows.append((meta, o, p))
    rows = gather(rows)
    out = _files(ctx)
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
def score_ava(model: torch.nn.Module, batches: Iterable[dict], ctx: ScoreContext) -> dict[str, float]:
    """AVA frame-mAP@0.5 against the original CSV of `ctx.ava_annotations`.

    Writes `ava_detections.csv` (`video_id,sec,x1,y1,x2,y2,action_id,score`, boxes in full-frame normalised
    coordinates, mapped back through each sample's `crop_box`) under `ctx.files`. `frame_map` is every
    detection scored, as PySlowFast (and MViTv2's published AVA numbers) report it; `frame_map_top50` is the
    ActivityNet script's figure, which keeps 50 (box, class) detections per keyframe: with 60 classes scored
    for each person the cap always bites, so it reads lower.
    """
    model.eval()
    predictions, class_ids = [], None
    for batch in batches:
        scores = _predict(model, batch, ctx)["ava"].sigmoid().numpy()
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
    predictions = gather(predictions)
    detections = _files(ctx) / "ava_detections.csv"
    rows = metrics.write_ava_detections(detections, predictions, class_ids or [])
    result: dict[str, float] = {"keyframes": len(predictions), "detection_rows": rows}
    if ctx.ava_annotations:
        files = ava_annotation_files(Path(ctx.ava_annotations), ctx.split)
        exclusions = files.get("exclusions")
        for name, top_k in (("frame_map", 0), ("frame_map_top50", metrics.AVA_TOP_K)):
            scored = metrics.evaluate_ava(
                files["labelmap"], files["groundtruth"], detections, exclusions, top_k
            )
            result[name] = 100.0 * scored["mAP"]
    return result


def ava_annotation_files(folder: Path, split: str = "val") -> dict[str, Path]:
    """The official files in `folder`: label map, `ava_<split>_v2.x.csv` and its excluded timestamps.

    A missing folder or file, or a ground-truth CSV with no rows, is one line (`FileNotFoundError`,
    `ValueError`): the trainer checks this before its first step.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"--ava-annotations {folder}: no such folder")
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
    if not found["groundtruth"].read_text(encoding="utf-8", errors="replace").strip():
        raise ValueError(
            f"--ava-annotations {found['groundtruth']}: the ground truth has no rows; nothing to score"
        )
    return found


SCORERS: dict[str, Scorer] = {"action": score_action, "ego4d": score_ego4d, "ava": score_ava}

"""Official metrics and output files of the AVA v2.2 and Ego4D OSCC/PNR benchmarks (numpy only, no torch).

AVA frame-mAP@0.5 follows ActivityNet's ``Evaluation/get_ava_performance.py`` as of commit ``3fee089``
(2019-03-01, the v2.2 challenge version: ``-e`` exclusions file, top-50 cap), with its helpers
``Evaluation/ava/object_detection_evaluation.py`` (``PascalDetectionEvaluator``),
``per_image_evaluation.py``, ``metrics.py`` and ``np_box_ops.py``; SlowFast's ``ava_evaluation/`` is a
copy of the same TF object-detection code. The facts reproduced here:

- CSV rows ``video_id,sec,x1,y1,x2,y2,action_id[,score]``; the key is ``"%s,%04d" % (video_id, int(sec))``;
  boxes are held as ``[y1, x1, y2, x2]``; rows whose action is not in the label map are dropped. Ground
  truth: every row is one (box, class) instance (a person with k actions is k instances), a ground-truth
  file's 8th column (person id) is read as its "score" and only orders the instances.
- Detections: per key at most 50 (box, class) entries, kept with a min-heap on
  ``(score, action, y1, x1, y2, x2)`` that a later entry replaces only with a strictly higher score; the
  kept entries are then ordered by descending score (a stable sort of the heap array).
- Keys in the excluded-timestamps file are dropped from ground truth and from detections.
- Per key and class, detections with ``y1 >= y2`` or ``x1 >= x2`` are dropped; the others, in order,
  each take the ground-truth box of highest IoU (the first on ties) and are a true positive when that
  IoU is >= 0.5 and the box is not yet matched, else a false positive. No ground truth is difficult.
- IoU uses plain areas ``(y2 - y1) * (x2 - x1)`` (no +1 pixel: boxes are normalised).
- Per class with ground truth: detections of all keys concatenated in key order (first appearance in
  the detection file), ranked by ``np.argsort(scores)[::-1]``, precision and recall accumulated,
  precision made monotone from the right, AP = sum of precision x recall steps (VOC all-point). A class
  with ground truth but no detection has AP 0; one without ground truth has NaN, and the reported
  ``PascalBoxes_Precision/mAP@0.5IOU`` is the ``np.nanmean`` over the label map's classes.

ActivityNet's later revision (``c070fdb``, 2020) drops the exclusions file and instead ignores detections
on keys absent from the ground-truth file (which then lists empty keyframes as 2-column rows); the v2.2
``ava_val_v2.2.csv`` has no such rows, so the 2019 protocol above is the one this project implements.

Ego4D (EGO4D/hands-and-objects ``state-change-localization-classification/i3d-resnet50/``:
``evaluation/metrics.py``, ``test.py``): OSCC accuracy is the fraction of clips whose argmax equals the
label. PNR error, for clips with a state change only: the predicted index ``k`` maps to
``k * (parent_end_frame - parent_start_frame) / T`` frames after ``parent_start_frame`` (the official
code hard-codes ``T = 16``), the ground truth is ``parent_pnr_frame - parent_start_frame``, and the
absolute difference is divided by ``fps = (end - start + 1) / (end_sec - start_sec)``. The official
``test.py`` averages per-batch means (right only for batch 1); this module averages per clip.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AVA_TOP_K = 50  # (box, class) detections kept per keyframe by the official script
AVA_IOU = 0.5

PathLike = str | os.PathLike


class MetricInputError(ValueError):
    """An evaluation input is malformed; the message is one line naming the file and the problem."""


# --------------------------------------------------------------------------------------------------- AVA


def ava_image_key(video_id: str, sec: int | str) -> str:
    """The official image key ``video_id,%04d``."""
    return f"{video_id},{int(sec):04d}"


@dataclass
class AvaBoxes:
    """Boxes per image key, as the official ``read_csv`` returns them (each list in its final order)."""

    boxes: dict[str, list[list[float]]] = field(default_factory=dict)  # [y1, x1, y2, x2]
    labels: dict[str, list[int]] = field(default_factory=dict)
    scores: dict[str, list[float]] = field(default_factory=dict)


def read_ava_labelmap(path: PathLike) -> tuple[list[dict], set[int]]:
    """``[{"id", "name"}]`` in file order and the set of ids, parsed like the official ``read_labelmap``.

    Only lines starting with exactly two spaces and ``name:`` / ``id:`` / ``label_id:`` count.
    """
    categories: list[dict] = []
    name = ""
    with open(path) as handle:
        for line in handle:
            if line.startswith("  name:"):
                name = line.split('"')[1] if '"' in line else line.split(":", 1)[1].strip()
            elif line.startswith(("  id:", "  label_id:")):
                try:
                    categories.append({"id": int(line.strip().split(" ")[-1]), "name": name})
                except ValueError:
                    raise MetricInputError(f"{path}: unparsable class id line {line.strip()!r}") from None
    if not categories:
        raise MetricInputError(f"{path}: no '  name:' / '  id:' entries (not an AVA label map)")
    return categories, {c["id"] for c in categories}


def read_ava_exclusions(path: PathLike | None) -> set[str]:
    """Image keys of the excluded-timestamps CSV (``video_id,sec`` rows); empty when ``path`` is None."""
    if path is None:
        return set()
    keys = set()
    with open(path, newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), 1):
            if len(row) != 2:
                raise MetricInputError(f"{path}:{line_no}: expected 2 columns, got {len(row)}")
            keys.add(_key(row, path, line_no))
    return keys


def _key(row: list[str], path: PathLike, line_no: int) -> str:
    try:
        return ava_image_key(row[0], row[1])
    except ValueError:
        raise MetricInputError(f"{path}:{line_no}: timestamp {row[1]!r} is not an integer second") from None


def read_ava_csv(path: PathLike, class_whitelist: set[int] | None = None, capacity: int = 0) -> AvaBoxes:
    """An AVA ground-truth or detection CSV, read as the official ``read_csv`` does.

    ``capacity`` > 0 keeps only that many (box, class) entries per key, the highest-scoring (the official
    script uses 0 for ground truth and ``AVA_TOP_K`` for detections).
    """
    entries: dict[str, list[tuple]] = {}
    with open(path, newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), 1):
            if len(row) not in (7, 8):
                raise MetricInputError(f"{path}:{line_no}: expected 7 or 8 columns, got {len(row)}")
            key = _key(row, path, line_no)
            try:
                x1, y1, x2, y2 = (float(v) for v in row[2:6])
                action = int(row[6])
                score = float(row[7]) if len(row) == 8 else 1.0
            except ValueError:
                raise MetricInputError(f"{path}:{line_no}: unparsable box, action or score") from None
            if class_whitelist and action not in class_whitelist:
                continue
            heap = entries.setdefault(key, [])
            item = (score, action, y1, x1, y2, x2)
            if capacity < 1 or len(heap) < capacity:
                heapq.heappush(heap, item)
            elif score > heap[0][0]:
                heapq.heapreplace(heap, item)
    out = AvaBoxes()
    for key, heap in entries.items():
        ordered = sorted(heap, key=lambda item: -item[0])  # stable: ties keep the heap array's order
        out.boxes[key] = [list(item[2:]) for item in ordered]
        out.labels[key] = [item[1] for item in ordered]
        out.scores[key] = [item[0] for item in ordered]
    return out


def box_iou_yxyx(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``[N, M]`` of ``[y1, x1, y2, x2]`` boxes with plain areas (TF ``np_box_ops.iou``)."""
    ymin = np.maximum(a[:, None, 0], b[None, :, 0])
    xmin = np.maximum(a[:, None, 1], b[None, :, 1])
    ymax = np.minimum(a[:, None, 2], b[None, :, 2])
    xmax = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(0.0, ymax - ymin) * np.maximum(0.0, xmax - xmin)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def _tp_fp(det: np.ndarray, gt: np.ndarray, iou_threshold: float) -> np.ndarray:
    """True-positive flags of one key's detections of one class, in their order (greedy VOC matching)."""
    tp = np.zeros(len(det), dtype=bool)
    if len(det) == 0 or len(gt) == 0:
        return tp
    iou = box_iou_yxyx(det, gt)
    best = np.argmax(iou, axis=1)
    taken = np.zeros(len(gt), dtype=bool)
    for i, j in enumerate(best):
        if iou[i, j] >= iou_threshold and not taken[j]:
            tp[i] = taken[j] = True
    return tp


def voc_average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """VOC all-point interpolated AP (``metrics.compute_precision_recall`` + ``compute_average_precision``).

    NaN when ``num_gt`` is 0; 0 when there are ground truths but no detections.
    """
    if num_gt == 0:
        return math.nan
    if len(scores) == 0:
        return 0.0
    order = np.argsort(np.asarray(scores, dtype=float))[::-1]
    hits = np.asarray(tp, dtype=int)[order]
    cum_tp = np.cumsum(hits)
    precision = cum_tp / np.cumsum(np.ones_like(hits))
    recall = cum_tp / num_gt
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def ava_frame_map(
    groundtruth: AvaBoxes,
    detections: AvaBoxes,
    categories: list[dict],
    excluded: frozenset[str] | set[str] = frozenset(),
    iou_threshold: float = AVA_IOU,
) -> dict:
    """Frame-mAP from already-read boxes: ``{"mAP": float, "per_class": {class id: AP (NaN = no GT)}}``."""
    num_class = max(c["id"] for c in categories)  # the evaluator's class range is 1..max id
    gt_count = np.zeros(num_class + 1, dtype=int)
    for key, gt_ids in groundtruth.labels.items():
        if key not in excluded:
            np.add.at(gt_count, np.asarray(gt_ids, dtype=int), 1)
    per_scores: list[list[np.ndarray]] = [[] for _ in range(num_class + 1)]
    per_tp: list[list[np.ndarray]] = [[] for _ in range(num_class + 1)]
    for key in detections.boxes:
        if key in excluded:
            continue
        boxes = np.asarray(detections.boxes[key], dtype=float).reshape(-1, 4)
        labels = np.asarray(detections.labels[key], dtype=int)
        scores = np.asarray(detections.scores[key], dtype=float)
        ok = (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3])
        boxes, labels, scores = boxes[ok], labels[ok], scores[ok]
        gt_boxes = np.asarray(groundtruth.boxes.get(key, []), dtype=float).reshape(-1, 4)
        gt_labels = np.asarray(groundtruth.labels.get(key, []), dtype=int)
        for cls in np.unique(labels):
            mine = labels == cls
            per_scores[cls].append(scores[mine])
            per_tp[cls].append(_tp_fp(boxes[mine], gt_boxes[gt_labels == cls], iou_threshold))
    ap = np.full(num_class + 1, np.nan)
    for cls in range(1, num_class + 1):
        if gt_count[cls]:
            scores = np.concatenate(per_scores[cls]) if per_scores[cls] else np.zeros(0)
            tp = np.concatenate(per_tp[cls]) if per_tp[cls] else np.zeros(0, dtype=bool)
            ap[cls] = voc_average_precision(scores, tp, int(gt_count[cls]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (no ground truth at all) gives NaN
        mean = float(np.nanmean(ap[1:]))
    return {"mAP": mean, "per_class": {c["id"]: float(ap[c["id"]]) for c in categories}}


def evaluate_ava(
    labelmap: PathLike,
    groundtruth: PathLike,
    detections: PathLike,
    exclusions: PathLike | None = None,
    top_k: int = AVA_TOP_K,
) -> dict:
    """Frame-mAP of files: ``{"mAP", "per_class"}`` (see the module doc).

    ``top_k=AVA_TOP_K`` is ActivityNet's ``get_ava_performance.py``, which keeps 50 (box, class) detections
    per keyframe; ``top_k=0`` keeps every detection, as PySlowFast's ``ava_eval_helper.evaluate_ava`` does
    (its ``read_csv`` has no cap), the figure SlowFast's and MViTv2's published AVA results report. Either way
    the evaluator ranks each key's detections by score before matching: the order of the file does not count.
    """
    categories, whitelist = read_ava_labelmap(labelmap)
    excluded = read_ava_exclusions(exclusions)
    gt = read_ava_csv(groundtruth, whitelist, 0)
    det = read_ava_csv(detections, whitelist, top_k)
    return ava_frame_map(gt, det, categories, excluded)


@dataclass
class AvaKeyframePrediction:
    """One keyframe's persons: boxes ``[P, 4]`` xyxy normalised to the full frame, scores ``[P, C]``."""

    video_id: str
    sec: int
    boxes: np.ndarray
    scores: np.ndarray


def write_ava_detections(
    path: PathLike, predictions: Iterable[AvaKeyframePrediction], class_ids: Sequence[int]
) -> int:
    """Write the official detections CSV (``video_id,sec,x1,y1,x2,y2,action_id,score``, no header).

    ``class_ids[j]`` is the AVA action id of score column ``j`` (the label map's ids in file order for
    the 60-class head). One row per (person, class); ActivityNet's script keeps the top 50 per keyframe,
    PySlowFast's every row.
    Returns the number of rows written.
    """
    rows = 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        for pred in predictions:
            boxes, scores = np.asarray(pred.boxes, float), np.asarray(pred.scores, float)
            if scores.shape != (len(boxes), len(class_ids)):
                raise MetricInputError(
                    f"{pred.video_id},{pred.sec}: scores {scores.shape} do not match "
                    f"{len(boxes)} boxes x {len(class_ids)} classes"
                )
            for box, row in zip(boxes, scores, strict=True):
                coords = [f"{v:.6f}" for v in box]
                for action, score in zip(class_ids, row, strict=True):
                    writer.writerow(
                        [pred.video_id, f"{int(pred.sec):04d}", *coords, int(action), f"{score:.6f}"]
                    )
                    rows += 1
    return rows


# ------------------------------------------------------------------------------------------------- Ego4D


def oscc_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of clips whose argmax over the 2 OSCC logits (or probabilities) equals the 0/1 label."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise MetricInputError(
            f"oscc: need [N, 2] logits and N labels, got {logits.shape} and {labels.shape}"
        )
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def pnr_predicted_frames(
    pnr_logits: np.ndarray, start_frame: np.ndarray, end_frame: np.ndarray, num_frames: int | None = None
) -> np.ndarray:
    """Predicted PNR in frames after ``parent_start_frame``: ``argmax * (end - start) / T`` per clip.

    ``T`` defaults to the number of logits (16 in the recipe, the official constant).
    """
    pnr_logits = np.asarray(pnr_logits, dtype=float)
    t = pnr_logits.shape[1] if num_frames is None else num_frames
    span = np.asarray(end_frame, dtype=float) - np.asarray(start_frame, dtype=float)
    return np.argmax(pnr_logits, axis=1) * span / t


def pnr_errors_seconds(
    pnr_logits: np.ndarray,
    start_frame: np.ndarray,
    end_frame: np.ndarray,
    pnr_frame: np.ndarray,
    fps: np.ndarray,
    state_change: np.ndarray,
    num_frames: int | None = None,
) -> np.ndarray:
    """Absolute PNR localisation error in seconds of every clip with a state change (others are skipped).

    ``pnr_frame`` is the absolute ``parent_pnr_frame`` (any value where there is no state change).
    """
    change = np.asarray(state_change, dtype=bool)
    predicted = pnr_predicted_frames(pnr_logits, start_frame, end_frame, num_frames)
    truth = np.asarray(pnr_frame, dtype=float) - np.asarray(start_frame, dtype=float)
    errors = np.abs(predicted - truth) / np.asarray(fps, dtype=float)
    return errors[change]


def pnr_localisation_error(*args: np.ndarray, **kwargs: object) -> float:
    """Mean over clips of ``pnr_errors_seconds`` (same arguments); NaN when no clip has a state change."""
    errors = pnr_errors_seconds(*args, **kwargs)  # type: ignore[arg-type]
    return float(errors.mean()) if len(errors) else math.nan


def write_pnr_json(path: PathLike, unique_ids: Sequence[str], predicted_frames: Sequence[float]) -> None:
    """The PNR submission: ``[{"unique_id": ..., "pnr_frame": frames after parent_start_frame}]``."""
    if len(unique_ids) != len(predicted_frames):
        raise MetricInputError(f"pnr: {len(unique_ids)} unique ids but {len(predicted_frames)} predictions")
    rows = [
        {"unique_id": u, "pnr_frame": float(f)} for u, f in zip(unique_ids, predicted_frames, strict=True)
    ]
    Path(path).write_text(json.dumps(rows))


def write_oscc_json(path: PathLike, unique_ids: Sequence[str], logits: np.ndarray) -> None:
    """OSCC predictions: ``[{"unique_id": ..., "state_change": bool}]`` (argmax of the 2 logits).

    The layout mirrors the PNR file; the challenge server's exact OSCC schema is not confirmed from a
    primary source.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or len(logits) != len(unique_ids):
        raise MetricInputError(f"oscc: need [N, 2] logits for {len(unique_ids)} ids, got {logits.shape}")
    rows = [
        {"unique_id": u, "state_change": bool(k)}
        for u, k in zip(unique_ids, np.argmax(logits, axis=1), strict=True)
    ]
    Path(path).write_text(json.dumps(rows))

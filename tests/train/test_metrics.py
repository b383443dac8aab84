"""Official AVA frame-mAP and Ego4D OSCC/PNR metrics on small hand-computed cases, and their output files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from train.metrics import (
    AvaKeyframePrediction,
    MetricInputError,
    ava_image_key,
    evaluate_ava,
    oscc_accuracy,
    pnr_errors_seconds,
    pnr_localisation_error,
    pnr_predicted_frames,
    read_ava_csv,
    read_ava_labelmap,
    voc_average_precision,
    write_ava_detections,
    write_oscc_json,
    write_pnr_json,
)

# Two evaluated classes (ids 1 and 3); id 2 is not in the map, so its rows are dropped everywhere.
LABELMAP = """item {
  name: "bend/bow (at the waist)"
  id: 1
}
item {
  name: "dance"
  label_id: 3
}
"""
PERSON_A = "0.100,0.100,0.400,0.900"  # x1,y1,x2,y2
PERSON_B = "0.500,0.200,0.900,0.800"
ELSEWHERE = "0.000,0.000,0.050,0.050"  # IoU 0 with both persons


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    gt = [
        f"vid1,0902,{PERSON_A},1,0",
        f"vid1,0902,{PERSON_B},1,1",
        f"vid1,0902,{PERSON_B},3,1",  # person B has two actions: two instances
        f"vid1,0903,{PERSON_A},1,0",
        f"vid1,0903,{PERSON_A},2,0",  # class 2 is not in the label map
    ]
    return {
        "labelmap": _write(tmp_path / "labelmap.pbtxt", LABELMAP.splitlines()),
        "gt": _write(tmp_path / "gt.csv", gt),
        "excl": _write(tmp_path / "excluded.csv", ["vid1,0905"]),
        "dir": tmp_path,
    }


def _map(files: dict[str, Path], detections: list[str], name: str = "det.csv") -> dict:
    det = _write(files["dir"] / name, detections)
    return evaluate_ava(files["labelmap"], files["gt"], det, files["excl"])


def test_voc_ap_hand_made_precision_recall_points() -> None:
    # Ranked TP, FP, TP, FP with 3 ground truths: (P, R) = (1, 1/3), (1/2, 1/3), (2/3, 2/3), (1/2, 2/3).
    # Monotone precision: 1 up to R = 1/3, 2/3 up to R = 2/3, 0 after -> AP = 1/3 + 2/9.
    ap = voc_average_precision(np.array([0.6, 0.9, 0.7, 0.8]), np.array([0, 1, 1, 0], bool), 3)
    assert ap == pytest.approx(1 / 3 + 2 / 9)
    assert voc_average_precision(np.zeros(0), np.zeros(0, bool), 2) == 0.0
    assert math.isnan(voc_average_precision(np.array([0.5]), np.array([False]), 0))


def test_ava_map_hand_made(files: dict[str, Path]) -> None:
    dets = [
        f"vid1,0902,{PERSON_A},1,0.9",  # TP (class 1: 3 instances)
        f"vid1,0902,{PERSON_A},1,0.8",  # FP: person A already matched
        f"vid1,0902,{PERSON_B},3,0.7",  # TP (class 3: 1 instance)
        f"vid1,0903,{PERSON_A},1,0.6",  # TP
        f"vid1,0903,{ELSEWHERE},3,0.95",  # FP for class 3, ranked first
        f"vid1,0903,{PERSON_A},2,0.99",  # class 2 is ignored
    ]
    result = _map(files, dets)
    # Class 1 ranks TP, FP, TP over 3 GT: 1 * 1/3 + 2/3 * 1/3 = 5/9. Class 3 ranks FP, TP over 1 GT: 1/2.
    assert result["per_class"][1] == pytest.approx(5 / 9)
    assert result["per_class"][3] == pytest.approx(1 / 2)
    assert result["mAP"] == pytest.approx((5 / 9 + 1 / 2) / 2)
    assert set(result["per_class"]) == {1, 3}


def test_iou_threshold_is_inclusive_at_one_half(files: dict[str, Path]) -> None:
    # Binary-exact coordinates: the left half of the ground-truth box has IoU exactly 0.5.
    _write(files["gt"], ["vid2,0902,0.25,0.25,0.75,0.75,1,0"])
    assert _map(files, ["vid2,0902,0.25,0.25,0.5,0.75,1,0.9"])["per_class"][1] == 1.0
    assert _map(files, ["vid2,0902,0.25,0.25,0.46875,0.75,1,0.9"])["per_class"][1] == 0.0


def test_inverted_detection_box_is_dropped_not_a_false_positive(files: dict[str, Path]) -> None:
    flipped = "0.400,0.100,0.100,0.900"  # x2 < x1
    with_bad = _map(files, [f"vid1,0902,{flipped},3,0.99", f"vid1,0902,{PERSON_B},3,0.5"])
    assert with_bad["per_class"][3] == 1.0


def test_excluded_timestamp_changes_nothing(files: dict[str, Path]) -> None:
    dets = [f"vid1,0902,{PERSON_A},1,0.9", f"vid1,0903,{ELSEWHERE},1,0.8", f"vid1,0902,{PERSON_B},3,0.7"]
    base = _map(files, dets)
    # Ground truth and detections at the excluded keyframe 905, scored high enough to change every AP.
    gt_lines = files["gt"].read_text().splitlines() + [
        f"vid1,0905,{PERSON_A},1,0",
        f"vid1,0905,{PERSON_B},3,1",
    ]
    _write(files["gt"], gt_lines)
    noisy = dets + [f"vid1,0905,{ELSEWHERE},1,0.99", f"vid1,0905,{ELSEWHERE},3,0.99"]
    assert _map(files, noisy, "noisy.csv") == base
    # The same rows at a keyframe that is not excluded do change the result.
    _write(files["excl"], ["vid1,0999"])
    assert _map(files, noisy, "noisy.csv")["mAP"] != base["mAP"]


def test_detection_beyond_top_50_of_its_keyframe_is_ignored(files: dict[str, Path]) -> None:
    true_positive = f"vid1,0902,{PERSON_B},3,0.5"
    assert _map(files, [true_positive])["per_class"][3] == 1.0
    # 50 higher-scored entries at the same keyframe push the true positive out.
    crowd = [f"vid1,0902,{ELSEWHERE},1,0.{60 + i}" for i in range(30)]
    crowd += [f"vid1,0902,{PERSON_A},3,0.{60 + i}" for i in range(20)]
    assert _map(files, crowd + [true_positive])["per_class"][3] == 0.0
    # Listed first, it is evicted all the same (the cap keeps the highest scores, not the first rows).
    assert _map(files, [true_positive] + crowd)["per_class"][3] == 0.0
    # With 49 others it stays, and the cap is per keyframe: detections at 0903 do not count against 0902.
    # Then 20 class-3 false positives (person A) rank above it: AP = 1/21.
    other_key = [f"vid1,0903,{ELSEWHERE},1,0.{60 + i}" for i in range(30)]
    assert _map(files, crowd[1:] + [true_positive] + other_key)["per_class"][3] == pytest.approx(1 / 21)


def test_read_csv_top_k_keeps_highest_scores_in_descending_order(tmp_path: Path) -> None:
    rows = [f"v,0902,0.1,0.1,0.2,0.2,1,{s}" for s in (0.3, 0.9, 0.1, 0.7)]
    det = read_ava_csv(_write(tmp_path / "d.csv", rows), capacity=2)
    key = ava_image_key("v", 902)
    assert det.scores[key] == [0.9, 0.7]
    assert det.boxes[key][0] == [0.1, 0.1, 0.2, 0.2]  # [y1, x1, y2, x2]
    assert key == "v,0902"


def test_labelmap_reads_both_id_forms_with_two_space_indent(tmp_path: Path) -> None:
    text = LABELMAP + 'item {\n    name: "deeper"\n    id: 7\n}\n'  # 4 spaces: not read, as officially
    categories, ids = read_ava_labelmap(_write(tmp_path / "m.pbtxt", text.splitlines()))
    assert categories == [{"id": 1, "name": "bend/bow (at the waist)"}, {"id": 3, "name": "dance"}]
    assert ids == {1, 3}


def test_bad_rows_raise_one_line_errors(tmp_path: Path, files: dict[str, Path]) -> None:
    with pytest.raises(MetricInputError, match=r"bad\.csv:2: expected 7 or 8 columns"):
        read_ava_csv(_write(tmp_path / "bad.csv", ["v,0902,0.1,0.1,0.2,0.2,1", "v,0902,0.1"]))
    with pytest.raises(MetricInputError, match="not an AVA label map"):
        read_ava_labelmap(_write(tmp_path / "empty.pbtxt", ["nothing"]))


def test_written_detections_are_read_by_the_evaluator(files: dict[str, Path]) -> None:
    a = [float(v) for v in PERSON_A.split(",")]
    b = [float(v) for v in PERSON_B.split(",")]
    preds = [
        AvaKeyframePrediction("vid1", 902, np.array([a, b]), np.array([[0.9, 0.1], [0.8, 0.7]])),
        AvaKeyframePrediction("vid1", 903, np.array([a]), np.array([[0.6, 0.2]])),
    ]
    path = files["dir"] / "written.csv"
    assert write_ava_detections(path, preds, class_ids=[1, 3]) == 6
    first = path.read_text().splitlines()[0]
    assert first == "vid1,0902,0.100000,0.100000,0.400000,0.900000,1,0.900000"
    result = evaluate_ava(files["labelmap"], files["gt"], path, files["excl"])
    # Class 1 ranks A@902 0.9 TP, B@902 0.8 TP, A@903 0.6 TP: AP 1. Class 3 ranks B 0.7 TP first: AP 1.
    assert result["mAP"] == pytest.approx(1.0)
    with pytest.raises(MetricInputError, match="do not match"):
        write_ava_detections(path, preds[:1], class_ids=[1])


# ------------------------------------------------------------------------------------------------- Ego4D


def _one_hot_logits(indices: list[int], frames: int = 16) -> np.ndarray:
    logits = np.zeros((len(indices), frames))
    logits[np.arange(len(indices)), indices] = 5.0
    return logits


def test_pnr_error_on_a_hand_made_clip_equals_the_formula() -> None:
    start, end, start_sec, end_sec = 1000, 1240, 33.3, 41.3
    fps = (end - start + 1) / (end_sec - start_sec)  # 30.125
    errors = pnr_errors_seconds(
        _one_hot_logits([5]), np.array([start]), np.array([end]), np.array([1090]), np.array([fps]), [True]
    )
    # k = 5 -> 5 * 240 / 16 = 75 frames after the start; truth 1090 - 1000 = 90 -> 15 frames.
    assert errors.tolist() == pytest.approx([15 / fps])
    assert pnr_predicted_frames(_one_hot_logits([5]), [start], [end]).tolist() == [75.0]


def test_pnr_error_is_a_per_clip_mean_over_state_changes_only() -> None:
    logits = _one_hot_logits([0, 8, 3])
    start, end = np.array([0, 0, 0]), np.array([160, 160, 160])  # 10 frames per index
    pnr, fps = np.array([30, 80, 0]), np.array([10.0, 10.0, 10.0])
    # Clip 0: |0 - 30| / 10 = 3 s; clip 1: |80 - 80| = 0 s; clip 2 has no state change.
    error = pnr_localisation_error(logits, start, end, pnr, fps, np.array([True, True, False]))
    assert error == pytest.approx(1.5)
    assert math.isnan(pnr_localisation_error(logits, start, end, pnr, fps, np.zeros(3, bool)))


def test_oscc_accuracy() -> None:
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.2, 0.1]])
    assert oscc_accuracy(logits, np.array([0, 1, 1, 0])) == 0.75
    with pytest.raises(MetricInputError):
        oscc_accuracy(logits[:, 0], np.array([0, 1, 1, 0]))


def test_ego4d_submission_files(tmp_path: Path) -> None:
    write_pnr_json(
        tmp_path / "pnr.json", ["u1", "u2"], pnr_predicted_frames(_one_hot_logits([5, 0]), [0, 0], [240, 240])
    )
    assert json.loads((tmp_path / "pnr.json").read_text()) == [
        {"unique_id": "u1", "pnr_frame": 75.0},
        {"unique_id": "u2", "pnr_frame": 0.0},
    ]
    write_oscc_json(tmp_path / "oscc.json", ["u1", "u2"], np.array([[0.1, 0.9], [0.8, 0.2]]))
    assert json.loads((tmp_path / "oscc.json").read_text()) == [
        {"unique_id": "u1", "state_change": True},
        {"unique_id": "u2", "state_change": False},
    ]


def test_uncapped_frame_map_scores_every_detection_the_top_50_figure_drops(files: dict[str, Path]) -> None:
    """The trainer scores 60 classes per person: the official script's cap of 50 (box, class) rows per
    keyframe drops low-scored true positives that PySlowFast's uncapped evaluation keeps."""
    noise = [f"vid1,0902,{ELSEWHERE},1,0.{90 + i % 9}" for i in range(49)]  # 49 confident misses, class 1
    hits = [f"vid1,0902,{PERSON_A},1,0.010", f"vid1,0902,{PERSON_B},1,0.011", f"vid1,0902,{PERSON_B},3,0.5"]
    det = _write(files["dir"] / "many.csv", noise + hits)
    capped = evaluate_ava(files["labelmap"], files["gt"], det, files["excl"])
    uncapped = evaluate_ava(files["labelmap"], files["gt"], det, files["excl"], top_k=0)
    assert capped["per_class"][1] == 0.0  # both class-1 hits ranked below the 50 kept rows
    assert uncapped["per_class"][1] > 0.0 and uncapped["per_class"][3] == capped["per_class"][3] == 1.0
    assert uncapped["mAP"] > capped["mAP"]

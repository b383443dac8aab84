"""kist-synadl adapter: OpenPose BODY_25 3D JSON -> Kinect V2 metres, OpenCV axes; bad clips quarantined."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_fixtures import write_synadl_clip

from pipeline.config import BuildConfig
from pipeline.schema import KINECT_JOINTS
from pipeline.sources._synthetic_common import BODY25_JOINTS
from pipeline.sources.base import Quarantine, SourceError
from pipeline.sources.kist_synadl import KistSynadlSource

K = {name: i for i, name in enumerate(KINECT_JOINTS)}
B = {name: i for i, name in enumerate(BODY25_JOINTS)}


def _source(root: Path, frames: int = 2, **options: str) -> KistSynadlSource:
    return KistSynadlSource(root, BuildConfig(frames=frames, options=tuple(sorted(options.items()))))


def _load_only(source: KistSynadlSource, split: str = "train"):
    items = list(source.items(split))
    assert len(items) == 1
    return source.load(items[0])


def _distinct_joints(t: int) -> np.ndarray:
    """BODY_25 joint j at (100 j, 50 + j, 300) cm, y up."""
    joints = np.zeros((t, 25, 3))
    joints[:, :, 0] = 100.0 * np.arange(25)
    joints[:, :, 1] = 50.0 + np.arange(25)
    joints[:, :, 2] = 300.0
    return joints


def test_layout_listing_and_sample_shapes(tmp_path: Path) -> None:
    write_synadl_clip(tmp_path, "A001_P101_G001_C001")
    write_synadl_clip(tmp_path, "A002_P115_G004_C028")
    source = _source(tmp_path)
    assert [i.id for i in source.items("train")] == ["A001_P101_G001_C001", "A002_P115_G004_C028"]
    sample = source.load(next(iter(source.items("train"))))
    assert sample.video.shape == (2, 36, 64, 3) and sample.fps == pytest.approx(20.0)
    assert set(sample.labels) == {"pose3d.npy"} and sample.labels["pose3d.npy"].shape == (2, 25, 3)
    assert sample.extra["action"] == 1 and sample.extra["camera"] == 1


def test_held_out_persons_form_the_test_split(tmp_path: Path) -> None:
    write_synadl_clip(tmp_path, "A001_P101_G001_C001")
    write_synadl_clip(tmp_path, "A001_P115_G001_C001")
    source = _source(tmp_path, kist_test_persons="P115")
    assert [i.id for i in source.items("train")] == ["A001_P101_G001_C001"]
    assert [i.id for i in source.items("test")] == ["A001_P115_G001_C001"]


def test_missing_pose_folder_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="Openpose/3DJ"):
        list(_source(tmp_path).items("train"))


def test_body25_to_kinect_order_left_right_and_units(tmp_path: Path) -> None:
    write_synadl_clip(tmp_path, joints_cm=_distinct_joints(4), t=4)
    pose = _load_only(_source(tmp_path)).labels["pose3d.npy"][0]

    def at(*body25: str) -> np.ndarray:  # expected metres, OpenCV (y negated), mean of the named joints
        ids = [B[n] for n in body25]
        return np.array([np.mean([1.0 * i for i in ids]), -np.mean([0.5 + 0.01 * i for i in ids]), 3.0])

    pairs = {"spine_base": ("mid_hip",), "neck": ("neck",), "spine_shoulder": ("neck",),
             "shoulder_left": ("l_shoulder",), "elbow_left": ("l_elbow",), "wrist_left": ("l_wrist",),
             "shoulder_right": ("r_shoulder",), "wrist_right": ("r_wrist",), "hip_left": ("l_hip",),
             "knee_right": ("r_knee",), "ankle_left": ("l_ankle",), "spine_mid": ("mid_hip", "neck"),
             "head": ("r_ear", "l_ear"), "foot_left": ("l_big_toe", "l_small_toe"),
             "foot_right": ("r_big_toe", "r_small_toe")}  # fmt: skip
    for kinect, body25 in pairs.items():
        np.testing.assert_allclose(pose[K[kinect]], at(*body25), atol=1e-5, err_msg=kinect)
    for missing in ("hand_left", "hand_right", "handtip_left", "thumb_left", "handtip_right", "thumb_right"):
        assert np.isnan(pose[K[missing]]).all(), missing
    # BODY_25 puts the right shoulder (2) before the left (5); Kinect V2 the left (4) before the right (8)
    assert pose[K["shoulder_left"], 0] == pytest.approx(5.0)
    assert pose[K["shoulder_right"], 0] == pytest.approx(2.0)


def test_zero_score_joints_are_missing_and_head_falls_back_to_the_nose(tmp_path: Path) -> None:
    scores = np.ones((2, 25))
    scores[:, B["l_elbow"]] = 0
    scores[:, B["l_ear"]] = 0
    write_synadl_clip(tmp_path, t=2, joints_cm=_distinct_joints(2), scores=scores)
    pose = _load_only(_source(tmp_path)).labels["pose3d.npy"][0]
    assert np.isnan(pose[K["elbow_left"]]).all()
    np.testing.assert_allclose(pose[K["head"]], [0.0, -0.5, 3.0], atol=1e-5)  # the nose, BODY_25 joint 0


def _per_frame_joints(t: int) -> np.ndarray:
    """Every joint of frame k at x = 100 k cm, so the frame a pose came from can be read back."""
    joints = _distinct_joints(t)
    joints[:, :, 0] = 100.0 * np.arange(t)[:, None]
    return joints


@pytest.mark.parametrize("first_index", [0, 1])
def test_frame_index_base_is_read_from_the_file(tmp_path: Path, first_index: int) -> None:
    # Undocumented for KIST: 1-based (ST-GCN Kinetics-skeleton style) and 0-based files both load,
    # and video frame t gets the entry of frame_index t + base.
    write_synadl_clip(tmp_path, t=4, joints_cm=_per_frame_joints(4), first_index=first_index)
    sample = _load_only(_source(tmp_path, frames=4))
    assert sample.extra["frame_index_base"] == first_index and sample.extra["pose_missing_frames"] == 0
    np.testing.assert_allclose(sample.labels["pose3d.npy"][:, K["neck"], 0], [0.0, 1.0, 2.0, 3.0], atol=1e-6)


def test_a_few_missing_entries_are_tolerated_and_recorded(tmp_path: Path) -> None:
    joints = _per_frame_joints(6)
    pose_path, _ = write_synadl_clip(tmp_path, t=6, joints_cm=joints, first_index=1)
    data = json.loads(pose_path.read_text())
    data["data"] = [e for e in data["data"] if e["frame_index"] not in (3, 6)]  # frames 2 and 5 (last)
    pose_path.write_text(json.dumps(data))
    sample = _load_only(_source(tmp_path, frames=6))
    pose = sample.labels["pose3d.npy"][:, K["neck"], 0]
    assert sample.extra["frame_index_base"] == 1 and sample.extra["pose_missing_frames"] == 2
    assert np.isnan(pose[[2, 5]]).all()
    np.testing.assert_allclose(pose[[0, 1, 3, 4]], [0.0, 1.0, 3.0, 4.0], atol=1e-6)
    with pytest.raises(Quarantine, match="2 of 6 video frames have no 3DJ entry"):
        _load_only(_source(tmp_path, frames=6, kist_missing_frames="1"))


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("no_annotations", "no annotations"),
        ("pose_longer", "frame_index 0..4 does not fit a video of 4 frames"),
        ("missing_video", "missing file A023_P102_G003_C021.avi"),
        ("bad_json", "unreadable JSON"),
    ],
)
def test_bad_clips_are_quarantined_with_their_reason(tmp_path: Path, damage: str, reason: str) -> None:
    pose, video = write_synadl_clip(tmp_path, t=5 if damage == "pose_longer" else 4, video_frames=4)
    if damage == "no_annotations":
        pose.write_text(json.dumps({"data": []}))
    elif damage == "missing_video":
        video.unlink()
    elif damage == "bad_json":
        pose.write_text('{"data": [')
    with pytest.raises(Quarantine, match=reason):
        _load_only(_source(tmp_path))

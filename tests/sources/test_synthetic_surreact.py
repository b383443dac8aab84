"""surreact adapter: release layout, frame-count checks, camera transform and the Kinect mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_fixtures import write_surreact_clip

from pipeline.config import BuildConfig
from pipeline.labelspace import load_label_space
from pipeline.schema import KINECT_JOINTS, SEGM_IGNORE
from pipeline.sources._synthetic_common import SMPL_JOINTS, smpl_to_kinect
from pipeline.sources.base import Quarantine, SourceError
from pipeline.sources.surreact import SurreactSource

K = {name: i for i, name in enumerate(KINECT_JOINTS)}
S = {name: i for i, name in enumerate(SMPL_JOINTS)}


def _source(root: Path, frames: int = 2, **options: str) -> SurreactSource:
    return SurreactSource(root, BuildConfig(frames=frames, options=tuple(sorted(options.items()))))


def _load_only(source: SurreactSource, split: str = "train"):
    items = list(source.items(split))
    assert len(items) == 1
    return source.load(items[0])


def _spread_joints(t: int) -> np.ndarray:
    """SMPL joint i at world (0.01 * i, 0, 1): distinct x per joint, all at the camera's height."""
    joints = np.zeros((3, 24, t), np.float32)
    joints[0] = (0.01 * np.arange(24))[:, None]
    joints[2] = 1.0
    return joints


def test_release_layout_lists_clips_per_split_and_loads_without_depth(tmp_path: Path) -> None:
    write_surreact_clip(tmp_path, "train", "S001C001P001R001A001", view=0)
    write_surreact_clip(tmp_path, "train", "S001C001P001R001A001", view=45)
    write_surreact_clip(tmp_path, "test", "S001C002P001R001A001", view=90)
    source = _source(tmp_path)
    train = ["S001C001P001R001A001_v000_r00", "S001C001P001R001A001_v045_r00"]
    assert [i.id for i in source.items("train")] == train
    assert [i.id for i in source.items("test")] == ["S001C002P001R001A001_v090_r00"]
    sample = source.load(next(iter(source.items("train"))))
    assert set(sample.labels) == {"segm.npy", "pose3d.npy"}  # public release: no _depth.mat, no depth
    assert sample.video.shape == (2, 24, 32, 3) and sample.fps == pytest.approx(30.0)
    assert sample.labels["pose3d.npy"].shape == (2, 25, 3) and sample.labels["pose3d.npy"].dtype == np.float32
    assert sample.extra["segm_space"] == "unified" and sample.extra["view"] == 0


def test_uestc_names_keep_the_avi_inside_the_stem(tmp_path: Path) -> None:
    # Released UESTC layout: train/a0_d1_p001_c1_color.avi/a0_d1_p001_c1_color.avi_v045_r00.mp4 with
    # its _info.mat / _segm.mat beside it. Path.with_suffix would look for a0_d1_p001_c1_color.mp4.
    stem = write_surreact_clip(tmp_path, "train", "a0_d1_p001_c1_color.avi", view=45, t=3)
    assert Path(f"{stem}.mp4").name == "a0_d1_p001_c1_color.avi_v045_r00.mp4"
    sample = _load_only(_source(tmp_path))
    assert sample.video.shape == (2, 24, 32, 3) and sample.extra["view"] == 45
    assert set(sample.labels) == {"segm.npy", "pose3d.npy"}


def test_options_are_checked_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="surreact_depth must be one of planar, radial, got 'bogus'"):
        _source(tmp_path, surreact_depth="bogus")
    with pytest.raises(SourceError, match="source surreact has no option 'surreact_dpth'"):
        _source(tmp_path, surreact_dpth="radial")


def test_missing_split_folder_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no train/"):
        list(_source(tmp_path).items("train"))


def test_body_part_segmentation_maps_into_the_unified_space(tmp_path: Path) -> None:
    write_surreact_clip(tmp_path, segm_value=3)
    segm = _load_only(_source(tmp_path)).labels["segm.npy"]
    space = load_label_space("unified")
    assert segm.dtype == np.uint16 and SEGM_IGNORE not in segm
    assert (segm[:, :12] == space.index("background")).all()
    assert (segm[:, 12:] == space.index("smpl/rightUpLeg")).all()  # Blender index 3 = rightUpLeg


def test_depth_is_used_when_the_generator_wrote_it(tmp_path: Path) -> None:
    write_surreact_clip(tmp_path, t=4, depth=True)
    sample = _load_only(_source(tmp_path, frames=4))
    depth = sample.labels["depth.npy"]
    assert depth.dtype == np.float16 and depth.shape == (4, 24, 32)
    assert np.isnan(depth[:, 0]).all()  # Blender background (1e10) is invalid
    np.testing.assert_array_equal(depth[:, 1:, :].reshape(4, -1)[:, 0], [2, 3, 4, 5])


def test_long_clip_is_sampled_evenly_and_frames_follow(tmp_path: Path) -> None:
    write_surreact_clip(tmp_path, t=8)
    sample = _load_only(_source(tmp_path, frames=4))
    picked = sample.frame_indices  # train mode: one random frame in each of 4 equal segments
    assert [k // 2 for k in picked] == [0, 1, 2, 3] and sample.extra["padded_frames"] == 0
    grey = [10 * k + 5 for k in picked]
    np.testing.assert_allclose(sample.video[:, 5, 5, 0], grey, atol=3)  # grey = 10 t + 5: frames follow


def test_short_clip_is_padded_with_its_last_frame(tmp_path: Path) -> None:
    write_surreact_clip(tmp_path, t=3)
    sample = _load_only(_source(tmp_path, frames=5))
    assert sample.frame_indices == [0, 1, 2, 2, 2] and sample.extra["padded_frames"] == 2
    assert sample.video.shape[0] == 5 and sample.labels["segm.npy"].shape[0] == 5


def test_world_joints_reach_the_opencv_camera_frame_front_view(tmp_path: Path) -> None:
    # view 0, height 1 m: the camera sits at (0, 5, 1) looking at the origin, without tilt.
    write_surreact_clip(tmp_path, view=0, t=2, joints3d=_spread_joints(2), cam_dist=5.0, cam_height=1.0)
    pose = _load_only(_source(tmp_path)).labels["pose3d.npy"]
    np.testing.assert_allclose(pose[0, K["spine_base"]], [0.0, 0.0, 5.0], atol=1e-5)
    np.testing.assert_allclose(pose[0, K["hip_left"]], [0.01 * S["l_hip"], 0.0, 5.0], atol=1e-5)


def test_world_joints_reach_the_opencv_camera_frame_side_view(tmp_path: Path) -> None:
    # view 90: the camera sits at (5, 0, 1) looking down world -x, so its right (+x) is world -y.
    joints = np.zeros((3, 24, 2), np.float32)
    joints[2] = 1.0
    joints[1, S["head"]] = -0.4
    write_surreact_clip(tmp_path, view=90, t=2, joints3d=joints)
    pose = _load_only(_source(tmp_path)).labels["pose3d.npy"]
    np.testing.assert_allclose(pose[1, K["head"]], [0.4, 0.0, 5.0], atol=1e-5)
    np.testing.assert_allclose(pose[1, K["spine_base"]], [0.0, 0.0, 5.0], atol=1e-5)


def test_smpl_to_kinect_order_left_right_and_missing_joints(tmp_path: Path) -> None:
    write_surreact_clip(tmp_path, view=0, t=2, joints3d=_spread_joints(2))
    pose = _load_only(_source(tmp_path)).labels["pose3d.npy"][0]
    x = {name: pose[K[name], 0] for name in KINECT_JOINTS}
    # SURREACT's kinect2smpl (training/datasets/ntu.py): Kinect hand <-> SMPL wrist, Kinect hand
    # tip <-> SMPL hand; Kinect's wrists and thumbs have no SMPL joint.
    expected = {
        "spine_base": "pelvis", "spine_mid": "spine1", "neck": "neck", "head": "head",
        "spine_shoulder": "spine3", "shoulder_left": "l_shoulder", "hand_left": "l_wrist",
        "handtip_left": "l_hand",
        "hip_left": "l_hip", "foot_left": "l_foot", "shoulder_right": "r_shoulder", "elbow_right": "r_elbow",
        "hand_right": "r_wrist", "handtip_right": "r_hand", "knee_right": "r_knee", "ankle_right": "r_ankle",
    }  # fmt: skip
    for kinect, smpl in expected.items():
        assert x[kinect] == pytest.approx(0.01 * S[smpl], abs=1e-5), kinect
    for missing in ("wrist_left", "thumb_left", "wrist_right", "thumb_right"):
        assert np.isnan(pose[K[missing]]).all()
    assert np.isfinite(pose).all(axis=1).sum() == 21


def test_known_pose_keeps_anatomical_left_on_the_left() -> None:
    # SMPL's rest pose faces +z with y up, so its anatomical left is +x (l_hip x > 0). A camera in
    # front of it (OpenCV: x right, y down, z forward = world -z) sees the person's left on the
    # image's right. Kinect labels are the person's own left/right too, so hip_left must be at +x.
    # (SURREACT's loader pairs SMPL left with Kinect right only together with negating z, i.e. a
    # mirror image of the skeleton; without the mirror, left stays left.)
    rest = np.zeros((1, 24, 3), np.float32)
    for name, x in (
        ("l_hip", 0.06),
        ("r_hip", -0.06),
        ("l_wrist", 0.7),
        ("r_wrist", -0.7),
        ("l_hand", 0.78),
        ("r_hand", -0.78),
    ):
        rest[0, S[name], 0] = x
    camera = rest * np.array([1.0, -1.0, -1.0], np.float32) + np.array([0.0, 0.0, 3.0], np.float32)
    pose = smpl_to_kinect(camera)[0]
    assert pose[K["hip_left"], 0] > 0 > pose[K["hip_right"], 0]
    assert pose[K["handtip_left"], 0] > pose[K["hand_left"], 0] > 0  # the tip lies beyond the wrist
    mirrored = smpl_to_kinect(camera * np.array([-1.0, 1.0, 1.0], np.float32), swap_left_right=True)[0]
    np.testing.assert_allclose(mirrored[K["hip_left"], 0], -pose[K["hip_right"], 0])


def test_swap_option_pairs_smpl_left_with_kinect_right(tmp_path: Path) -> None:
    write_surreact_clip(tmp_path, view=0, t=2, joints3d=_spread_joints(2))
    pose = _load_only(_source(tmp_path, surreact_swap_lr="1")).labels["pose3d.npy"][0]
    assert pose[K["hip_left"], 0] == pytest.approx(0.01 * S["r_hip"], abs=1e-5)
    assert pose[K["hand_right"], 0] == pytest.approx(0.01 * S["l_wrist"], abs=1e-5)


def test_multi_person_joints_take_the_first_person(tmp_path: Path) -> None:
    joints = np.stack([_spread_joints(2), _spread_joints(2) + 1.0])
    write_surreact_clip(tmp_path, view=0, t=2, joints3d=joints)
    pose = _load_only(_source(tmp_path)).labels["pose3d.npy"]
    np.testing.assert_allclose(pose[0, K["spine_base"]], [0.0, 0.0, 5.0], atol=1e-5)


def test_joints2d_consistency_is_reported(tmp_path: Path) -> None:
    joints = _spread_joints(2)
    joints[2] += (0.02 * np.arange(24))[:, None]  # joints at different heights, so y is checked too
    # joints2D as Blender writes them for our camera: y measured from the bottom of the 24-px frame.
    focal = 600.0 * 24 / 240
    camera_x = 0.01 * np.arange(24)
    camera_y = joints[2, :, 0] - 1.0  # generator camera at view 0: OpenCV y = world z - camera height
    u = focal * camera_x / 5.0 + 16
    v = focal * camera_y / 5.0 + 12
    joints2d = np.stack([np.repeat(u[:, None], 2, 1), np.repeat((24 - v)[:, None], 2, 1)])
    write_surreact_clip(tmp_path, view=0, t=2, joints3d=joints, joints2d=joints2d)
    extra = _load_only(_source(tmp_path)).extra
    assert extra["joints2d_y_origin"] == "bottom" and extra["pose_reprojection_px"] < 0.01


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("segm_short", "frame counts disagree: video 4, info 4, segm 3"),
        ("no_segm", "missing file S001C001P001R001A001_v000_r00_segm.mat"),
        ("bad_video", r"_v000_r00\.mp4: cannot decode"),
        ("bad_segm_value", "part index 30 > 24"),
    ],
)
def test_bad_clips_are_quarantined_with_their_reason(tmp_path: Path, damage: str, reason: str) -> None:
    stem = write_surreact_clip(
        tmp_path,
        t=4,
        segm_frames=3 if damage == "segm_short" else None,
        segm_value=30 if damage == "bad_segm_value" else 3,
    )
    if damage == "no_segm":
        Path(f"{stem}_segm.mat").unlink()
    elif damage == "bad_video":
        Path(f"{stem}.mp4").write_bytes(b"not a video at all")
    with pytest.raises(Quarantine, match=reason):
        _load_only(_source(tmp_path, frames=4))

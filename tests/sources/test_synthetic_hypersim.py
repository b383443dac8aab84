"""hypersim adapter: layout, split CSV, and each conversion checked on values computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_fixtures import (
    write_hypersim,
    write_hypersim_cameras,
    write_hypersim_frame,
    write_hypersim_split,
)

from pipeline.config import BuildConfig
from pipeline.geometry import frame_geometry, resize_map
from pipeline.labelspace import load_label_space
from pipeline.schema import SEGM_IGNORE
from pipeline.sources.base import Quarantine, SourceError
from pipeline.sources.hypersim import STANDARD_M_CAM_FROM_UV, HypersimSource, camera_rays, planar_ratio

H, W = 6, 8


def _source(root: Path, frames: int = 2, **options: str) -> HypersimSource:
    return HypersimSource(root, BuildConfig(frames=frames, options=tuple(sorted(options.items()))))


def _only(source: HypersimSource, split: str = "train"):
    items = list(source.items(split))
    assert len(items) == 1
    return items[0]


def _distance_of_plane(z: float, m: np.ndarray, height: int, width: int) -> np.ndarray:
    """Distance to the camera centre of each pixel's hit on the plane at planar depth z (by hand)."""
    u = np.linspace(-1 + 1 / width, 1 - 1 / width, width)
    v = np.linspace(-1 + 1 / height, 1 - 1 / height, height)[::-1]
    rays = np.stack([*np.meshgrid(u, v), np.ones((height, width))], -1) @ np.asarray(m).T
    return z * np.linalg.norm(rays, axis=-1) / -rays[..., 2]


def test_split_csv_decides_the_splits_and_a_trajectory_is_one_clip(tmp_path: Path) -> None:
    write_hypersim(
        tmp_path,
        {
            ("ai_001_001", "cam_00"): ("train", 3),
            ("ai_001_001", "cam_01"): ("val", 2),
            ("ai_002_001", "cam_00"): ("test", 2),
        },
    )
    source = _source(tmp_path, frames=4)
    assert [i.id for i in source.items("train")] == ["ai_001_001/cam_00"]
    assert [i.id for i in source.items("val")] == ["ai_001_001/cam_01"]
    assert [i.id for i in source.items("test")] == ["ai_002_001/cam_00"]
    sample = source.load(_only(source))
    assert sample.video.shape == (4, H, W, 3) and sample.video.dtype == np.uint8
    assert sample.frame_indices == [0, 1, 2, 2] and sample.extra["padded_frames"] == 1
    assert sample.labels["depth.npy"].shape == (4, H, W) and sample.labels["depth.npy"].dtype == np.float16
    assert sample.labels["normal.npy"].shape == (4, H, W, 3)
    assert sample.labels["segm.npy"].dtype == np.uint16
    assert sample.extra["segm_space"] == "unified"


def test_rows_outside_the_public_release_are_not_listed(tmp_path: Path) -> None:
    write_hypersim(tmp_path, {("ai_001_001", "cam_00"): ("train", 1)})
    # write_hypersim adds excluded rows for ai_999_999; give that scene files so only the CSV excludes it
    write_hypersim_frame(tmp_path, "ai_999_999", "cam_00", 0, H, W)
    assert [i.id for i in _source(tmp_path).items("train")] == ["ai_001_001/cam_00"]


def test_long_trajectory_is_sampled_evenly(tmp_path: Path) -> None:
    write_hypersim(tmp_path, {("ai_001_001", "cam_00"): ("train", 8)})
    source = _source(tmp_path, frames=4)
    picked = source.load(_only(source)).frame_indices  # train mode: one random frame of each pair
    assert [k // 2 for k in picked] == [0, 1, 2, 3] and picked != [1, 3, 5, 7]


def test_missing_split_csv_is_a_source_error(tmp_path: Path) -> None:
    write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 0, H, W)
    with pytest.raises(SourceError, match="metadata_images_split_scene_v1.csv"):
        list(_source(tmp_path).items("train"))


def test_planar_depth_of_a_fronto_parallel_plane_standard_intrinsics(tmp_path: Path) -> None:
    distance = _distance_of_plane(2.5, np.asarray(STANDARD_M_CAM_FROM_UV), H, W).astype(np.float16)
    assert distance.max() > 2.9  # the corners really are farther than the plane: a conversion is needed
    write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 0, H, W, distance=distance)
    write_hypersim_split(tmp_path, [("ai_001_001", "cam_00", 0, "train")])
    source = _source(tmp_path, frames=1)
    depth = source.load(_only(source)).labels["depth.npy"].astype(np.float32)
    np.testing.assert_allclose(depth, 2.5, atol=3e-3)


def test_planar_depth_uses_the_scenes_own_tilt_shift_camera(tmp_path: Path) -> None:
    m = np.array([[0.7, 0.0, 0.1], [0.0, 0.5, -0.2], [0.0, 0.0, -1.0]])
    distance = _distance_of_plane(4.0, m, H, W).astype(np.float16)
    write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 0, H, W, distance=distance)
    write_hypersim_split(tmp_path, [("ai_001_001", "cam_00", 0, "train")])
    write_hypersim_cameras(tmp_path, {"ai_001_001": m})
    source = _source(tmp_path, frames=1)
    sample = source.load(_only(source))
    np.testing.assert_allclose(sample.labels["depth.npy"].astype(np.float32), 4.0, atol=5e-3)
    assert sample.extra["intrinsics"] == "scene"
    np.testing.assert_allclose(sample.extra["m_cam_from_uv"], m)  # recorded per scene in meta.json


def test_standard_ratio_matches_the_886_81_pixel_focal_snippet() -> None:
    # The official fixed-focal conversion (ml-hypersim#9): focal 886.81 px at 1024x768.
    x = np.linspace(-511.5, 511.5, 1024)[None, :].repeat(768, 0)
    y = np.linspace(-383.5, 383.5, 768)[:, None].repeat(1024, 1)
    expected = 886.81 / np.sqrt(x**2 + y**2 + 886.81**2)
    ratio = planar_ratio(camera_rays(np.asarray(STANDARD_M_CAM_FROM_UV), 768, 1024))
    np.testing.assert_allclose(ratio, expected, rtol=1e-4)


def test_normals_flip_from_opengl_to_opencv_and_are_renormalised(tmp_path: Path) -> None:
    normal = np.zeros((H, W, 3), np.float16)
    normal[..., 2] = 1.0  # OpenGL +z points backward, towards the viewer
    normal[H - 1, 1] = (0, 1, 0)  # OpenGL up, a floor in the lower half of the image: faces the camera
    normal[0, 2] = (2, 0, 1)  # not unit length (and facing the camera: it is on the image's left)
    normal[0, 3] = (0, 0, 0)  # degenerate (Hypersim issue #26)
    normal[0, 0] = np.nan
    write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 0, H, W, normal=normal)
    write_hypersim_split(tmp_path, [("ai_001_001", "cam_00", 0, "train")])
    source = _source(tmp_path, frames=1)
    sample = source.load(_only(source))
    out = sample.labels["normal.npy"][0].astype(np.float32)
    np.testing.assert_array_equal(out[3, 3], [0, 0, -1])  # towards the viewer is -z in OpenCV
    np.testing.assert_array_equal(out[H - 1, 1], [0, -1, 0])  # up is -y in OpenCV
    np.testing.assert_allclose(out[0, 2], np.array([2, 0, -1]) / np.sqrt(5), atol=1e-3)
    assert np.isnan(out[0, 3]).all() and np.isnan(out[0, 0]).all()
    # (0, 0) has no geometry (NaN depth), so only the zero normal counts as invalid
    assert sample.extra["normals_invalid"] == 1 and sample.extra["normals_flipped"] == 0


def test_normals_facing_away_from_the_camera_are_flipped_and_counted(tmp_path: Path) -> None:
    # ml-hypersim#26: some normals point into the surface. Seen along its view ray a visible surface
    # faces the camera (n . ray < 0); one that faces away is flipped, and meta.json counts it.
    normal = np.zeros((H, W, 3), np.float16)
    normal[..., 2] = 1.0
    normal[2, 3] = (0, 0, -1)  # pointing away from the viewer
    normal[0, 4] = (0, 1, 0)  # "up" at the top of the image: a ceiling seen from its back
    write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 0, H, W, normal=normal)
    write_hypersim_split(tmp_path, [("ai_001_001", "cam_00", 0, "train")])
    source = _source(tmp_path, frames=1)
    sample = source.load(_only(source))
    out = sample.labels["normal.npy"][0].astype(np.float32)
    np.testing.assert_array_equal(out[2, 3], [0, 0, -1])  # now towards the viewer, like its neighbours
    np.testing.assert_array_equal(out[0, 4], [0, 1, 0])  # flipped to OpenGL down = OpenCV +y
    assert sample.extra["normals_flipped"] == 2 and sample.extra["normals_invalid"] == 0


def test_camera_csv_is_required_and_names_where_it_comes_from(tmp_path: Path) -> None:
    # The usual download: scene zips + the split CSV, without metadata_camera_parameters.csv.
    write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 0, H, W)
    write_hypersim_split(tmp_path, [("ai_001_001", "cam_00", 0, "train")], cameras=False)
    with pytest.raises(
        SourceError, match=r"metadata_camera_parameters.csv not found .*contrib/mikeroberts3000/"
    ):
        list(_source(tmp_path).items("train"))
    source = _source(tmp_path, frames=1, intrinsics="standard")  # on purpose: the standard camera
    sample = source.load(_only(source))
    assert sample.extra["intrinsics"] == "standard"
    np.testing.assert_allclose(sample.extra["m_cam_from_uv"], STANDARD_M_CAM_FROM_UV)


def test_scene_missing_from_the_camera_csv_is_quarantined_without_loading(tmp_path: Path) -> None:
    write_hypersim(tmp_path, {("ai_001_001", "cam_00"): ("train", 1), ("ai_002_001", "cam_00"): ("train", 1)})
    write_hypersim_cameras(tmp_path, {"ai_001_001": STANDARD_M_CAM_FROM_UV})
    items = list(_source(tmp_path).items("train"))
    assert [i.problem for i in items] == [
        None,
        "scene ai_002_001 has no usable row in metadata_camera_parameters.csv",
    ]


def test_tone_mapping_of_a_known_colour(tmp_path: Path) -> None:
    color = np.full((H, W, 3), 0.5, np.float16)
    color[2, 2] = (1.0, 0.0, 0.0)
    write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 0, H, W, color=color)
    write_hypersim_split(tmp_path, [("ai_001_001", "cam_00", 0, "train")])
    source = _source(tmp_path, frames=1)
    frame = source.load(_only(source)).video[0]
    # 90th-percentile brightness 0.5 -> scale 0.8**2.2 / 0.5, so grey maps to 0.8 -> 204.
    assert (frame[3, 3] == 204).all()
    # red: (scale * 1) ** (1/2.2) = 0.8 * 2 ** (1/2.2) > 1 -> clipped to 255; G and B stay 0.
    assert tuple(frame[2, 2]) == (255, 0, 0)


def test_nyu40_semantics_map_into_the_unified_space(tmp_path: Path) -> None:
    semantic = np.full((H, W), 1, np.int16)
    semantic[0, 0] = -1
    semantic[1, 1] = 40
    semantic[1, 2] = 31
    write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 0, H, W, semantic=semantic)
    write_hypersim_split(tmp_path, [("ai_001_001", "cam_00", 0, "train")])
    source = _source(tmp_path, frames=1)
    segm = source.load(_only(source)).labels["segm.npy"][0]
    space = load_label_space("unified")
    assert segm[0, 0] == SEGM_IGNORE
    assert segm[2, 2] == space.index("nyu40/wall")
    assert segm[1, 1] == space.index("nyu40/otherprop")
    assert segm[1, 2] == space.index("nyu40/person")


def test_nan_geometry_becomes_invalid(tmp_path: Path) -> None:
    write_hypersim(tmp_path, {("ai_001_001", "cam_00"): ("train", 1)})
    source = _source(tmp_path, frames=1)
    labels = _source(tmp_path, frames=1).load(_only(source)).labels
    assert np.isnan(labels["depth.npy"][0, 0, 0]) and np.isnan(labels["normal.npy"][0, 0, 0]).all()
    assert np.isfinite(labels["depth.npy"][0, 1:]).all()


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("truncate", "unreadable HDF5"),
        ("missing", "missing file frame.0001.semantic.hdf5"),
        ("nan_color", "NaN or inf in color"),
        ("bad_semantic", "semantic id outside"),
    ],
)
def test_bad_frames_are_quarantined_with_their_reason(tmp_path: Path, damage: str, reason: str) -> None:
    write_hypersim(tmp_path, {("ai_001_001", "cam_00"): ("train", 2)})
    files = write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 1, H, W)
    if damage == "truncate":
        data = files["depth"].read_bytes()
        files["depth"].write_bytes(data[: len(data) // 2])
    elif damage == "missing":
        files["semantic"].unlink()
    elif damage == "nan_color":
        color = np.ones((H, W, 3), np.float16)
        color[2, 3, 1] = np.nan
        write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 1, H, W, color=color)
    else:
        semantic = np.full((H, W), 41, np.int16)
        write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 1, H, W, semantic=semantic)
    source = _source(tmp_path, frames=2)
    with pytest.raises(Quarantine, match=reason):
        source.load(_only(source))


def test_skip_missing_option_drops_incomplete_frames(tmp_path: Path) -> None:
    write_hypersim(tmp_path, {("ai_001_001", "cam_00"): ("train", 3)})
    (tmp_path / "ai_001_001/images/scene_cam_00_geometry_hdf5/frame.0001.depth_meters.hdf5").unlink()
    source = _source(tmp_path, frames=2, hypersim_skip_missing="1")
    assert source.load(_only(source)).frame_indices == [0, 2]


def test_fingerprint_changes_when_a_used_file_changes(tmp_path: Path) -> None:
    write_hypersim(tmp_path, {("ai_001_001", "cam_00"): ("train", 1)})
    before = _only(_source(tmp_path)).fingerprint
    write_hypersim_frame(tmp_path, "ai_001_001", "cam_00", 0, H, W, seed=5, compression=4)
    assert _only(_source(tmp_path)).fingerprint != before


def test_converting_only_the_kept_label_pixels_gives_the_engines_result(tmp_path: Path) -> None:
    # Frames larger than the label maps: the adapter converts only the pixels the build keeps. The
    # result must equal converting every pixel and letting the engine resample.
    write_hypersim(tmp_path, {("ai_001_001", "cam_00"): ("train", 2)}, height=12, width=20)
    config = BuildConfig(frames=2, size=8, label_stride=1)
    full = HypersimSource(tmp_path, config)  # label grid 8x13 < 12x20: selects first
    every = HypersimSource(tmp_path, BuildConfig(frames=2, size=12, label_stride=1))
    selected, converted = full.load(_only(full)), every.load(_only(every))
    assert selected.dense_on_label_grid and not converted.dense_on_label_grid
    assert selected.labels["depth.npy"].shape == (2, 8, 13)
    geometry = frame_geometry(12, 20, config)
    for name in ("depth.npy", "normal.npy", "segm.npy"):
        np.testing.assert_array_equal(selected.labels[name], resize_map(converted.labels[name], geometry))

"""The procedural source: labels that are exact, determinism, and motion classes that move."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import BuildConfig
from pipeline.geometry import Window
from pipeline.labelspace import load_label_space
from pipeline.sources import procedural
from pipeline.sources.procedural import (
    ACTIONS,
    FOCAL,
    GROUND,
    PERSON,
    Clip,
    ProceduralSource,
    Raster,
    frame_times,
    render,
    render_clip,
)

SIZE = 48


@pytest.fixture(scope="module")
def clip_and_sample():
    clip = Clip(rng_seed=1234, action=8, frames=3)
    raster = Raster(SIZE, SIZE)
    return clip, render_clip(clip, raster, raster, times=[0.0, 0.5, 1.0])


def camera_at(clip: Clip, t: float):
    return clip.scene_at(clip.layout(), t)


def pixel_rays_cam() -> np.ndarray:
    centres = (np.arange(SIZE) + 0.5 - SIZE / 2) / (FOCAL * SIZE)
    x, y = np.meshgrid(centres, centres)
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def test_ground_depth_and_normals_match_the_analytic_plane(clip_and_sample) -> None:
    clip, sample = clip_and_sample
    camera, _, _ = camera_at(clip, 0.0)
    ground = sample.labels["segm.npy"][0] == GROUND
    rays_world = pixel_rays_cam() @ camera.rotation
    expected_depth = -camera.position[1] / rays_world[..., 1]  # ray parameter = planar depth
    depth = sample.labels["depth.npy"][0].astype(np.float64)
    np.testing.assert_allclose(depth[ground], expected_depth[ground], rtol=2e-3)  # float16 storage
    up_in_camera = camera.rotation @ np.array([0.0, 1.0, 0.0])
    assert up_in_camera[1] < 0, "world up points to image-up, which is -y in the OpenCV frame"
    normals = sample.labels["normal.npy"][0].astype(np.float64)
    np.testing.assert_allclose(
        normals[ground], np.broadcast_to(up_in_camera, normals[ground].shape), atol=2e-3
    )


def test_normals_are_unit_and_sky_is_invalid(clip_and_sample) -> None:
    _, sample = clip_and_sample
    normals = sample.labels["normal.npy"].astype(np.float64)
    sky = sample.labels["segm.npy"] == 0
    assert sky.any() and np.isnan(normals[sky]).all() and np.isnan(sample.labels["depth.npy"][sky]).all()
    np.testing.assert_allclose(np.linalg.norm(normals[~sky], axis=-1), 1.0, atol=2e-3)


def test_pose_is_in_the_camera_frame_and_projects_onto_the_person(clip_and_sample) -> None:
    clip, sample = clip_and_sample
    pose = sample.labels["pose3d.npy"]
    camera, _, joints_world = camera_at(clip, 0.0)
    np.testing.assert_allclose(pose[0], camera.to_camera(joints_world), atol=1e-5)
    head = pose[0, 3]  # Kinect V2 joint 3 = head, a sphere of radius 0.11 m: its centre pixel is person
    col, row = (head[:2] / head[2] * FOCAL * SIZE + SIZE / 2).astype(int)
    assert sample.labels["segm.npy"][0, row, col] == PERSON
    assert pose[0, 3, 1] < pose[0, 0, 1], "head above spine base: smaller y in the OpenCV frame"


def test_person_box_is_the_bounding_box_of_person_pixels(clip_and_sample) -> None:
    _, sample = clip_and_sample
    for t in range(3):
        rows, cols = np.nonzero(sample.labels["segm.npy"][t] == PERSON)
        slot = list(sample.labels["boxes_cls.npy"][t]).index(PERSON)
        expected = [cols.min() / SIZE, rows.min() / SIZE, (cols.max() + 1) / SIZE, (rows.max() + 1) / SIZE]
        np.testing.assert_allclose(sample.labels["boxes.npy"][t, slot], expected)


def test_raise_arms_lifts_the_hands(clip_and_sample) -> None:
    _, sample = clip_and_sample
    pose = sample.labels["pose3d.npy"]
    hand_left = 7
    assert pose[-1, hand_left, 1] < pose[0, hand_left, 1] - 0.5  # raised by more than half a metre


def _shift_in_first_view(action: int, point_of) -> float:
    """How far `point_of(layout, camera, primitives)` moves along the first frame's camera x axis."""
    clip = Clip(rng_seed=7, action=action, frames=2)
    layout = clip.layout()
    first, _, _ = clip.scene_at(layout, 0.0)
    xs = [first.to_camera(point_of(layout, *clip.scene_at(layout, t)[:2])[None])[0, 0] for t in (0.0, 1.0)]
    return xs[1] - xs[0]


def test_sliding_left_and_right_move_the_mover_in_opposite_directions() -> None:
    def mover(layout, camera, primitives):
        return (primitives[0] if layout["mover"] == 0 else primitives[len(layout["spheres"])]).centre

    assert _shift_in_first_view(0, mover) < -0.3 and _shift_in_first_view(1, mover) > 0.3


def test_orbiting_left_and_right_move_the_camera_to_its_left_and_right() -> None:
    # The mover sits near the point every camera looks at, so an orbit shows as the camera travelling.
    def camera_position(layout, camera, primitives):
        return camera.position

    assert _shift_in_first_view(6, camera_position) < -1.0 and _shift_in_first_view(7, camera_position) > 1.0


def test_items_are_deterministic_balanced_and_seeded() -> None:
    config = BuildConfig(frames=2, size=16, label_stride=4, num_samples=20)
    source = ProceduralSource(None, config)
    items = list(source.items("train"))
    assert len(items) == 20 and len(list(source.items("val"))) == len(ACTIONS)
    assert [item.payload["action"] for item in items[:10]] == list(range(10))
    again = ProceduralSource(None, config).load(items[4])
    np.testing.assert_array_equal(source.load(items[4]).video, again.video)
    other_seed = ProceduralSource(None, BuildConfig(frames=2, size=16, label_stride=4, seed=1))
    assert not np.array_equal(other_seed.load(next(other_seed.items("train"))).video, again.video)


def test_label_space_is_registered_under_manifests() -> None:
    classes = load_label_space("procedural").classes
    assert classes[GROUND] == "ground" and classes[PERSON] == "person" and len(classes) == 5


def test_far_ground_is_sky_so_float16_depth_never_overflows() -> None:
    # train-000312 of seed 0 once looked at the horizon: ground 70 km away overflowed float16 to inf.
    source = ProceduralSource(None, BuildConfig(frames=8, size=64, label_stride=4, num_samples=320))
    item = next(item for item in source.items("train") if item.id == "train-000312")
    depth = source.load(item).labels["depth.npy"]
    assert not np.isinf(depth).any()
    assert np.nanmax(depth.astype(np.float32)) <= 100.0


def test_a_wide_frame_and_a_window_of_it_render_the_same_scene() -> None:
    clip = Clip(rng_seed=5, action=0, frames=1)
    camera, primitives, _ = clip.scene_at(clip.layout(), 0.5)
    wide = render(camera, primitives, Raster(20, 40, aspect=2.0))
    right_half = render(camera, primitives, Raster(20, 20, aspect=2.0, window=Window(0.0, 0.5, 1.0, 0.5)))
    np.testing.assert_array_equal(right_half.segm, wide.segm[:, 20:])
    np.testing.assert_allclose(right_half.depth, wide.depth[:, 20:])


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_screen_rect_culling_never_drops_a_hit(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each primitive is ray cast only inside its projected rect; casting every primitive on every pixel
    # must give the same frame, else the rects cut objects.
    clip = Clip(rng_seed=seed, action=seed % len(ACTIONS), frames=2)
    raster = Raster(24, 32, aspect=32 / 24)
    culled = [render(*clip.scene_at(clip.layout(), t)[:2], raster) for t in (0.0, 1.0)]
    everywhere = (slice(0, raster.rows), slice(0, raster.cols))
    monkeypatch.setattr(
        procedural, "screen_rects", lambda camera, primitives, raster: [everywhere] * len(primitives)
    )
    for t, frame in zip((0.0, 1.0), culled, strict=True):
        brute = render(*clip.scene_at(clip.layout(), t)[:2], raster)
        np.testing.assert_array_equal(frame.instance, brute.instance)
        np.testing.assert_array_equal(frame.segm, brute.segm)
        np.testing.assert_allclose(frame.depth, brute.depth)


def test_the_rendered_frame_has_the_configured_aspect_and_short_side() -> None:
    source = ProceduralSource(None, BuildConfig(frames=2, size=16, label_stride=4, num_samples=2))
    sample = source.load(next(iter(source.items("val"))))
    assert sample.video.shape == (2, 16, 21, 3)  # --option aspect default 4:3
    assert sample.labels["depth.npy"].shape == (2, 4, 5)


def test_train_views_sample_other_times_and_eval_takes_segment_centres() -> None:
    assert frame_times(4) == [0.125, 0.375, 0.625, 0.875]
    rng = np.random.default_rng(0)
    jittered = frame_times(4, rng)
    assert jittered != frame_times(4) and all(k / 4 <= t < (k + 1) / 4 for k, t in enumerate(jittered))


@pytest.mark.parametrize("seed", range(6))
def test_the_mover_is_the_subject_near_the_scene_centre(seed: int) -> None:
    layout = Clip(rng_seed=seed, action=0, frames=2).layout()
    moving = layout["spheres"][0] if layout["mover"] == 0 else layout["boxes"][0]
    assert np.abs(moving[0][[0, 2]]).max() <= 0.3  # within 0.3 m of the point every camera looks at
    size = moving[1] if layout["mover"] == 0 else moving[1].min()  # radius or smallest half extent
    assert size >= (0.45 if layout["mover"] == 0 else 0.35)  # larger than any distractor may be drawn

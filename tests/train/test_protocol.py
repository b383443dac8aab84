"""PySlowFast's train/test protocol on stored full frames (issue 9): windows, label alignment, views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.build import BuildRequest, build_source
from pipeline.config import BuildConfig
from pipeline.geometry import Window
from pipeline.sources.procedural import Clip, Raster, label_maps, render, shade
from train.augment import Protocol, SquareWindow, apply_window, eval_view, train_window, uniform_crop_window
from train.data import Geometry, MixedBatches, StreamSpec
from train.plan import StreamPlan, view_matrix
from train.sources import open_source

PROTOCOL = Protocol(crop_size=32, train_scale=(40, 56), flip=False, label_stride=4)


def test_three_test_crops_are_left_centre_right_and_cover_the_frame() -> None:
    hw = (30, 70)
    views = [uniform_crop_window(hw, view, 3) for view in range(3)]
    assert [w.left for w in views] == [0, 20, 40] and {w.top for w in views} == {0}
    assert {w.side for w in views} == {30}  # the short side, scaled to the crop size afterwards
    covered = np.zeros(70, bool)
    for window in views:
        covered[window.left : window.left + window.side] = True
    assert covered.all()
    tall = [uniform_crop_window((70, 30), view, 3) for view in range(3)]
    assert [w.top for w in tall] == [0, 20, 40] and {w.left for w in tall} == {0}
    assert uniform_crop_window(hw, 0, 1) == views[1]  # one view: the centre


def test_eval_view_resamples_the_window_to_the_crop_size() -> None:
    video = np.broadcast_to(np.arange(70, dtype=np.uint8)[None, None, :, None], (2, 30, 70, 3)).copy()
    left, right = (eval_view({"video": video}, view, 3, PROTOCOL)["video"] for view in (0, 2))
    assert left.shape == right.shape == (2, 32, 32, 3)
    assert left.max() < 31 and right.min() > 39  # the left crop sees columns 0..29, the right 40..69


def test_train_windows_follow_the_scale_range_and_stay_inside_the_frame() -> None:
    rng = np.random.default_rng(0)
    hw = (48, 64)
    for _ in range(200):
        window = train_window(hw, PROTOCOL, rng)
        # short side scaled to s in [40, 56], a 32 crop: the window is 32 * 48 / s stored pixels
        assert round(32 * 48 / 56) <= window.side <= round(32 * 48 / 40)
        assert 0 <= window.top <= 48 - window.side and 0 <= window.left <= 64 - window.side


def _render_window(clip: Clip, aspect: float, window: Window, pixels: int, cells: int):
    camera, primitives, _ = clip.scene_at(clip.layout(), 0.5)
    raster = Raster(pixels, pixels, aspect, window)
    image = shade(render(camera, primitives, raster), raster)
    grid = render(camera, primitives, Raster(cells, cells, aspect, window))
    return image, label_maps(camera, grid)


def test_a_random_crop_keeps_labels_aligned_with_the_pixels() -> None:
    """Crop a rendered full frame with the trainer's window, then render that window directly: the
    cropped clip and its cropped labels must match the direct render (up to resampling)."""
    clip = Clip(rng_seed=11, action=0, frames=1)
    height, width, stride = 96, 128, 4
    aspect = width / height
    camera, primitives, _ = clip.scene_at(clip.layout(), 0.5)
    frame = render(camera, primitives, Raster(height, width, aspect))
    cells = render(camera, primitives, Raster(height // stride, width // stride, aspect))
    depth, normal, segm = label_maps(camera, cells)
    sample = {
        "video": shade(frame, Raster(height, width, aspect))[None],
        "depth.npy": depth[None].astype(np.float16),
        "normal.npy": normal[None].astype(np.float16),
        "segm.npy": segm[None],
    }
    protocol = Protocol(crop_size=64, train_scale=(80, 100), flip=False, label_stride=stride)
    for seed in range(3):
        window = train_window((height, width), protocol, np.random.default_rng(seed))
        cropped = apply_window(sample, window, protocol)
        view = Window(window.top / height, window.left / width, window.side / height, window.side / width)
        image, (want_depth, want_normal, want_segm) = _render_window(clip, aspect, view, 64, 16)
        assert np.abs(cropped["video"][0].astype(float) - image).mean() < 12  # bilinear vs direct
        agree = cropped["segm.npy"][0] == want_segm
        assert agree.mean() > 0.9, f"segm agrees on {agree.mean():.0%} of the cells"
        same = agree & np.isfinite(want_depth)
        relative = np.abs(cropped["depth.npy"][0][same] / want_depth[same] - 1)
        assert np.median(relative) < 0.05 and np.quantile(relative, 0.9) < 0.25  # steep near the horizon
        cos = (cropped["normal.npy"][0].astype(float) * want_normal).sum(-1)[same]
        assert np.median(cos) > 0.99


def test_a_window_on_label_cell_boundaries_gives_exactly_the_direct_render() -> None:
    """When the window's edges fall on label-cell boundaries, nearest sampling picks exactly the cells
    a direct render of the window computes: any off-by-one or half-cell shift fails this."""
    clip = Clip(rng_seed=3, action=2, frames=1)
    height, width, stride = 96, 128, 4
    aspect = width / height
    camera, primitives, _ = clip.scene_at(clip.layout(), 0.5)
    cells = render(camera, primitives, Raster(height // stride, width // stride, aspect))
    depth, normal, segm = label_maps(camera, cells)
    sample = {"video": np.zeros((1, height, width, 3), np.uint8), "segm.npy": segm[None]}
    sample["depth.npy"] = depth[None]
    protocol = Protocol(crop_size=64, train_scale=(96, 96), flip=False, label_stride=stride)
    window = SquareWindow(top=8, left=36, side=64)
    cropped = apply_window(sample, window, protocol)
    view = Window(8 / height, 36 / width, 64 / height, 64 / width)
    _, (want_depth, _, want_segm) = _render_window(clip, aspect, view, 8, 16)
    np.testing.assert_array_equal(cropped["segm.npy"][0], want_segm)
    np.testing.assert_allclose(cropped["depth.npy"][0], want_depth, rtol=1e-9)


def test_boxes_follow_the_window_and_vanish_when_cut_away() -> None:
    sample = {
        "video": np.zeros((1, 40, 80, 3), np.uint8),
        "boxes.npy": np.array([[[0.5, 0.25, 0.75, 0.75], [0.0, 0.0, 0.1, 0.1]]], np.float32),
        "boxes_cls.npy": np.array([[2, 3]], np.int16),
    }
    out = apply_window(sample, SquareWindow(top=0, left=40, side=40), PROTOCOL)
    np.testing.assert_allclose(out["boxes.npy"][0, 0], [0.0, 0.25, 0.5, 0.75])
    assert np.isnan(out["boxes.npy"][0, 1]).all() and out["boxes_cls.npy"][0, 1] == -1


def test_view_matrix_groups_views_and_repeats_a_missing_one() -> None:
    group = np.array(["b", "a", "b", "a", "c"], dtype=object)
    view = np.array([1, 1, 0, 0, 0])
    np.testing.assert_array_equal(view_matrix(group, view), [[2, 0], [3, 1], [4, 4]])


def test_an_epoch_reads_each_video_once_and_epochs_walk_through_its_views() -> None:
    views = np.arange(12).reshape(4, 3)  # 4 videos x 3 views
    shards = np.repeat(np.arange(2), 6)
    plan = StreamPlan((shards,), (1.0,), seed=0, stream_id=0, views=(views,))
    assert plan.epoch_length == 4
    seen = []
    for epoch in range(3):
        rows = plan.global_order(epoch)[1]
        assert sorted(rows // 3) == [0, 1, 2, 3]  # every video exactly once
        seen.append({int(r) // 3: int(r) % 3 for r in rows})
    for video in range(4):
        assert sorted(epoch[video] for epoch in seen) == [0, 1, 2]  # three epochs, three views


@pytest.fixture(scope="module")
def viewed_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("views")
    config = BuildConfig(frames=4, size=32, label_stride=4, num_samples=8, samples_per_shard=4, train_views=3)
    build_source(BuildRequest("procedural", out, config, workers=0, splits=["train"]))
    return out


def test_train_views_are_independent_samplings_of_one_video(viewed_build: Path) -> None:
    source = open_source(viewed_build, "procedural")
    table = source.split("train")
    matrix = table.view_matrix()
    assert matrix.shape == (8, 3)
    from pipeline.reader import decode_sample
    from train.data import read_span  # the trainer's own span reader

    first = [decode_sample("x", read_span(source, table, int(r))) for r in matrix[0]]
    assert {s["meta"]["view_group"] for s in first} == {first[0]["meta"]["view_group"]}
    assert [s["meta"]["view"] for s in first] == [0, 1, 2]
    assert not np.array_equal(first[0]["video"], first[1]["video"])  # other frame times, other pixels


def test_batches_are_identical_whatever_the_worker_count(viewed_build: Path) -> None:
    import torch

    from train.data import make_loader

    source = open_source(viewed_build, "procedural")
    table = source.split("train")
    plan = StreamPlan((table.shard,), (1.0,), seed=0, stream_id=0, views=(table.view_matrix(),))
    stream = StreamSpec("real", plan, [source], [table], 2, world=1, rank=0)
    geometry = Geometry(Protocol(24, (32, 40), True, 4), 8)
    runs = []
    for workers in (0, 2):
        batches = list(make_loader(MixedBatches([stream], 0, 6, geometry, seed=3), workers))
        runs.append(torch.cat([b["real"]["video"] for b in batches]))
    assert runs[0].shape == (12, 4, 24, 24, 3) and torch.equal(runs[0], runs[1])


def test_every_flip_the_schema_declares_has_its_transform() -> None:
    """The schema says how each label follows a flip (MemberSpec.flip); augment has one transform per kind."""
    from pipeline import schema
    from train.augment import FLIP_OF, FLIPS

    assert set(FLIPS) == set(schema.FLIPS) - {""}
    assert {FLIP_OF[n] for n in ("depth.npy", "normal.npy", "pose3d.npy", "boxes.npy")} == {
        "map", "directions", "joints", "boxes",
    }  # fmt: skip
    assert "boxes_cls.npy" not in FLIP_OF  # a slot's class does not change with the mirror

"""The loader's pieces: the per-rank plan, the mixing ratio, label-consistent flips, the collate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.schema import KINECT_JOINTS, TASK_BIT
from train.augment import Protocol, SquareWindow, apply_window, hflip
from train.data import Geometry, MixedBatches, StreamSpec, collate, merge
from train.plan import StreamPlan
from train.sources import open_source

UNEVEN = np.repeat(np.arange(4), [9, 2, 6, 1])  # 18 rows in shards of 9, 2, 6 and 1


@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
def test_every_rank_gets_the_same_count_over_uneven_shards(world: int) -> None:
    plan = StreamPlan((UNEVEN,), (1.0,), seed=0, stream_id=0, window=2)
    slices = [plan.rank_order(3, rank, world)[1] for rank in range(world)]
    assert {len(s) for s in slices} == {plan.per_rank(world)}
    assert set(np.concatenate(slices)) == set(range(len(UNEVEN)))  # padding repeats, never drops


def test_order_is_fixed_by_seed_and_epoch() -> None:
    plan = StreamPlan((UNEVEN,), (1.0,), seed=0, stream_id=0)
    again = StreamPlan((UNEVEN,), (1.0,), seed=0, stream_id=0)
    assert np.array_equal(plan.global_order(2)[1], again.global_order(2)[1])
    assert not np.array_equal(plan.global_order(2)[1], plan.global_order(3)[1])
    assert sorted(plan.global_order(2)[1]) == list(range(len(UNEVEN)))


def _stream(role: str, source, weights: tuple[float, ...], batch: int, stream_id: int) -> StreamSpec:
    tables = [source.split("train")] * len(weights)
    plan = StreamPlan(tuple(t.shard for t in tables), weights, seed=0, stream_id=stream_id)
    return StreamSpec(role, plan, [source] * len(weights), tables, batch, world=1, rank=0)


def test_mixing_ratio_and_source_weights_hold_per_batch(procedural_build: Path) -> None:
    source = open_source(procedural_build.parent, "procedural")
    real = _stream("real", source, (1.0,), batch=2, stream_id=0)
    synthetic = _stream("synthetic", source, (3.0, 1.0), batch=6, stream_id=1)  # 3x real, two sources 3:1
    data = MixedBatches([real, synthetic], 0, 8, Geometry(Protocol(24, (32, 40), True, 4), 8), seed=0)
    drawn = np.zeros(2)
    for batch in data:
        assert batch["real"]["video"].shape[0] == 2 and batch["synthetic"]["video"].shape[0] == 6
        real_mask, synthetic_mask = batch["real"]["mask"], batch["synthetic"]["mask"]
        # Each stream keeps only its role's labels, though procedural samples carry all of them.
        assert real_mask[:, TASK_BIT["action"]].all() and not real_mask[:, TASK_BIT["depth"]].any()
        assert synthetic_mask[:, TASK_BIT["depth"]].all() and not synthetic_mask[:, TASK_BIT["action"]].any()
        assert "action" not in batch["synthetic"] and "depth" not in batch["real"]
        drawn += np.bincount(batch["synthetic"]["source"].numpy(), minlength=2)
    assert drawn.sum() == 48 and 0.6 < drawn[0] / drawn.sum() < 0.9  # weight 3:1 -> 0.75


def _labelled_sample() -> dict:
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(2, 4, 4, 3)).astype(np.float16)
    return {
        "video": rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8),
        "depth.npy": rng.uniform(1, 5, (2, 4, 4)).astype(np.float16),
        "normal.npy": normal,
        "segm.npy": rng.integers(0, 5, (2, 4, 4)).astype(np.uint16),
        "pose3d.npy": rng.normal(size=(2, 25, 3)).astype(np.float32),
        "boxes.npy": np.array([[[0.1, 0.2, 0.3, 0.6], [np.nan] * 4]] * 2, dtype=np.float32),
        "boxes_cls.npy": np.array([[2, -1]] * 2, dtype=np.int16),
    }


def test_flip_mirrors_pixels_and_keeps_normals_pose_and_boxes_consistent() -> None:
    sample = _labelled_sample()
    flipped = hflip(sample)
    assert np.array_equal(flipped["video"][:, :, 0], sample["video"][:, :, -1])
    assert np.array_equal(flipped["segm.npy"][:, :, 0], sample["segm.npy"][:, :, -1])
    n, m = sample["normal.npy"], flipped["normal.npy"]
    assert np.array_equal(m[:, :, 0, 0], -n[:, :, -1, 0]) and np.array_equal(m[:, :, 0, 1:], n[:, :, -1, 1:])
    left, right = KINECT_JOINTS.index("hand_left"), KINECT_JOINTS.index("hand_right")
    p, q = sample["pose3d.npy"], flipped["pose3d.npy"]
    assert np.allclose(q[:, left], p[:, right] * [-1, 1, 1]) and np.allclose(
        q[:, right], p[:, left] * [-1, 1, 1]
    )
    assert np.allclose(flipped["boxes.npy"][0, 0], [0.7, 0.2, 0.9, 0.6])
    assert np.isnan(flipped["boxes.npy"][0, 1]).all()
    twice = hflip(flipped)
    for name in sample:
        assert np.allclose(twice[name], sample[name], equal_nan=True, atol=1e-6), name  # 1 - (1 - x) rounds


def test_crop_shifts_boxes_and_drops_those_cropped_away() -> None:
    sample = _labelled_sample()
    sample["boxes.npy"][:, 0] = [0.4, 0.4, 0.8, 0.9]  # partly inside the crop
    sample["boxes.npy"][:, 1] = [0.0, 0.0, 0.2, 0.2]  # outside it
    sample["boxes_cls.npy"][:, 1] = 3
    # the bottom-right quarter of the 16x16 frame, enlarged to 16x16 (label grid 4x4, stride 4)
    out = apply_window(sample, SquareWindow(top=8, left=8, side=8), Protocol(16, (32, 32), False, 4))
    assert out["video"].shape == (2, 16, 16, 3) and out["depth.npy"].shape == (2, 4, 4)
    assert np.array_equal(out["segm.npy"], sample["segm.npy"][:, 2:, 2:].repeat(2, 1).repeat(2, 2))
    assert np.allclose(out["boxes.npy"][0, 0], [0.0, 0.0, 0.6, 0.8])
    assert np.isnan(out["boxes.npy"][0, 1]).all() and out["boxes_cls.npy"][0, 1] == -1


def test_collate_fills_placeholders_and_merge_fills_missing_tasks() -> None:
    with_depth = {
        "video": np.zeros((2, 8, 8, 3), np.uint8),
        "mask": 1 << TASK_BIT["depth"],
        "depth": np.ones((2, 2, 2), np.float16),
    }
    bare = {"video": np.zeros((2, 8, 8, 3), np.uint8), "mask": 1 << TASK_BIT["action"], "action": 3}
    batch = collate([with_depth, bare])
    assert batch["mask"][:, TASK_BIT["depth"]].tolist() == [True, False]
    assert batch["action"].tolist() == [-1, 3]
    assert batch["depth"][1].isnan().all() and (batch["depth"][0] == 1).all()
    merged = merge([collate([bare]), collate([with_depth])])
    assert merged["video"].shape[0] == 2 and merged["action"].tolist() == [3, -1]
    assert merged["depth"][0].isnan().all()

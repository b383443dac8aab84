"""MViTv2's real-stream augmentation from timm: RandAugment per clip, erasing and mixup/cutmix per batch."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pvit
import pytest
import torch
from pvit.losses import action_loss

from pipeline.schema import TASK_BIT, TASKS
from tests.train.conftest import train_args
from train.augment import Protocol
from train.config import AugmentConfig
from train.data import Geometry, MixedBatches, StreamSpec, make_loader, merge, to_device
from train.main import main
from train.plan import StreamPlan
from train.realaug import (
    MVITV2_S,
    BatchAugment,
    action_rows,
    batch_seed,
    rand_augment_clip,
    rand_augment_sample,
)
from train.sources import open_source

RA = str(MVITV2_S["rand_augment"])
CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- RandAugment


def _clip(equal_frames: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if equal_frames:
        return np.repeat(rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), 4, axis=0)
    return rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)


def test_rand_augment_applies_one_draw_to_every_frame() -> None:
    video = _clip(equal_frames=True)
    changed = 0
    for seed in range(6):
        out = rand_augment_clip(video, RA, np.random.default_rng(seed))
        assert out.shape == video.shape and out.dtype == np.uint8
        assert all(np.array_equal(out[0], frame) for frame in out[1:]), seed  # equal in, equal out
        changed += not np.array_equal(out, video)
    assert changed >= 4  # 4 ops at p 0.5 each: a draw leaves the clip as it was 1 time in 16


def test_rand_augment_is_fixed_by_the_sample_rng_not_by_global_state() -> None:
    video = _clip(equal_frames=False)
    first = rand_augment_clip(video, RA, np.random.default_rng(3))
    random.seed(123)
    np.random.seed(456)
    again = rand_augment_clip(video, RA, np.random.default_rng(3))
    assert np.array_equal(first, again)
    # The global generators are left where they were: the next draws are those right after seeding.
    drawn = (random.random(), np.random.random())
    random.seed(123)
    np.random.seed(456)
    assert drawn == (random.random(), np.random.random())
    others = [rand_augment_clip(video, RA, np.random.default_rng(seed)) for seed in range(4, 8)]
    assert any(not np.array_equal(first, other) for other in others)


def test_rand_augment_skips_clips_without_an_action_label() -> None:
    video = _clip(equal_frames=False)
    ava = {"video": video, "meta": {"mask": 1 << TASK_BIT["ava"]}}
    rng = np.random.default_rng(0)
    assert rand_augment_sample(ava, RA, allowed=(1 << len(TASKS)) - 1, rng=rng) is ava
    assert rng.integers(1000) == np.random.default_rng(0).integers(1000)  # nothing drawn
    action = {"video": video, "meta": {"mask": 1 << TASK_BIT["action"]}}
    assert rand_augment_sample(action, RA, allowed=1 << TASK_BIT["depth"], rng=rng) is action  # not allowed
    assert rand_augment_sample(action, RA, allowed=1, rng=rng) is not action


def _stream(role: str, source, batch: int, stream_id: int) -> StreamSpec:
    table = source.split("train")
    plan = StreamPlan((table.shard,), (1.0,), seed=0, stream_id=stream_id)
    return StreamSpec(role, plan, [source], [table], batch, world=1, rank=0)


def test_loader_augments_real_clips_only_and_any_worker_makes_the_same_batch(procedural_build: Path) -> None:
    source = open_source(procedural_build.parent, "procedural")
    streams = [_stream("real", source, 2, 0), _stream("synthetic", source, 2, 1)]
    plain = MixedBatches(streams, 0, 4, Geometry(Protocol(24, (32, 40), True, 4), 8), seed=0)
    augmented = Geometry(Protocol(24, (32, 40), True, 4, rand_augment=RA), 8)
    data = MixedBatches(streams, 0, 4, augmented, seed=0)
    differs = False
    for step in (3, 0, 2):  # any order: a worker computes its steps alone
        before, after = plain.batch(step), data.batch(step)
        assert torch.equal(before["synthetic"]["video"], after["synthetic"]["video"])
        for key in ("action", "mask"):
            assert torch.equal(before["real"][key], after["real"][key])
        differs |= not torch.equal(before["real"]["video"], after["real"]["video"])
        random.seed(step)  # a worker's global RNG state must not matter
        np.random.seed(step)
        fresh = MixedBatches(streams, 0, 4, augmented, seed=0).batch(step)
        assert torch.equal(fresh["real"]["video"], after["real"]["video"])
    assert differs


# ----------------------------------------------------------------------------- erasing and mixup


def _batch(real: int = 4, synthetic: int = 2, classes: int = 5) -> tuple[list[dict], list[str]]:
    gen = torch.Generator().manual_seed(0)
    bits = len(TASKS)

    def part(count: int, task: str) -> dict:
        mask = torch.zeros(count, bits, dtype=torch.bool)
        mask[:, TASK_BIT[task]] = True
        video = torch.randint(0, 256, (count, 4, 16, 16, 3), generator=gen, dtype=torch.uint8)
        return {"video": video, "mask": mask}

    real_part = dict(part(real, "action"), action=torch.arange(real) % classes)
    synthetic_part = dict(part(synthetic, "depth"), depth=torch.rand(synthetic, 4, 4, 4, generator=gen))
    return [real_part, synthetic_part], ["real", "synthetic"]


def _augment(augment: BatchAugment, parts: list[dict], roles: list[str], step: int = 0):
    video, targets = to_device(merge(parts), CPU)
    original = video.clone()
    out, targets = augment(video, targets, action_rows(parts, roles), batch_seed(0, step, 0))
    return original, out, targets


def test_mixup_mixes_real_rows_into_soft_targets_and_leaves_synthetic_rows() -> None:
    parts, roles = _batch()
    augment = BatchAugment(num_classes=5, mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    original, out, targets = _augment(augment, parts, roles)
    assert torch.equal(out[4:], original[4:])  # synthetic rows bit for bit
    assert not torch.equal(out[:4], original[:4])
    soft = targets["action"]
    assert soft.shape == (6, 5) and soft.dtype == torch.float32
    assert torch.allclose(soft[:4].sum(-1), torch.ones(4)) and torch.all(soft[4:] == 0)
    assert soft[:4].min() >= 0.1 / 5 - 1e-6  # smoothing is in the targets
    depth = to_device(merge(parts), CPU)[1]["depth"]
    assert torch.allclose(
        targets["depth"], depth, rtol=0, atol=0, equal_nan=True
    )  # other labels as they were
    total, losses = pvit.MultiTaskLoss()({"action": torch.randn(6, 5)}, targets)
    assert torch.isfinite(total) and losses["action"] > 0


def test_cutmix_box_and_erased_box_are_the_same_in_every_frame() -> None:
    parts, roles = _batch()
    for augment in (BatchAugment(num_classes=5, cutmix=1.0), BatchAugment(num_classes=5, random_erasing=1.0)):
        original, out, _ = _augment(augment, parts, roles)
        changed = (out != original).any(dim=1)  # [B, T, H, W]: pixels changed in any channel
        assert changed[:4].any() and not changed[4:].any()
        for row in range(4):
            assert all(torch.equal(changed[row, 0], changed[row, t]) for t in range(1, 4)), augment


def test_batch_augmentation_is_fixed_by_seed_and_step() -> None:
    parts, roles = _batch()
    augment = BatchAugment(num_classes=5, mixup=0.8, cutmix=1.0, random_erasing=0.25, label_smoothing=0.1)
    _, first, first_targets = _augment(augment, parts, roles, step=7)
    state = torch.get_rng_state()
    _, again, again_targets = _augment(augment, parts, roles, step=7)
    assert torch.equal(first, again) and torch.equal(first_targets["action"], again_targets["action"])
    assert torch.equal(state, torch.get_rng_state())  # the global generator is left as it was
    others = [_augment(augment, parts, roles, step=s)[1] for s in range(8, 12)]
    assert any(not torch.equal(first, other) for other in others)


def test_an_odd_clip_out_keeps_its_smoothed_label() -> None:
    parts, roles = _batch(real=3)
    _, _, targets = _augment(BatchAugment(num_classes=5, mixup=0.8, label_smoothing=0.1), parts, roles)
    expected = torch.full((5,), 0.1 / 5)
    expected[2] += 0.9
    assert torch.allclose(targets["action"][2], expected)


def test_soft_targets_give_cross_entropy_and_respect_the_mask() -> None:
    logits = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 5, -1])
    mask = torch.tensor([True, True, False, True])
    soft = torch.nn.functional.one_hot(labels.clamp(min=0), 6).float()
    soft[3] = 0  # a missing label is an all-zero row
    assert torch.allclose(action_loss(logits, soft, mask), action_loss(logits, labels, mask))
    smoothed = action_loss(logits, labels, mask, label_smoothing=0.1)
    mixed = soft * 0.9 + 0.1 / 6
    mixed[3] = 0
    assert torch.allclose(action_loss(logits, mixed, mask), smoothed)
    # MultiTaskLoss does not smooth soft targets a second time.
    loss = pvit.MultiTaskLoss(action_label_smoothing=0.1)
    _, per_task = loss({"action": logits}, {"action": mixed, "mask": mask[:, None].expand(4, len(TASKS))})
    assert torch.allclose(per_task["action"], smoothed)


# ----------------------------------------------------------------------------- configuration and the run


def test_off_by_default(shards_dir: Path) -> None:
    cfg = AugmentConfig()
    augment = BatchAugment(10, cfg.mixup, cfg.cutmix, random_erasing=cfg.random_erasing)
    assert not augment.enabled and cfg.rand_augment == ""
    assert Protocol(24, (32, 40), True, 4).rand_augment == ""


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("mixup", -0.5, "alphas"),
        ("mixup_prob", 1.5, "--mixup-prob"),
        ("random_erasing", -0.1, "--random-erasing"),
        ("rand_augment", "auto-m7", "starts with 'rand-'"),
        ("rand_augment", "rand-q4", "not a timm RandAugment config"),
    ],
)
def test_bad_values_are_one_line(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        AugmentConfig(**{field: value})  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_a_run_with_mvitv2_augmentation_trains(shards_dir: Path, tmp_path: Path) -> None:
    flags = ["--mixup", "0.8", "--cutmix", "1.0", "--label-smoothing", "0.1", "--rand-augment", RA,
             "--random-erasing", "0.25", "--steps", "3", "--stop-after", "2", "--log-every", "1"]  # fmt: skip
    out = main(train_args(shards_dir, tmp_path, *flags))
    assert out["steps"] == 2 and out["stopped"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [row["action"] for row in rows if row["kind"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(loss) and loss > 0 for loss in losses)


def test_loader_workers_make_the_same_augmented_batches(procedural_build: Path) -> None:
    source = open_source(procedural_build.parent, "procedural")
    streams = [_stream("real", source, 2, 0)]
    geometry = Geometry(Protocol(24, (32, 40), True, 4, rand_augment=RA), 8)
    serial = list(make_loader(MixedBatches(streams, 0, 4, geometry, seed=0), 0))
    parallel = list(make_loader(MixedBatches(streams, 0, 4, geometry, seed=0), 2))
    assert [b["step"] for b in parallel] == [0, 1, 2, 3]
    assert all(
        torch.equal(a["real"]["video"], b["real"]["video"]) for a, b in zip(serial, parallel, strict=True)
    )

"""Downstream heads besides action (Ego4D OSCC and PNR, AVA detection): shapes, RoI geometry, losses."""

from __future__ import annotations

import math

import pvit
import pytest
import torch
import torch.nn.functional as F
from pvit.heads import patch_grid
from pvit_testutils import make_targets, tiny

DOWN = pvit.DOWNSTREAM_TASKS
NAN = float("nan")


def model_with_heads(mode: str = "pvit", **overrides: object) -> pvit.PViT:
    return tiny(mode, downstream=DOWN, **overrides)


def person_boxes() -> torch.Tensor:
    """(2, 3, 4): clip 0 has one person, clip 1 two; NaN rows are padding."""
    return torch.tensor(
        [
            [[0.1, 0.2, 0.5, 0.9], [NAN] * 4, [NAN] * 4],
            [[0.0, 0.0, 1.0, 1.0], [0.5, 0.1, 0.9, 0.7], [NAN] * 4],
        ]
    )


def downstream_targets(batch: int = 2, frames: int = 4, persons: int = 3) -> dict[str, torch.Tensor]:
    """Every label present (both clips change state; AVA labels on the real persons, -1 on padding)."""
    g = torch.Generator().manual_seed(3)
    targets = make_targets(batch, frames)
    pnr = torch.zeros(batch, frames)
    pnr[0, 1] = pnr[1, 3] = 1.0
    ava = (torch.rand(batch, persons, pvit.NUM_AVA_CLASSES, generator=g) > 0.8).float()
    ava[0, 1:] = -1
    ava[1, 2:] = -1
    return {**targets, "oscc": torch.tensor([1, 0]), "pnr": pnr, "ava": ava}


@pytest.mark.parametrize("mode", pvit.MODES)
def test_shapes_in_every_mode(mode: str, video: torch.Tensor) -> None:
    model = model_with_heads(mode).eval()
    preds = model(video, person_boxes())
    assert preds["oscc"].shape == (2, 2)
    assert preds["pnr"].shape == (2, 4)  # one logit per input frame
    assert preds["ava"].shape == (2, 3, pvit.NUM_AVA_CLASSES)
    assert preds["action"].shape == (2, 7)
    # pvit keeps its prompts and synthetic heads next to the downstream heads.
    synthetic = {"depth", "normal", "segm", "pose3d", "boxes"} & set(preds)
    assert synthetic == (set(pvit.SYNTHETIC_TASKS) if mode in ("pvit", "mt") else set())
    assert model.backbone.num_prompts == (5 if mode in ("pvit", "vpt", "np") else 0)
    # Without boxes the AVA head still runs, on zero persons.
    assert model(video)["ava"].shape == (2, 0, pvit.NUM_AVA_CLASSES)


def test_vpt_trains_downstream_heads_with_a_frozen_backbone() -> None:
    model = model_with_heads("vpt")
    assert all(p.requires_grad for p in model.downstream.parameters())
    assert not model.backbone.blocks[0].attn.qkv.weight.requires_grad


@pytest.mark.parametrize("frames", [6, 5])
def test_pnr_gives_one_logit_per_frame_for_other_clip_lengths(frames: int) -> None:
    video = torch.randn(1, 3, frames, 64, 64, generator=torch.Generator().manual_seed(0))
    assert model_with_heads("plain")(video)["pnr"].shape == (1, frames)


def test_unknown_downstream_head_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown downstream heads"):
        tiny("plain", downstream=("oscc", "kinetics"))


def test_ava_roi_geometry_on_a_non_square_frame() -> None:
    """Temporal mean, RoIAlign at the box in feature coordinates, spatial max, then the linear layer.

    A 64 x 128 clip gives a 2 x 4 last-stage map (stride 32). With a 2 x 2 RoI output, the left-half box
    samples exactly the centres of feature columns 0-1 (aligned RoIAlign, one sample per bin), so the head
    must see their maximum; the right-half box columns 2-3. Swapped x/y scaling would read other cells.
    """
    model = model_with_heads("plain", ava_roi_size=2).eval()
    video = torch.randn(1, 3, 4, 64, 128, generator=torch.Generator().manual_seed(2))
    feats = model.forward_features(video)
    grid = patch_grid(feats).mean(2)[0]  # (C, 2, 4)
    assert grid.shape[1:] == (2, 4)
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]]])
    logits = model.downstream["ava"](feats, boxes)["ava"][0]
    fc = model.downstream["ava"].fc
    torch.testing.assert_close(logits[0], fc(grid[:, :, :2].amax((1, 2))))
    torch.testing.assert_close(logits[1], fc(grid[:, :, 2:].amax((1, 2))))


def test_ava_padding_rows_give_zero_logits_and_no_gradient(video: torch.Tensor) -> None:
    model = model_with_heads("plain")
    head = model.downstream["ava"]
    ava = model(video, person_boxes())["ava"]
    assert torch.count_nonzero(ava[0, 1:]) == 0 and torch.count_nonzero(ava[1, 2]) == 0
    ava.sum().backward()  # padding rows are in the sum...
    with_padding = [p.grad.clone() for p in head.parameters()]
    assert all(torch.isfinite(g).all() for g in with_padding)
    model.zero_grad()
    # ...and add nothing: the same gradient as summing only the real persons of a padding-free batch.
    boxes = person_boxes()
    boxes[0, 1:] = boxes[1, 2] = torch.tensor([0.2, 0.2, 0.3, 0.3])
    real = torch.tensor([[True, False, False], [True, True, False]])
    model(video, boxes)["ava"][real].sum().backward()
    for a, p in zip(with_padding, head.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a)


@pytest.mark.parametrize("task", DOWN)
def test_sample_without_the_label_gives_zero_gradient(task: str, video: torch.Tensor) -> None:
    targets = downstream_targets()
    targets["mask"][1, pvit.TASK_INDEX[task]] = False
    preds = model_with_heads("pvit").train()(video, person_boxes())
    preds[task].retain_grad()
    _, parts = pvit.MultiTaskLoss()(preds, targets)
    parts[task].backward()
    grad = preds[task].grad
    assert torch.count_nonzero(grad[1]) == 0
    assert torch.count_nonzero(grad[0]) > 0


@pytest.mark.parametrize("task", DOWN)
def test_batch_without_the_label_contributes_exactly_zero(task: str, video: torch.Tensor) -> None:
    model = model_with_heads("pvit").train()
    targets = downstream_targets()
    targets["mask"][:, pvit.TASK_INDEX[task]] = False
    _, parts = pvit.MultiTaskLoss()(model(video, person_boxes()), targets)
    assert parts[task].item() == 0.0
    parts[task].backward()
    for name, p in model.downstream[task].named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name


def test_ava_head_stays_in_the_graph_without_persons_or_targets(video: torch.Tensor) -> None:
    """A synthetic-only batch (no boxes, no AVA target) still reaches every head parameter (DDP)."""
    model = model_with_heads("pvit")
    total, parts = pvit.MultiTaskLoss()(model(video), make_targets())
    assert "ava" not in parts
    total.backward()
    for name, p in model.downstream.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name


def test_pnr_loss_counts_only_state_changes() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 5.0, 0.0], [1.0, 1.0, 1.0]])
    target = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # clip 1: no state change
    loss = pvit.pnr_loss(logits, target, torch.tensor([True, True, True]))
    expected = (F.cross_entropy(logits[0], torch.tensor(1)) + math.log(3)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert pvit.pnr_loss(logits, target, torch.tensor([False, True, False])).item() == 0.0


def test_ava_loss_is_bce_over_real_persons_and_classes() -> None:
    logits = torch.tensor([[[2.0, -1.0], [9.0, 9.0]], [[0.5, 0.0], [-3.0, 1.0]]])
    target = torch.tensor([[[1.0, 0.0], [-1.0, -1.0]], [[0.0, 1.0], [1.0, 1.0]]])
    mask = torch.tensor([True, True])
    real = torch.tensor([[True, False], [True, True]])
    expected = F.binary_cross_entropy_with_logits(logits[real], target[real])
    assert pvit.ava_loss(logits, target, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    only_first = F.binary_cross_entropy_with_logits(logits[0, 0], target[0, 0])
    assert pvit.ava_loss(logits, target, torch.tensor([True, False])).item() == pytest.approx(
        only_first.item(), rel=1e-6
    )


def test_oscc_loss_is_two_way_cross_entropy() -> None:
    logits = torch.tensor([[1.0, -1.0], [0.0, 2.0], [3.0, 3.0]])
    preds = {"oscc": logits}
    targets = {"oscc": torch.tensor([1, 1, -1]), "mask": torch.ones(3, len(pvit.TASKS), dtype=torch.bool)}
    _, parts = pvit.MultiTaskLoss()(preds, targets)
    assert parts["oscc"].item() == pytest.approx(F.cross_entropy(logits[:2], torch.tensor([1, 1])).item())


def test_training_boxes_add_proposals_overlapping_ground_truth_above_iou_0_9() -> None:
    gt = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    proposals = torch.tensor(
        [
            [0.52, 0.0, 1.0, 1.0, 0.99],  # IoU 0.96 with person 1 -> kept with its labels
            [0.0, 0.0, 0.45, 1.0, 0.95],  # IoU exactly 0.9 with person 0 -> not "> 0.9"
            [0.2, 0.0, 0.8, 1.0, 0.90],  # overlaps both poorly -> dropped
        ]
    )
    boxes, box_labels = pvit.ava_training_boxes(gt, labels, proposals)
    torch.testing.assert_close(boxes, torch.cat((gt, proposals[:1, :4])))
    torch.testing.assert_close(box_labels, torch.cat((labels, labels[1:])))
    same = pvit.ava_training_boxes(gt, labels, None)
    assert same[0] is gt and same[1] is labels


def test_pad_per_clip() -> None:
    rows = [torch.ones(2, 4), torch.zeros(0, 4), torch.full((1, 4), 2.0)]
    padded = pvit.pad_per_clip(rows, NAN)
    assert padded.shape == (3, 2, 4)
    assert torch.isnan(padded[1]).all() and torch.isnan(padded[2, 1]).all()
    assert (padded[0] == 1).all() and (padded[2, 0] == 2).all()

"""Masked multi-task losses: masking, zero-label behaviour, box losses and matching."""

from __future__ import annotations

import math

import pvit
import pytest
import torch
from pvit.losses import box_losses, depth_loss, match_boxes, segm_loss
from pvit_testutils import make_targets, tiny

SYNTH = pvit.SYNTHETIC_TASKS
SCORED = ("action", *SYNTH)  # what tiny() predicts and make_targets() labels


def _preds_with_grad(video: torch.Tensor) -> dict[str, torch.Tensor]:
    preds = tiny("pvit").train()(video)
    for p in preds.values():
        p.retain_grad()
    return preds


def test_total_is_weighted_sum(video: torch.Tensor) -> None:
    preds = tiny("pvit")(video)
    weights = {"depth": 2.0, "boxes": 0.0}
    total, parts = pvit.MultiTaskLoss(weights=weights)(preds, make_targets())
    assert set(parts) == set(SCORED)
    lam = {**pvit.DEFAULT_LOSS_WEIGHTS, **weights}
    assert torch.allclose(total, sum(lam[t] * parts[t] for t in parts))
    assert pvit.DEFAULT_LOSS_WEIGHTS == {
        "action": 1.0,
        "depth": 0.5,
        "normal": 0.5,
        "segm": 0.1,
        "pose3d": 3.0,
        "boxes": 0.1,
        "oscc": 1.0,
        "pnr": 1.0,
        "ava": 1.0,
    }


@pytest.mark.parametrize("task", SCORED)
def test_unlabelled_sample_gives_zero_gradient(task: str, video: torch.Tensor) -> None:
    targets = make_targets()
    targets["mask"][1, pvit.TASK_INDEX[task]] = False
    preds = _preds_with_grad(video)
    _, parts = pvit.MultiTaskLoss()(preds, targets)
    parts[task].backward()
    keys = [task, "boxes_cls"] if task == "boxes" else [task]
    for key in keys:
        grad = preds[key].grad
        assert torch.count_nonzero(grad[1]) == 0
        assert torch.count_nonzero(grad[0]) > 0


@pytest.mark.parametrize("task", SYNTH)
def test_unlabelled_sample_does_not_reach_head_parameters(task: str, video: torch.Tensor) -> None:
    """Changing the (unavailable) label of sample 1 leaves the head's gradient bit-identical."""
    grads = []
    for garbage in (0.0, 1.0):
        model = tiny("pvit").train()
        targets = make_targets()
        targets["mask"][1, pvit.TASK_INDEX[task]] = False
        for key in (task, "boxes_cls") if task == "boxes" else (task,):
            t = targets[key]
            t[1] = t[1] * 0 + (garbage if t.is_floating_point() else int(garbage))
        _, parts = pvit.MultiTaskLoss()(model(video), targets)
        parts[task].backward()
        grads.append([p.grad.clone() for p in model.heads[task].parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_all_missing_gives_zero_not_nan(video: torch.Tensor) -> None:
    targets = make_targets()
    targets["mask"][:] = False
    targets["action"][:] = -1
    for key in ("depth", "normal", "pose3d", "boxes"):
        targets[key][:] = float("nan")
    targets["segm"][:] = pvit.SEGM_IGNORE
    targets["boxes_cls"][:] = -1
    model = tiny("pvit").train()
    total, parts = pvit.MultiTaskLoss()(model(video), targets)
    assert total.item() == 0.0
    assert all(v.item() == 0.0 for v in parts.values())
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() == 0, name


def test_per_element_invalid_entries_are_excluded() -> None:
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([[[[1.0, float("nan")], [3.0, 100.0]]], [[[5.0, 5.0], [5.0, 5.0]]]])
    mask = torch.tensor([True, False])
    # valid: 1, 3 and 100 clipped to 10 -> (1 + 9 + 100) / 3
    assert depth_loss(pred, target, mask, max_depth=10.0).item() == pytest.approx(110 / 3)

    logits = torch.zeros(1, 3, 1, 1, 2)
    logits[0, 0, 0, 0, 0] = 10.0
    seg = torch.tensor([[[[0, pvit.SEGM_IGNORE]]]])
    expected = -torch.log_softmax(torch.tensor([10.0, 0.0, 0.0]), 0)[0]
    assert segm_loss(logits, seg, torch.tensor([True])).item() == pytest.approx(expected.item(), rel=1e-5)


def test_pose_missing_joint_rows_are_excluded() -> None:
    preds = {"pose3d": torch.zeros(1, 1, 25, 3)}
    target = torch.ones(1, 1, 25, 3)
    target[0, 0, 3] = float("nan")
    target[0, 0, 4] = 100.0
    target[0, 0, 4, 1] = float("nan")  # a partly-NaN row counts as missing too
    _, parts = pvit.MultiTaskLoss()(preds, {"pose3d": target})
    assert parts["pose3d"].item() == pytest.approx(1.0)


def test_box_l1_and_giou_by_hand() -> None:
    boxes = torch.tensor([[[[0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.4, 0.4], [0.1, 0.1, 0.9, 0.9]]]])
    target = torch.tensor([[[[0.25, 0.25, 0.75, 0.75], [0.2, 0.2, 0.4, 0.4], [math.nan] * 4]]])
    parts = box_losses(boxes, None, target, None, torch.tensor([True]))
    # slot 0: |d| = 0.25 on each coordinate; slot 1 exact; slot 2 padding.
    assert parts["l1"].item() == pytest.approx((4 * 0.25) / 8)
    inter, union, hull = 0.25**2, 0.25 + 0.25 - 0.25**2, 0.75**2
    giou0 = inter / union - (hull - union) / hull  # = -0.0793...
    assert parts["giou"].item() == pytest.approx(((1 - giou0) + 0.0) / 2, rel=1e-5)


def test_box_class_loss_uses_no_object_for_padding() -> None:
    boxes = torch.tensor([[[[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 1.0, 1.0]]]])
    target = torch.tensor([[[[0.1, 0.1, 0.3, 0.3], [math.nan] * 4]]])
    target_cls = torch.tensor([[[1, -1]]])
    logits = torch.full((1, 1, 2, 3), -20.0)
    logits[0, 0, 0, 1] = 20.0  # slot 0 -> class 1
    logits[0, 0, 1, 2] = 20.0  # slot 1 -> no object (last logit)
    parts = box_losses(boxes, logits, target, target_cls, torch.tensor([True]))
    assert parts["l1"].item() == 0.0 and parts["giou"].item() == pytest.approx(0.0, abs=1e-5)
    assert parts["cls"].item() == pytest.approx(0.0, abs=1e-5)


def test_hungarian_recovers_permutation() -> None:
    gt = (
        torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.8], [0.2, 0.6, 0.4, 0.9], [math.nan] * 4])
        .expand(2, 1, 4, 4)
        .clone()
    )
    gt_cls = torch.tensor([0, 1, 2, -1]).expand(2, 1, 4).clone()
    perm = [2, 0, 3, 1]  # prediction slot s holds ground-truth row perm[s] (row 3 is padding)
    pred = torch.full((2, 1, 4, 4), 0.0)
    pred[..., :] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    for slot, row in enumerate(perm):
        if row < 3:
            pred[:, :, slot] = gt[:, :, row]
    matched, matched_cls = match_boxes(pred, None, gt, gt_cls)
    for slot, row in enumerate(perm):
        if row < 3:
            assert torch.equal(matched[:, :, slot], gt[:, :, row])
            assert (matched_cls[:, :, slot] == row).all()
        else:
            assert torch.isnan(matched[:, :, slot]).all() and (matched_cls[:, :, slot] == -1).all()
    targets = {"boxes": gt, "boxes_cls": gt_cls}
    preds = {"boxes": pred}
    hungarian = pvit.MultiTaskLoss(box_matching="hungarian", box_cls_weight=0)(preds, targets)[1]["boxes"]
    fixed = pvit.MultiTaskLoss(box_matching="fixed", box_cls_weight=0)(preds, targets)[1]["boxes"]
    assert hungarian.item() == pytest.approx(0.0, abs=1e-5)
    assert fixed.item() > 0.1


def test_task_missing_from_targets_keeps_head_in_graph(video: torch.Tensor) -> None:
    model = tiny("pvit")
    targets = make_targets()
    del targets["depth"]
    total, parts = pvit.MultiTaskLoss()(model(video), targets)
    assert "depth" not in parts
    total.backward()
    assert all(p.grad is not None for p in model.heads["depth"].parameters())

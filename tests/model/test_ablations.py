"""The paper's model-side ablation switches (Table 4a/4c, Fig. 4, §A.2): each changes just what it names."""

from __future__ import annotations

import pvit
import pytest
import torch
from pvit_testutils import NUM_BOX_CLASSES, make_targets, tiny

B, T = 2, 4
EMBED = 16  # tiny preset's stage-1 width: the prompt tokens' width
REAL_BOX_CLASSES = 2  # Something-Else: hand, object


def train_one_step(model: pvit.PViT, video: torch.Tensor, targets: dict) -> dict[str, torch.Tensor]:
    """One AdamW step (weight decay on, so a parameter changes iff it gets a gradient); returns the
    parameters as they were before it."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model.train()
    total, _ = pvit.MultiTaskLoss()(model(video), targets)
    total.backward()
    opt.step()
    return before


# --- OP: one prompt for all tasks ------------------------------------------------------------------------


@pytest.mark.parametrize("per_task", [1, 3])
def test_one_prompt_is_one_group_that_every_head_reads(per_task: int, video: torch.Tensor) -> None:
    model = tiny("pvit", one_prompt=True, prompts_per_task=per_task).eval()
    assert model.backbone.num_prompts == per_task
    assert model.backbone.prompt_tokens.shape == (1, per_task, EMBED)
    feats = model.forward_features(video)
    assert feats.prompts.shape[1] == per_task
    shared = feats.prompts.mean(1)
    assert set(feats.task_tokens) == set(pvit.SYNTHETIC_TASKS)
    for task, token in feats.task_tokens.items():
        assert torch.equal(token, shared), task
    assert set(model.heads) == set(pvit.SYNTHETIC_TASKS)  # OP keeps every head


def test_one_prompt_gets_every_heads_gradient(video: torch.Tensor) -> None:
    model = tiny("pvit", one_prompt=True).train()
    preds = model(video)
    for key in ("depth", "normal", "segm", "pose3d", "boxes"):
        model.zero_grad()
        preds[key].float().square().mean().backward(retain_graph=True)
        assert model.backbone.prompt_tokens.grad.abs().sum() > 0, key


def test_one_prompt_needs_prompts() -> None:
    for mode in ("mt", "plain"):
        with pytest.raises(ValueError, match="one_prompt needs a mode with prompts"):
            tiny(mode, one_prompt=True)
    assert tiny("vpt", one_prompt=True).backbone.num_prompts == 1
    assert tiny("np", one_prompt=True).backbone.num_prompts == 1


# --- NP: neutral prompts --------------------------------------------------------------------------------


def test_neutral_prompts_have_prompts_and_no_heads_or_synthetic_loss(video: torch.Tensor) -> None:
    model = tiny("np")
    assert model.backbone.prompt_tokens.shape == (1, len(pvit.SYNTHETIC_TASKS), EMBED)
    assert len(model.heads) == 0 and len(model.real_heads) == 0
    preds = model(video)
    assert set(preds) == {"action"}
    _, per_task = pvit.MultiTaskLoss()(preds, make_targets())  # every synthetic label present
    assert set(per_task) == {"action"}


def test_neutral_prompts_train_the_whole_backbone(video: torch.Tensor) -> None:
    model = tiny("np")
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert model.backbone.training and model.backbone.blocks[0].training
    before = train_one_step(model, video, make_targets())
    qkv = "backbone.blocks.0.attn.qkv.weight"
    assert not torch.equal(model.backbone.blocks[0].attn.qkv.weight, before[qkv])
    assert not torch.equal(model.backbone.prompt_tokens, before["backbone.prompt_tokens"])


# --- freeze_backbone (PViT VPT) -------------------------------------------------------------------------


def test_freeze_backbone_trains_prompts_and_heads_only(video: torch.Tensor) -> None:
    model = tiny("pvit", freeze_backbone=True)
    model.train()
    assert not model.backbone.training and not model.backbone.blocks[0].training  # no drop-path
    assert model.backbone.head.training and all(h.training for h in model.heads.values())
    before = train_one_step(model, video, make_targets())
    trains = ("backbone.prompt_tokens", "backbone.head.", "heads.")
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == name.startswith(trains), name
    assert any(name.startswith("heads.") for name in before)  # the task heads are there and trained


def test_vpt_is_neutral_prompts_with_a_frozen_backbone() -> None:
    def trainable(model: pvit.PViT) -> set[str]:
        return {n for n, p in model.named_parameters() if p.requires_grad}

    vpt, np_frozen = tiny("vpt"), tiny("np", freeze_backbone=True)
    assert vpt.cfg.frozen and np_frozen.cfg.frozen and not tiny("np").cfg.frozen
    assert (
        trainable(vpt)
        == trainable(np_frozen)
        == {
            "backbone.prompt_tokens",
            "backbone.head.1.weight",
            "backbone.head.1.bias",
        }
    )


# --- prompts_per_task and task subsets ------------------------------------------------------------------


def test_twenty_prompts_per_task(video: torch.Tensor) -> None:
    model = tiny("pvit", prompts_per_task=20).eval()
    tasks = pvit.SYNTHETIC_TASKS
    assert model.backbone.prompt_tokens.shape == (1, 20 * len(tasks), EMBED)
    feats = model.forward_features(video)
    for i, task in enumerate(tasks):  # each task reads the mean of its own 20 tokens
        own = feats.prompts[:, 20 * i : 20 * (i + 1)].mean(1)
        assert torch.allclose(feats.task_tokens[task], own), task


@pytest.mark.parametrize(
    ("subset", "tasks"), [("S1", {"boxes", "segm", "depth"}), ("S2", {"pose3d", "normal", "segm"})]
)
def test_named_task_subsets_get_exactly_their_prompts_and_heads(
    subset: str, tasks: set[str], video: torch.Tensor
) -> None:
    model = tiny("pvit", tasks=subset)
    assert set(model.cfg.tasks) == tasks
    assert model.backbone.num_prompts == 3
    assert set(model.heads) == tasks
    preds = model(video)
    assert set(preds) - {"boxes_cls"} == tasks | {"action"}
    _, per_task = pvit.MultiTaskLoss()(preds, make_targets())  # labels of all five tasks present
    assert set(per_task) == tasks | {"action"}  # the others are skipped, not scored against nothing


def test_resolve_tasks() -> None:
    assert pvit.config.resolve_tasks("depth,normal") == ("depth", "normal")
    assert pvit.config.resolve_tasks(("S1", "pose3d")) == ("depth", "segm", "pose3d", "boxes")
    assert pvit.config.resolve_tasks(()) == ()
    with pytest.raises(ValueError, match="unknown task 'flow'; choose from depth, .*, S1, S2$"):
        pvit.config.resolve_tasks("depth,flow")


# --- prompts for real-world data (§A.2) -----------------------------------------------------------------


def real_boxes_model() -> pvit.PViT:
    return tiny("pvit", real_tasks=("boxes",), num_real_box_classes=REAL_BOX_CLASSES)


def mixed_targets(real_rows: list[bool], boxes_rows: list[bool]) -> dict[str, torch.Tensor]:
    """Every label on every row, `real` marking the real stream's rows, the boxes bit on `boxes_rows`.

    Box classes stay below the real box space's size, so both heads can score any row."""
    targets = make_targets(batch=len(real_rows))
    targets["boxes_cls"] = targets["boxes_cls"].clamp(max=REAL_BOX_CLASSES - 1)
    targets["real"] = torch.tensor(real_rows)
    targets["mask"][:, pvit.TASK_INDEX["boxes"]] = torch.tensor(boxes_rows)
    return targets


def test_real_boxes_have_their_own_prompt_and_head(video: torch.Tensor) -> None:
    model = real_boxes_model().eval()
    assert model.backbone.num_prompts == len(pvit.SYNTHETIC_TASKS) + 1
    feats = model.forward_features(video)
    assert torch.equal(feats.task_tokens["real_boxes"], feats.prompts[:, -1])  # the last group, not boxes'
    assert not torch.equal(feats.task_tokens["real_boxes"], feats.task_tokens["boxes"])
    preds = model(video)
    assert preds["real_boxes"].shape == preds["boxes"].shape
    assert preds["real_boxes_cls"].shape[-1] == REAL_BOX_CLASSES + 1
    assert preds["boxes_cls"].shape[-1] == NUM_BOX_CLASSES + 1
    with pytest.raises(ValueError, match="real_tasks .* need mode pvit"):
        tiny("mt", real_tasks=("boxes",))
    with pytest.raises(ValueError, match="unknown real_tasks"):
        tiny("pvit", real_tasks=("depth",))


def test_real_boxes_loss_trains_its_prompt_on_real_rows_only() -> None:
    model = real_boxes_model().train()
    video = torch.randn(4, 3, T, 64, 64, generator=torch.Generator().manual_seed(2))
    # Rows 0, 1 real and 2, 3 synthetic; all four carry boxes.
    targets = mixed_targets([True, True, False, False], [True] * 4)
    preds = model(video)
    for key in ("boxes", "real_boxes"):
        preds[key].retain_grad()
    _, per_task = pvit.MultiTaskLoss()(preds, targets)
    assert per_task["real_boxes"] > 0 and per_task["boxes"] > 0
    model.zero_grad()
    per_task["real_boxes"].backward(retain_graph=True)
    real_group = model.backbone.prompt_tokens.grad[0, -1]
    assert real_group.abs().sum() > 0  # its own prompt learns from the real boxes
    assert preds["real_boxes"].grad[2:].abs().sum() == 0  # ... and nothing from the synthetic rows
    assert preds["real_boxes"].grad[:2].abs().sum() > 0
    assert model.heads["boxes"].fc.weight.grad is None  # the synthetic box head is not in this loss
    model.zero_grad()
    preds["real_boxes"].grad = None
    per_task["boxes"].backward()
    assert preds["boxes"].grad[:2].abs().sum() == 0  # real rows give the synthetic head no gradient
    assert preds["boxes"].grad[2:].abs().sum() > 0
    assert model.real_heads["real_boxes"].fc.weight.grad is None


def test_real_boxes_alone_leave_the_synthetic_box_head_untouched() -> None:
    model = real_boxes_model().train()
    video = torch.randn(2, 3, T, 64, 64, generator=torch.Generator().manual_seed(3))
    targets = mixed_targets([True, False], [True, False])  # only the real row has boxes
    total, per_task = pvit.MultiTaskLoss()(model(video), targets)
    total.backward()
    assert per_task["boxes"] == 0
    assert model.heads["boxes"].fc.weight.grad.abs().sum() == 0
    assert model.real_heads["real_boxes"].fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("matching", ["fixed", "hungarian"])
def test_without_a_real_flag_every_row_is_synthetic(matching: str, video: torch.Tensor) -> None:
    preds = real_boxes_model()(video)
    targets = make_targets()
    targets["boxes_cls"] = targets["boxes_cls"].clamp(max=REAL_BOX_CLASSES - 1)
    loss = pvit.MultiTaskLoss(box_matching=matching)
    _, plain = loss(preds, targets)
    _, flagged = loss(preds, {**targets, "real": torch.zeros(B, dtype=torch.bool)})
    assert plain["real_boxes"] == 0 and flagged["real_boxes"] == 0
    assert torch.equal(plain["boxes"], flagged["boxes"]) and plain["boxes"] > 0


def test_hungarian_matching_ignores_the_other_heads_rows() -> None:
    """Synthetic rows' class ids may lie outside the real box space; the real head's matcher skips them."""
    model = tiny("pvit", real_tasks=("boxes",), num_real_box_classes=1)
    video = torch.randn(2, 3, T, 64, 64, generator=torch.Generator().manual_seed(4))
    targets = mixed_targets([True, False], [True, True])
    targets["boxes_cls"][0] = targets["boxes_cls"][0].clamp(max=0)  # the real row: the one real class
    targets["boxes_cls"][1, :, 0] = NUM_BOX_CLASSES - 1  # a synthetic class beyond the real space
    _, per_task = pvit.MultiTaskLoss(box_matching="hungarian")(model(video), targets)
    assert per_task["real_boxes"] > 0 and per_task["boxes"] > 0


def test_real_boxes_weight_defaults_to_the_box_lambda() -> None:
    model = real_boxes_model()
    video = torch.randn(2, 3, T, 64, 64, generator=torch.Generator().manual_seed(5))
    targets = mixed_targets([True, False], [True, True])
    preds = model(video)
    total, parts = pvit.MultiTaskLoss()(preds, targets)
    lam = {**pvit.DEFAULT_LOSS_WEIGHTS, "real_boxes": pvit.DEFAULT_LOSS_WEIGHTS["boxes"]}
    assert torch.allclose(total, sum(lam[t] * parts[t] for t in parts))
    heavier, _ = pvit.MultiTaskLoss(weights={"real_boxes": 2.0})(preds, targets)
    assert torch.allclose(heavier - total, (2.0 - lam["real_boxes"]) * parts["real_boxes"])

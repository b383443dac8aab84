"""PViT modes, heads and training behaviour on the tiny preset."""

from __future__ import annotations

import time

import pvit
import pytest
import torch
from pvit_testutils import NUM_BOX_CLASSES, NUM_CLASSES, NUM_SEG, NUM_SLOTS, make_targets, tiny

B, T, H = 2, 4, 64
L = H // 4  # label size at the default label_stride

SHAPES = {
    "action": (B, NUM_CLASSES),
    "depth": (B, T, L, L),
    "normal": (B, T, L, L, 3),
    "segm": (B, NUM_SEG, T, L, L),
    "pose3d": (B, T, 25, 3),
    "boxes": (B, T, NUM_SLOTS, 4),
    "boxes_cls": (B, T, NUM_SLOTS, NUM_BOX_CLASSES + 1),
}
EXPECTED_KEYS = {
    "pvit": set(SHAPES),
    "mt": set(SHAPES),
    "vpt": {"action"},
    "np": {"action"},
    "plain": {"action"},
}
# With only CLS read out (plain/vpt/np), the last block's patch queries reach no output: its q-pool conv and
# rel-pos tables get no gradient, in torchvision's mvit_v2_s just the same.
UNREACHABLE_WITHOUT_DENSE_HEADS = {
    "backbone.blocks.3.attn.pool_q.pool.weight",
    "backbone.blocks.3.attn.rel_pos_h",
    "backbone.blocks.3.attn.rel_pos_w",
    "backbone.blocks.3.attn.rel_pos_t",
}


@pytest.mark.parametrize("mode", pvit.MODES)
def test_shapes_every_mode(mode: str, video: torch.Tensor) -> None:
    preds = tiny(mode)(video)
    assert set(preds) == EXPECTED_KEYS[mode]
    for key, value in preds.items():
        assert tuple(value.shape) == SHAPES[key], key
        assert torch.isfinite(value).all(), key


def test_output_conventions(video: torch.Tensor) -> None:
    preds = tiny("pvit")(video)
    assert torch.allclose(preds["normal"].norm(dim=-1), torch.ones(1), atol=1e-4)
    boxes = preds["boxes"]
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[..., 2:] >= boxes[..., :2]).all()


@pytest.mark.parametrize(("frames", "size", "stride"), [(8, 112, 4), (4, 64, 8), (6, 96, 4)])
def test_label_resolution_follows_input(frames: int, size: int, stride: int) -> None:
    model = tiny("pvit", label_stride=stride)
    preds = model(torch.randn(1, 3, frames, size, size))
    label = size // stride
    assert preds["depth"].shape == (1, frames, label, label)
    assert preds["segm"].shape == (1, NUM_SEG, frames, label, label)
    assert preds["pose3d"].shape == (1, frames, 25, 3)
    assert preds["boxes"].shape == (1, frames, NUM_SLOTS, 4)


@pytest.mark.parametrize("mode", pvit.MODES)
def test_every_trainable_parameter_gets_a_gradient(mode: str, video: torch.Tensor) -> None:
    model = tiny(mode).train()
    total, _ = pvit.MultiTaskLoss()(model(video), make_targets())
    total.backward()
    # vpt's backbone is frozen; np trains it but, like plain, reads only CLS.
    expected_missing = UNREACHABLE_WITHOUT_DENSE_HEADS if mode in ("plain", "np") else set()
    missing = {
        name
        for name, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    }
    assert missing == expected_missing
    if mode in ("pvit", "vpt", "np"):
        assert model.backbone.prompt_tokens.grad.abs().sum() > 0


def test_vpt_freezes_backbone(video: torch.Tensor) -> None:
    model = tiny("vpt")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.prompt_tokens", "backbone.head.1.weight", "backbone.head.1.bias"}
    model.train()
    assert not model.backbone.training and not model.backbone.blocks[0].training
    assert model.backbone.head.training
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    total, _ = pvit.MultiTaskLoss()(model(video), make_targets())
    total.backward()
    opt.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (name in trainable), name


def test_mt_heads_read_cls(video: torch.Tensor) -> None:
    model = tiny("mt").eval()
    assert model.backbone.prompt_tokens is None
    feats = model.forward_features(video)
    assert set(feats.task_tokens) == set(pvit.SYNTHETIC_TASKS)
    assert all(torch.equal(tok, feats.cls) for tok in feats.task_tokens.values())


def test_prompts_per_task_and_task_subset(video: torch.Tensor) -> None:
    model = tiny("pvit", prompts_per_task=20, tasks=("depth", "pose3d"))
    assert model.backbone.prompt_tokens.shape == (1, 40, 16)
    feats = model.forward_features(video)
    assert feats.prompts.shape == (B, 40, 128)
    assert set(model(video)) == {"action", "depth", "pose3d"}


def test_no_weight_decay_names() -> None:
    model = tiny("pvit")
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names <= set(params)
    assert {"backbone.prompt_tokens", "backbone.pos_encoding.class_token"} <= names
    assert "backbone.blocks.0.attn.rel_pos_h" in names
    assert len([n for n in names if ".rel_pos_" in n]) == 3 * 4
    assert "backbone.blocks.0.attn.qkv.weight" not in names


def test_build_model_requires_label_spaces() -> None:
    with pytest.raises(ValueError, match="num_seg_classes"):
        pvit.build_model("tiny", "pvit", num_classes=3, num_box_classes=2)
    pvit.build_model("tiny", "pvit", num_classes=3, tasks=("depth", "pose3d"))  # not needed without them
    pvit.build_model("tiny", "vpt", num_classes=3)  # no heads in vpt
    with pytest.raises(ValueError, match="mode"):
        pvit.build_model("tiny", "bogus", num_classes=3)


@pytest.mark.bench  # a wall-clock bound: a benchmark, not a default test (it fails on a loaded machine)
def test_tiny_train_step_is_fast(video: torch.Tensor) -> None:
    model = tiny("pvit").train()
    loss_fn = pvit.MultiTaskLoss()
    targets = make_targets()
    loss_fn(model(video), targets)[0].backward()  # warm-up
    start = time.perf_counter()
    model.zero_grad()
    loss_fn(model(video), targets)[0].backward()
    assert time.perf_counter() - start < 1.0


def test_bf16_autocast_step_is_finite(video: torch.Tensor) -> None:
    model = tiny("pvit").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, parts = pvit.MultiTaskLoss()(model(video), make_targets())
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("pool_impl", ["conv", "channels_last"])
def test_bf16_pool_gradients_match_fp32(video: torch.Tensor, pool_impl: str) -> None:
    """oneDNN's bf16 depthwise Conv3d (AMX/AVX512-BF16 CPUs) gets the weight gradient wrong for a
    channels-last input, which a one-head block's pooled q/k/v is unless made contiguous: 80-125% off,
    now and then 1e10 or inf (the flaky non-finite gradient of the test above). The channels_last
    formulation must fall back to a contiguous copy on CPU in bf16 for the same reason."""
    grads = {}
    for bf16 in (False, True):
        model = tiny("pvit", pool_impl=pool_impl).train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pvit.MultiTaskLoss()(model(video), make_targets())[0].backward()
        grads[bf16] = {
            n: p.grad
            for n, p in model.named_parameters()
            if n.startswith("backbone.blocks.0.attn.pool") and n.endswith(".pool.weight")
        }
    assert len(grads[False]) == 3  # the depthwise Conv3d of the q, k and v pools
    for name, exact in grads[False].items():
        assert (grads[True][name] - exact).norm() / exact.norm() < 0.15, name


@pytest.mark.parametrize("switch", ["config", "method"])
def test_activation_checkpointing_gives_the_same_gradients(video: torch.Tensor, switch: str) -> None:
    """Per-block activation checkpointing (``act_checkpoint=True`` or ``set_grad_checkpointing()``) recomputes
    every block in backward and gives the same loss and gradients, fp32, with drop-path on (the recompute
    must replay the same random mask)."""
    results = []
    for checkpointed in (False, True):
        model = tiny("pvit", drop_path=0.5, act_checkpoint=checkpointed and switch == "config").train()
        if checkpointed and switch == "method":
            model.set_grad_checkpointing()
        calls: list[int] = []
        model.backbone.blocks[0].register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        torch.manual_seed(1)
        total, _ = pvit.MultiTaskLoss()(model(video), make_targets())
        total.backward()
        assert len(calls) == (2 if checkpointed else 1)  # checkpointed: run again in backward
        results.append(
            (total.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        )
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads_ckpt.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, msg=name)
    with torch.no_grad():  # nothing to recompute for: plain forward
        model(video)

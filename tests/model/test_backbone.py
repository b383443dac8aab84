"""The prompt-aware MViTv2 backbone against torchvision's mvit_v2_s."""

from __future__ import annotations

import pvit
import pytest
import torch
from pvit.backbone import PromptMViT, block_settings
from torchvision.models.video import mvit as tvm

V2S = pvit.get_config("mvit_v2_s", mode="plain")


def _torchvision_mvit(cfg: pvit.PViTConfig) -> tvm.MViT:
    """torchvision's own MViT class with mvit_v2_s's settings at the config's construction size."""
    return tvm.MViT(
        spatial_size=(cfg.img_size, cfg.img_size),
        temporal_size=cfg.num_frames,
        block_setting=block_settings(cfg),
        residual_pool=True,
        residual_with_cls_embed=False,
        rel_pos_embed=True,
        proj_after_attn=True,
        stochastic_depth_prob=cfg.drop_path,
        num_classes=cfg.num_classes,
    )


@pytest.fixture(scope="module")
def tv_v2s_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return tvm.mvit_v2_s().state_dict()


def test_block_settings_reproduce_mvit_v2_s(tv_v2s_state: dict[str, torch.Tensor]) -> None:
    ours = PromptMViT(V2S, 0).state_dict()
    assert list(ours) == list(tv_v2s_state)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in tv_v2s_state.items()}
    assert sum(v.numel() for v in ours.values()) == 34_537_744


@pytest.mark.parametrize("preset", ["mvit_v2_s", "tiny"])
def test_no_prompts_matches_torchvision_small_input(preset: str) -> None:
    cfg = pvit.get_config(preset, mode="plain", img_size=64, num_frames=4)
    torch.manual_seed(0)
    ref = _torchvision_mvit(cfg).eval()
    ours = PromptMViT(cfg, 0).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.slow
def test_no_prompts_matches_mvit_v2_s_16x224(tv_v2s_state: dict[str, torch.Tensor]) -> None:
    ref = tvm.mvit_v2_s().eval()
    ref.load_state_dict(tv_v2s_state)
    ours = PromptMViT(V2S, 0).eval()
    ours.load_state_dict(tv_v2s_state, strict=True)
    x = torch.randn(1, 3, 16, 224, 224)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-5


def test_prompts_load_torchvision_state_dict(tv_v2s_state: dict[str, torch.Tensor]) -> None:
    result = PromptMViT(V2S, 5).load_state_dict(tv_v2s_state, strict=False)
    assert result.missing_keys == ["prompt_tokens"]
    assert result.unexpected_keys == []


def test_load_kinetics_pretrained_reports_new_keys(tv_v2s_state: dict[str, torch.Tensor]) -> None:
    model = pvit.build_model("mvit_v2_s", "pvit", num_classes=174, num_seg_classes=3, num_box_classes=2)
    report = pvit.load_kinetics_pretrained(model, tv_v2s_state)
    head_keys = sorted(k for k in model.state_dict() if k.startswith("heads."))
    assert report.new_keys == sorted(
        ["backbone.prompt_tokens", "backbone.head.1.weight", "backbone.head.1.bias"] + head_keys
    )
    assert report.dropped_keys == ["head.1.bias", "head.1.weight"]
    loaded = model.backbone.state_dict()
    for key in ("conv_proj.weight", "blocks.7.attn.rel_pos_h", "pos_encoding.class_token", "norm.weight"):
        assert torch.equal(loaded[key], tv_v2s_state[key])
    assert model.backbone.head[1].out_features == 174


def test_load_kinetics_pretrained_from_path(tmp_path, tv_v2s_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "mvit_v2_s.pth"
    torch.save(tv_v2s_state, path)
    model = pvit.build_model("mvit_v2_s", "plain", num_classes=400)
    report = pvit.load_kinetics_pretrained(model, path)
    assert report.new_keys == ["backbone.head.1.bias", "backbone.head.1.weight"]


def test_load_rejects_foreign_keys() -> None:
    model = pvit.build_model("tiny", "plain", num_classes=4)
    state = dict(model.backbone.state_dict(), bogus=torch.zeros(1))
    with pytest.raises(ValueError, match="bogus"):
        pvit.load_kinetics_pretrained(model, state)


@pytest.mark.parametrize("clip", [(4, 64), (8, 112)])
def test_runtime_token_grid(clip: tuple[int, int]) -> None:
    """A 224x16-built (K400-shaped) model runs other clip sizes; prompts are never pooled."""
    frames, size = clip
    torch.manual_seed(0)
    model = PromptMViT(V2S, 3).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, frames, size, size), taps=(2, 12, 15))
    t, s = frames // 2, size // 4
    assert feats.prompts.shape == (1, 3, 768)
    assert {i: tuple(g.shape) for i, g in feats.taps.items()} == {
        2: (1, 192, t, s // 2, s // 2),
        12: (1, 384, t, s // 4, s // 4),
        15: (1, 768, t, -(-s // 8), -(-s // 8)),  # the last q-pool rounds up
    }
    assert feats.patches.shape[1] == t * (-(-s // 8)) ** 2
    assert feats.thw == (t, -(-s // 8), -(-s // 8))


def test_prompts_change_cls_but_not_the_pool_structure() -> None:
    torch.manual_seed(0)
    base = PromptMViT(pvit.get_config("tiny", mode="plain"), 0).eval()
    prompted = PromptMViT(pvit.get_config("tiny", mode="plain"), 2).eval()
    prompted.load_state_dict(base.state_dict(), strict=False)
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        a, b = base.forward_features(x), prompted.forward_features(x)
    assert a.patches.shape == b.patches.shape
    assert not torch.allclose(a.cls, b.cls)  # prompts take part in attention


def _run_paths(cfg: pvit.PViTConfig, prompts: int, x: torch.Tensor) -> dict[str, tuple]:
    """Output and parameter gradients of one model (same weights) through each attention path with a CPU
    backward."""
    torch.manual_seed(0)
    model = PromptMViT(cfg, prompts).train()
    out = {}
    for path in ("explicit", "sdpa", "folded"):
        model.attention = path
        model.zero_grad(set_to_none=True)
        feats = model.forward_features(x, taps=(1,))
        y = torch.cat((feats.cls, feats.prompts.flatten(1), feats.patches.flatten(1)), dim=1)
        y.square().mean().backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        out[path] = (y.detach(), grads)
    return out


@pytest.mark.parametrize("prompts", [0, 3])
def test_sdpa_and_folded_attention_match_explicit_mvit_v2_s_fp32(prompts: int) -> None:
    """SDPA with the rel-pos bias as a mask, and the bias folded into q and k, = torchvision's explicit
    attention on the mvit_v2_s preset (head_dim 96): outputs and gradients."""
    cfg = pvit.get_config("mvit_v2_s", mode="plain", drop_path=0.0, head_dropout=0.0)
    x = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    paths = _run_paths(cfg, prompts, x)
    y_e, g_e = paths["explicit"]
    assert g_e["blocks.0.attn.rel_pos_t"].abs().max() > 0  # the bias is on the autograd path
    if prompts:
        assert g_e["prompt_tokens"].abs().max() > 0
    for path in ("sdpa", "folded"):
        y_f, g_f = paths[path]
        assert (y_f - y_e).abs().max().item() <= 1e-5, path
        for name, grad in g_e.items():
            # Gradients span orders of magnitude; the absolute floor covers the k-pool norm biases, whose
            # exact gradient is 0 (softmax ignores a shift shared by all keys): only rounding noise.
            torch.testing.assert_close(g_f[name], grad, rtol=1e-4, atol=1e-5, msg=f"{path} {name}")


@pytest.mark.parametrize("path", ["sdpa", "folded"])
def test_attention_matches_explicit_bf16(path: str) -> None:
    """Under bf16 autocast the paths agree with explicit to bf16 rounding (2% of the output scale)."""
    cfg = pvit.get_config("tiny", mode="plain")
    torch.manual_seed(0)
    model = PromptMViT(cfg, 2).eval()
    x = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    outs = {}
    for name in ("explicit", path):
        model.attention = name
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            outs[name] = model.forward_features(x).patches.float()
    scale = outs["explicit"].abs().max()
    assert (outs[path] - outs["explicit"]).abs().max() <= 0.02 * scale


def test_attention_switch_is_validated_and_keeps_the_state_dict() -> None:
    with pytest.raises(ValueError, match="attention"):
        pvit.get_config("tiny", attention="flash")
    with pytest.raises(ValueError, match="pool_impl"):
        pvit.get_config("tiny", pool_impl="winograd")
    auto = PromptMViT(pvit.get_config("tiny", mode="plain"), 2).state_dict()
    for overrides in ({"attention": "explicit"}, {"attention": "flex"}, {"pool_impl": "shifts"}):
        other = PromptMViT(pvit.get_config("tiny", mode="plain", **overrides), 2).state_dict()
        assert {k: v.shape for k, v in auto.items()} == {k: v.shape for k, v in other.items()}

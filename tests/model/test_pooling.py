"""The depthwise pooling formulations (pvit.pooling) against ``nn.Conv3d``, and inside the model."""

from __future__ import annotations

import pvit
import pytest
import torch
import torch.nn as nn
from pvit.backbone import PromptMViT
from pvit.pooling import IMPLS, depthwise_conv3d, resolve_pool

# q pooling (stride 1, and the 2x of each stage's first block) and the k/v strides the presets use
# (mvit_v2_s: 8, 4, 2, 1; tiny: 4, 2, 1), on even and odd grids.
STRIDES = [(1, 1, 1), (1, 2, 2), (1, 4, 4), (1, 8, 8)]
SIZES = [(4, 16, 16), (3, 7, 9), (5, 11, 6)]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _conv(channels: int, stride: tuple[int, int, int], bias: bool, seed: int = 0) -> nn.Conv3d:
    torch.manual_seed(seed)
    conv = nn.Conv3d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=bias)
    if bias:
        nn.init.normal_(conv.bias)  # torchvision's pools have none; the formulations must still add it
    return conv


def _upstream(y: torch.Tensor) -> torch.Tensor:
    """An uneven upstream gradient for ``y``: a fixed function of each element's (channel, t, h, w)."""
    _, c, t, h, w = y.shape
    grid = torch.meshgrid(*(torch.arange(n, device=y.device) for n in (c, t, h, w)), indexing="ij")
    return torch.sin(1.0 + grid[0] * 0.7 + grid[1] * 1.3 + grid[2] * 0.4 + grid[3] * 0.9)


def _run(
    conv: nn.Conv3d, x: torch.Tensor, impl: str | None, repeat: int = 1, channel0: int = 0
) -> tuple[torch.Tensor, ...]:
    """Output and the input, weight (and bias) gradients of ``conv`` itself (impl None) or a formulation;
    ``channel0`` offsets the upstream gradient's channel index (one head's slice of a wider output)."""
    conv.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    y = conv(x) if impl is None else depthwise_conv3d(x, conv, impl, repeat)
    upstream = _upstream(torch.empty(1, channel0 + y.shape[1], *y.shape[2:], device=y.device))[channel0:]
    (y * upstream).sum().backward()
    grads = [x.grad, conv.weight.grad] + ([conv.bias.grad] if conv.bias is not None else [])
    return (y.detach(), *grads)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("impl", IMPLS)
def test_formulation_equals_conv3d(impl: str, stride: tuple[int, int, int], size: tuple, bias: bool) -> None:
    """Values and every gradient (input, weight, bias), fp32, on a channels-last view like the tokens'."""
    conv = _conv(8, stride, bias)
    tokens = torch.randn(2, *size, 8, generator=torch.Generator().manual_seed(1))  # (B, T, H, W, C)
    x = tokens.permute(0, 4, 1, 2, 3)
    want = _run(conv, x, None)
    got = _run(conv, x, impl)
    assert got[0].shape == want[0].shape
    for name, g, w in zip(("output", "input", "weight", "bias"), got, want, strict=False):
        # weight and bias gradients are sums over up to 2k products of O(1): fp32 reordering costs ~1e-5
        atol = 1e-4 if name in ("weight", "bias") else 1e-5
        torch.testing.assert_close(g, w, rtol=1e-5, atol=atol, msg=f"{impl} {name}")


@pytest.mark.parametrize("impl", IMPLS)
def test_repeat_applies_one_kernel_to_every_head(impl: str) -> None:
    """Heads folded into channels: ``repeat`` groups of channels share the kernel, and its gradient is the
    sum over them (what a per-head loop would give)."""
    conv = _conv(4, (1, 2, 2), bias=True)
    x = torch.randn(2, 3 * 4, 3, 7, 9, generator=torch.Generator().manual_seed(1))
    got = _run(conv, x, impl, repeat=3)
    heads = [_run(conv, x[:, 4 * h : 4 * h + 4], None, channel0=4 * h) for h in range(3)]
    torch.testing.assert_close(got[0], torch.cat([h[0] for h in heads], dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], torch.cat([h[1] for h in heads], dim=1), rtol=1e-5, atol=1e-5)
    for i, name in ((2, "weight"), (3, "bias")):
        torch.testing.assert_close(got[i], sum(h[i] for h in heads), rtol=1e-5, atol=1e-4, msg=name)


def test_only_depthwise_zero_padded_convs_are_accepted() -> None:
    with pytest.raises(ValueError, match="depthwise"):
        depthwise_conv3d(torch.randn(1, 4, 2, 4, 4), nn.Conv3d(4, 4, 3, padding=1, groups=2), "shifts")
    with pytest.raises(ValueError, match="formulation"):
        depthwise_conv3d(torch.randn(1, 4, 2, 4, 4), _conv(4, (1, 1, 1), False), "winograd")


@pytest.mark.parametrize("prompts", [0, 6])
@pytest.mark.parametrize("impl", ["channels_last", "shifts"])
def test_model_with_formulation_equals_conv(impl: str, prompts: int) -> None:
    """The backbone (q/k/v pools, strided, and the skip max-pools) gives the same outputs and gradients with
    each formulation as with torchvision's layout, at an odd clip size."""
    torch.manual_seed(0)
    model = PromptMViT(pvit.get_config("tiny", mode="plain"), prompts).train()
    x = torch.randn(2, 3, 6, 48, 40, generator=torch.Generator().manual_seed(0))
    results = {}
    for name in ("conv", impl):
        model.pool_impl = name
        model.zero_grad(set_to_none=True)
        feats = model.forward_features(x, taps=(1,))
        y = torch.cat(
            (feats.cls, feats.prompts.flatten(1), feats.patches.flatten(1), feats.taps[1].flatten(1)), 1
        )
        y.square().mean().backward()
        results[name] = (y.detach(), {k: p.grad for k, p in model.named_parameters() if p.grad is not None})
    (y_ref, g_ref), (y, g) = results["conv"], results[impl]
    assert (y - y_ref).abs().max().item() <= 1e-5
    assert g_ref["blocks.1.attn.pool_q.pool.weight"].abs().max() > 0
    for name, grad in g_ref.items():
        torch.testing.assert_close(g[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_auto_is_conv_on_cpu_and_channels_last_on_cuda() -> None:
    assert resolve_pool("auto", torch.device("cpu")) == "conv"
    assert resolve_pool("auto", torch.device("cuda")) == "channels_last"
    assert resolve_pool("shifts", torch.device("cpu")) == "shifts"


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("impl", IMPLS)
def test_formulations_on_cuda(impl: str, stride: tuple[int, int, int]) -> None:
    """On the GPU (cuDNN for channels_last, PyTorch's depthwise kernels for conv): fp32 without TF32 equals
    nn.Conv3d; under bf16 autocast every gradient is within bf16 rounding of the fp32 one."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        conv = _conv(96, stride, bias=False).cuda()
        x = torch.randn(4, 3, 7, 9, 96, device="cuda").permute(0, 4, 1, 2, 3)  # the tokens' layout
        want = _run(conv, x, None)
        for g, w in zip(_run(conv, x, impl), want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = _run(conv, x, impl)
        for g, w in zip(low, want, strict=True):
            assert (g.float() - w).norm() <= 0.02 * w.norm()
    finally:
        torch.backends.cudnn.allow_tf32 = saved

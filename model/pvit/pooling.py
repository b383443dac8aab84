"""MViTv2's token pooling with ``n_prefix`` unpooled prefix tokens, and three formulations of its 3x3x3
depthwise convolution (the same weights, exact in fp32):

- ``conv``: torchvision's layout: tokens transposed into a contiguous ``(B * heads, C, T, H, W)`` copy, then
  ``nn.Conv3d``. On CUDA that contiguous depthwise 3-D convolution goes to PyTorch's own
  ``conv_depthwise3d`` kernels (``aten/src/ATen/native/Convolution.cpp``: cuDNN is chosen for a depthwise
  convolution only when the input or weight is channels-last, or for fp16 2-D ones), whose backward took 27%
  of an H200 step. The CPU default, because oneDNN's bf16 channels-last depthwise weight gradient is wrong.
- ``channels_last``: tokens ``(B, N, heads * C)`` already are a channels-last ``(B, heads * C, T, H, W)``
  grid, so the convolution runs on that view with heads folded into the channels (the shared weight repeated
  per head) and no transpose. A channels-last depthwise convolution goes to cuDNN on CUDA (the same
  ``use_cudnn_depthwise`` rule; inductor's layout optimisation also picks channels-last for depthwise
  convolutions). The CUDA default.
- ``shifts``: the convolution as 27 shifted multiply-adds on the channels-last grid: plain elementwise work
  that inductor fuses into one kernel forward and backward (slow uncompiled: 27 passes over the data).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.video import mvit as tvm

Thw = tuple[int, int, int]
IMPLS: tuple[str, ...] = ("conv", "channels_last", "shifts")


def resolve_pool(name: str, device: torch.device) -> str:
    """``auto`` as the formulation for ``device``: channels_last (cuDNN) on CUDA, else conv."""
    if name != "auto":
        return name
    return "channels_last" if device.type == "cuda" else "conv"


def _shifted_sum(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
) -> torch.Tensor:
    """Depthwise ``conv3d(x, weight, bias, stride, padding, groups=C)`` as a sum of shifted strided slices."""
    _, c, *size = x.shape
    kernel = weight.shape[2:]
    out_size = [(n + 2 * p - k) // s + 1 for n, p, k, s in zip(size, padding, kernel, stride, strict=True)]
    padded = F.pad(x, (padding[2], padding[2], padding[1], padding[1], padding[0], padding[0]))
    out = None
    for i, j, k in itertools.product(*(range(n) for n in kernel)):
        window = padded[
            :,
            :,
            i : i + stride[0] * (out_size[0] - 1) + 1 : stride[0],
            j : j + stride[1] * (out_size[1] - 1) + 1 : stride[1],
            k : k + stride[2] * (out_size[2] - 1) + 1 : stride[2],
        ]
        term = window * weight[:, 0, i, j, k].view(c, 1, 1, 1)
        out = term if out is None else out + term
    assert out is not None
    return out if bias is None else out + bias.view(c, 1, 1, 1)


def _cpu_low_precision(x: torch.Tensor) -> bool:
    """Whether a CPU convolution of ``x`` runs in bf16/fp16 (its dtype, or autocast's cast of it)."""
    if x.device.type != "cpu":
        return False
    return x.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled("cpu")


def depthwise_conv3d(x: torch.Tensor, conv: nn.Conv3d, impl: str, repeat: int = 1) -> torch.Tensor:
    """``conv`` (a depthwise ``nn.Conv3d``) applied to ``x`` ``(N, repeat * C, T, H, W)`` (any memory layout)
    through formulation ``impl``; ``repeat`` > 1 applies the same per-channel kernel to each of ``repeat``
    channel groups (MViT's heads, which share one pooling kernel)."""
    weight, bias = conv.weight, conv.bias
    if conv.groups != conv.in_channels or weight.shape[1] != 1 or conv.padding_mode != "zeros":
        raise ValueError("depthwise_conv3d needs a depthwise, zero-padded Conv3d (groups = channels)")
    if repeat > 1:
        weight = weight.repeat(repeat, 1, 1, 1, 1)
        bias = None if bias is None else bias.repeat(repeat)
    if isinstance(conv.padding, str):
        raise ValueError(f"string padding {conv.padding!r} is not supported")
    stride, padding = tuple(conv.stride), tuple(int(p) for p in conv.padding)
    groups = weight.shape[0]
    if impl == "shifts":
        return _shifted_sum(x, weight, bias, stride, padding)
    if impl == "channels_last" and not _cpu_low_precision(x):
        x = x.contiguous(memory_format=torch.channels_last_3d)
    elif impl in ("channels_last", "conv"):
        # On CPU in bf16, oneDNN's depthwise Conv3d returns a wrong, run-to-run varying weight gradient for
        # channels-last input (sometimes 1e10 or inf from uninitialised memory); a contiguous copy avoids it.
        x = x.contiguous()
    else:
        raise ValueError(f"unknown pooling formulation {impl!r}; choose from {IMPLS}")
    return F.conv3d(x, weight, bias, stride, padding, conv.dilation, groups)


def _pool_grid_conv(pool: tvm.Pool, grid: torch.Tensor, thw: Thw) -> tuple[torch.Tensor, Thw]:
    """torchvision's layout: ``(B, heads, N, C)`` -> a contiguous ``(B * heads, C, T, H, W)`` copy, pooled,
    back to ``(B, heads, N', C)``."""
    b, g, _, c = grid.shape
    # contiguous(): with one head the reshape is a channels-last view of the fused qkv, and oneDNN's bf16
    # depthwise Conv3d (CPUs with AMX/AVX512-BF16) returns a wrong, run-to-run varying weight gradient
    # for channels-last input, sometimes 1e10 or inf from uninitialised memory. A no-op when reshape copied.
    x = grid.transpose(2, 3).reshape(b * g, c, *thw).contiguous()
    if pool.norm_before_pool and pool.norm_act is not None:
        x = pool.norm_act(x)
    x = pool.pool(x)
    return x.reshape(b, g, c, -1).transpose(2, 3), (x.shape[2], x.shape[3], x.shape[4])


def _pool_grid_channels_last(
    pool: tvm.Pool, grid: torch.Tensor, thw: Thw, impl: str
) -> tuple[torch.Tensor, Thw]:
    """The tokens' own layout: ``(B, heads, N, C)`` seen as ``(B, N, heads * C)``, which is a channels-last
    ``(B, heads * C, T, H, W)`` grid (a view when heads and C are adjacent in memory, as they are in the
    fused qkv's output), pooled with heads folded into the channels, back to ``(B, heads, N', C)``."""
    if pool.norm_before_pool:
        raise NotImplementedError("norm_before_pool pools are not MViTv2's; use pool_impl='conv'")
    b, g, _, c = grid.shape
    x = grid.transpose(1, 2).flatten(2).unflatten(1, thw).permute(0, 4, 1, 2, 3)
    # The block's skip max-pool runs as it is: the layout does not change its result.
    x = depthwise_conv3d(x, pool.pool, impl, repeat=g) if isinstance(pool.pool, nn.Conv3d) else pool.pool(x)
    tokens = x.permute(0, 2, 3, 4, 1).reshape(b, -1, g, c).transpose(1, 2)
    return tokens, (x.shape[2], x.shape[3], x.shape[4])


def pool_tokens(
    pool: tvm.Pool | None, x: torch.Tensor, thw: Thw, n_prefix: int, impl: str
) -> tuple[torch.Tensor, Thw]:
    """torchvision ``Pool.forward`` with ``n_prefix`` leading tokens passed through unpooled.

    ``x`` is ``(B, heads, N, C)`` (q/k/v) or ``(B, N, C)`` (block skip); ``impl`` is a resolved formulation.
    The pool's norm runs after the concatenation, so prefix tokens are normalised like CLS is in torchvision.
    """
    if pool is None:
        return x, thw
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(1)
    prefix, grid = x[:, :, :n_prefix], x[:, :, n_prefix:]
    if impl == "conv":
        pooled, new_thw = _pool_grid_conv(pool, grid, thw)
    else:
        pooled, new_thw = _pool_grid_channels_last(pool, grid, thw, impl)
    x = torch.cat((prefix, pooled), dim=2)
    if not pool.norm_before_pool and pool.norm_act is not None:
        x = pool.norm_act(x)
    return (x.squeeze(1) if squeeze else x), new_thw


__all__ = ["IMPLS", "depthwise_conv3d", "pool_tokens", "resolve_pool"]

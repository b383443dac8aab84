"""Video MViTv2 with ``K = 1 + n`` prefix tokens (CLS + n task prompts), torchvision-compatible state dict.

torchvision's ``MViT`` assumes exactly one prefix token (CLS) in three places: the token pooling
(``Pool.forward``), the decomposed relative position (``_add_rel_pos``) and the residual pooling add
(``_add_shortcut``). ``PrefixBlock`` re-implements the block's forward with the prefix length as an argument,
reusing every submodule of torchvision's block, so module paths, and hence state-dict keys, are unchanged.
Prefix tokens are never pooled, get no relative position and no residual-pool add, exactly like CLS.
With ``n = 0`` the computation is torchvision's.

How attention adds the decomposed rel-pos bias (``PViTConfig.attention``: sdpa, folded, flex, explicit) is in
``pvit.attention``; how the 3x3x3 depthwise q/k/v pooling runs (``PViTConfig.pool_impl``: conv, channels_last,
shifts) in ``pvit.pooling``. ``auto`` picks per input device; all use the same parameters.

The token grid ``(T, H, W)`` is read from the patch embedding at run time (torchvision uses the construction
size), and torchvision's own rel-pos interpolation resizes the tables, so one model runs at any clip size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torchvision.models.video import mvit as tvm

from .attention import attend, resolve_attention
from .config import PViTConfig
from .pooling import pool_tokens, resolve_pool

Thw = tuple[int, int, int]


def block_settings(cfg: PViTConfig) -> list[tvm.MSBlockConfig]:
    """MViTv2 per-block settings from stage depths; reproduces torchvision's ``mvit_v2_s`` table exactly.

    The first block of every stage after the first halves H and W of the queries and doubles the width;
    the k/v pool stride starts at ``kv_stride`` and shrinks with each q-pool so k/v grids stay comparable.
    """
    settings: list[tvm.MSBlockConfig] = []
    dim, kv = cfg.embed_dim, cfg.kv_stride
    for stage, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads, strict=True)):
        for j in range(depth):
            first = stage > 0 and j == 0
            if first:
                kv = max(kv // 2, 1)
            # The channel expansion happens in the stage's first block (proj_after_attn), as in torchvision.
            in_dim = dim // 2 if first else dim
            settings.append(
                tvm.MSBlockConfig(
                    num_heads=heads,
                    input_channels=in_dim,
                    output_channels=dim,
                    kernel_q=[3, 3, 3],
                    kernel_kv=[3, 3, 3],
                    stride_q=[1, 2, 2] if first else [1, 1, 1],
                    stride_kv=[1, kv, kv],
                )
            )
        dim *= 2
    return settings


def mvit_kwargs(cfg: PViTConfig) -> dict[str, Any]:
    """torchvision ``MViT`` keyword arguments of ``cfg``'s MViTv2 (``mvit_v2_s``'s fixed settings) built at
    its construction size; ``MViT(**mvit_kwargs(cfg))`` is torchvision's own model of the same shapes."""
    return {
        "spatial_size": (cfg.img_size, cfg.img_size),
        "temporal_size": cfg.num_frames,
        "block_setting": block_settings(cfg),
        "residual_pool": True,
        "residual_with_cls_embed": False,
        "rel_pos_embed": True,
        "proj_after_attn": True,
        "dropout": cfg.head_dropout,
        "stochastic_depth_prob": cfg.drop_path,
        "num_classes": cfg.num_classes,
    }


def _attention(
    attn: tvm.MultiscaleAttention, x: torch.Tensor, thw: Thw, n_prefix: int, attention: str, pool: str
) -> tuple[torch.Tensor, Thw]:
    """torchvision ``MultiscaleAttention.forward`` with ``n_prefix`` CLS-like tokens."""
    b, n, _ = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    k, k_thw = pool_tokens(attn.pool_k, k, thw, n_prefix, pool)
    v, _ = pool_tokens(attn.pool_v, v, thw, n_prefix, pool)
    q, q_thw = pool_tokens(attn.pool_q, q, thw, n_prefix, pool)
    out = attend(attn, q, k, v, q_thw, k_thw, n_prefix, attention)
    if attn.residual_pool:
        if attn.residual_with_cls_embed:
            out = out + q
        else:
            out = torch.cat((out[:, :, :n_prefix], out[:, :, n_prefix:] + q[:, :, n_prefix:]), dim=2)
    out = out.transpose(1, 2).reshape(b, -1, attn.output_dim)
    return attn.project(out), q_thw


class PrefixBlock(tvm.MultiscaleBlock):
    """torchvision's MViT block (same submodules and keys) whose forward takes the prefix length."""

    def forward(
        self, x: torch.Tensor, thw: Thw, n_prefix: int = 1, attention: str = "sdpa", pool: str = "conv"
    ) -> tuple[torch.Tensor, Thw]:
        """``attention`` and ``pool`` are resolved formulations (pvit.attention, pvit.pooling)."""
        if self.needs_transposal:
            raise NotImplementedError("PrefixBlock supports LayerNorm blocks only (as in MViTv2)")
        x_norm1 = self.norm1(x)
        x_attn, thw_new = _attention(self.attn, x_norm1, thw, n_prefix, attention, pool)
        if self.project is not None and self.proj_after_attn:
            x = self.project(x_norm1)
        x_skip, _ = pool_tokens(self.pool_skip, x, thw, n_prefix, pool)
        x = x_skip + self.stochastic_depth(x_attn)
        x_norm2 = self.norm2(x)
        x_proj = self.project(x_norm2) if self.project is not None and not self.proj_after_attn else x
        return x_proj + self.stochastic_depth(self.mlp(x_norm2)), thw_new


@dataclass
class Features:
    """What ``PromptMViT.forward_features`` returns. Tokens are after the final LayerNorm."""

    cls: torch.Tensor  # (B, C) CLS output
    prompts: torch.Tensor  # (B, n, C) prompt outputs, in prompt order; n may be 0
    patches: torch.Tensor  # (B, T'H'W', C) patch tokens of the last block
    thw: Thw  # token grid of the last block
    taps: dict[
        int, torch.Tensor
    ]  # block index -> (B, C_i, T_i, H_i, W_i) block output (before the final norm)


class PromptMViT(tvm.MViT):
    """torchvision ``MViT`` (MViTv2 settings) plus ``num_prompts`` learned prompt tokens after CLS.

    The state dict is torchvision's plus ``prompt_tokens`` (only when ``num_prompts > 0``).
    """

    def __init__(self, cfg: PViTConfig, num_prompts: int = 0) -> None:
        super().__init__(**mvit_kwargs(cfg), block=PrefixBlock)
        self.num_prompts = num_prompts
        # Formulations (pvit.attention, pvit.pooling; "auto" resolves per input device) and checkpointing:
        # plain attributes, so benches and tests can flip them on a built model.
        self.attention = cfg.attention
        self.pool_impl = cfg.pool_impl
        self.grad_checkpointing = cfg.act_checkpoint
        self.block_channels = [setting.output_channels for setting in block_settings(cfg)]
        self.prompt_tokens: nn.Parameter | None = None
        if num_prompts > 0:
            self.prompt_tokens = nn.Parameter(torch.zeros(1, num_prompts, cfg.embed_dim))
            nn.init.trunc_normal_(self.prompt_tokens, std=cfg.prompt_init_std)

    @property
    def n_prefix(self) -> int:
        return 1 + self.num_prompts

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of keeping them (timm's method name)."""
        self.grad_checkpointing = enable

    def _run_block(
        self, block: nn.Module, x: torch.Tensor, thw: Thw, attention: str, pool: str
    ) -> tuple[torch.Tensor, Thw]:
        if self.grad_checkpointing and torch.is_grad_enabled():
            # Non-reentrant: works with torch.compile, keyword-free non-tensor arguments and parameters
            # that need gradients when the input does not; the RNG state is restored for drop-path.
            out: tuple[torch.Tensor, Thw] = checkpoint(
                block, x, thw, self.n_prefix, attention, pool, use_reentrant=False
            )
            return out
        return block(x, thw, self.n_prefix, attention, pool)

    def forward_features(self, video: torch.Tensor, taps: tuple[int, ...] = ()) -> Features:
        """Run the encoder on ``video`` ``(B, 3, T, H, W)``; ``taps`` are block indices to return as grids."""
        if video.dim() != 5:
            raise ValueError(f"expected video (B, 3, T, H, W), got shape {tuple(video.shape)}")
        x = self.conv_proj(video)
        thw: Thw = (x.shape[2], x.shape[3], x.shape[4])
        x = self.pos_encoding(x.flatten(2).transpose(1, 2))  # prepends CLS
        if self.prompt_tokens is not None:
            x = torch.cat((x[:, :1], self.prompt_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1)
        k = self.n_prefix
        attention, pool = resolve_attention(self.attention, x.device), resolve_pool(self.pool_impl, x.device)
        grids: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x, thw = self._run_block(block, x, thw, attention, pool)
            if i in taps:
                grids[i] = x[:, k:].transpose(1, 2).reshape(x.shape[0], x.shape[2], *thw)
        x = self.norm(x)
        return Features(cls=x[:, 0], prompts=x[:, 1:k], patches=x[:, k:], thw=thw, taps=grids)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Action logits, like torchvision's ``MViT.forward`` (but any clip size)."""
        return self.head(self.forward_features(video).cls)


def spatial_stride_until(cfg: PViTConfig, block: int) -> tuple[int, int]:
    """(temporal, spatial) stride of ``block``'s output grid relative to the input clip."""
    t, s = 2, 4  # patch embedding stride (2, 4, 4)
    for setting in block_settings(cfg)[: block + 1]:
        t *= setting.stride_q[0]
        s *= setting.stride_q[1]
    return t, s


def resize_grid(x: torch.Tensor, size: tuple[int, ...], mode: str = "trilinear") -> torch.Tensor:
    """Resize a ``(B, C, T, H, W)`` grid to ``size`` unless it already has it (odd inputs pool with ceil)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False)

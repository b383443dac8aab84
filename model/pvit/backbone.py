"""Video MViTv2 with ``K = 1 + n`` prefix tokens (CLS + n task prompts), torchvision-compatible state dict.

torchvision's ``MViT`` assumes exactly one prefix token (CLS) in three places: the token pooling
(``Pool.forward``), the decomposed relative position (``_add_rel_pos``) and the residual pooling add
(``_add_shortcut``). ``PrefixBlock`` re-implements the block's forward with the prefix length as an argument,
reusing every submodule of torchvision's block, so module paths, and hence state-dict keys, are unchanged.
Prefix tokens are never pooled, get no relative position and no residual-pool add, exactly like CLS.
With ``n = 0`` the computation is torchvision's.

Attention runs through ``F.scaled_dot_product_attention`` by default (``PViTConfig.attention = "fused"``):
the decomposed rel-pos logits are computed from q as torchvision does, broadcast to the patch-patch block
and passed as the additive mask, with zero rows and columns for the prefix tokens. ``"explicit"`` keeps
torchvision's matmul, add, softmax, matmul for comparison; both use the same parameters.

The token grid ``(T, H, W)`` is read from the patch embedding at run time (torchvision uses the construction
size), and torchvision's own rel-pos interpolation resizes the tables, so one model runs at any clip size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.video import mvit as tvm

from .config import PViTConfig

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


def _pool_tokens(pool: tvm.Pool | None, x: torch.Tensor, thw: Thw, n_prefix: int) -> tuple[torch.Tensor, Thw]:
    """torchvision ``Pool.forward`` with ``n_prefix`` leading tokens passed through unpooled.

    ``x`` is ``(B, heads, N, C)`` (q/k/v) or ``(B, N, C)`` (block skip). The pool's norm runs after the
    concatenation, so prefix tokens are normalised like CLS is in torchvision.
    """
    if pool is None:
        return x, thw
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(1)
    prefix, grid = x[:, :, :n_prefix], x[:, :, n_prefix:]
    b, g, _, c = grid.shape
    # contiguous(): with one head the reshape is a channels-last view of the fused qkv, and oneDNN's bf16
    # depthwise Conv3d (CPUs with AMX/AVX512-BF16) returns a wrong, run-to-run varying weight gradient
    # for channels-last input, sometimes 1e10 or inf from uninitialised memory. A no-op when reshape copied.
    grid = grid.transpose(2, 3).reshape(b * g, c, *thw).contiguous()
    if pool.norm_before_pool and pool.norm_act is not None:
        grid = pool.norm_act(grid)
    grid = pool.pool(grid)
    new_thw: Thw = (grid.shape[2], grid.shape[3], grid.shape[4])
    x = torch.cat((prefix, grid.reshape(b, g, c, -1).transpose(2, 3)), dim=2)
    if not pool.norm_before_pool and pool.norm_act is not None:
        x = pool.norm_act(x)
    return (x.squeeze(1) if squeeze else x), new_thw


def _rel_table(table: torch.Tensor, q_size: int, k_size: int) -> torch.Tensor:
    """Look up a 1-D rel-pos table for every (query, key) pair: ``(q_size, k_size, C)``.

    As in MViTv2, the coarser grid's coordinates are scaled to the finer one, and the table is linearly
    resized when this grid needs more (or fewer) offsets than it was built for.
    """
    table = tvm._interpolate(table, int(2 * max(q_size, k_size) - 1))
    q_ratio = max(k_size / q_size, 1.0)
    k_ratio = max(q_size / k_size, 1.0)
    q_idx = torch.arange(q_size, device=table.device)[:, None] * q_ratio
    k_idx = (torch.arange(k_size, device=table.device)[None, :] + (1.0 - k_size)) * k_ratio
    return table[(q_idx - k_idx).long()]


def _rel_pos_bias(
    q_grid: torch.Tensor,
    q_thw: Thw,
    k_thw: Thw,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    rel_t: torch.Tensor,
) -> torch.Tensor:
    """Decomposed (t, h, w) relative-position logits for the patch-patch block of the attention matrix."""
    b, heads, _, c = q_grid.shape
    (qt, qh, qw), (kt, kh, kw) = q_thw, k_thw
    r = q_grid.reshape(b, heads, qt, qh, qw, c)
    bias_t = torch.einsum("bnthwc,tkc->bnthwk", r, _rel_table(rel_t, qt, kt))
    bias_h = torch.einsum("bnthwc,hkc->bnthwk", r, _rel_table(rel_h, qh, kh))
    bias_w = torch.einsum("bnthwc,wkc->bnthwk", r, _rel_table(rel_w, qw, kw))
    bias = bias_t[..., :, None, None] + bias_h[..., None, :, None] + bias_w[..., None, None, :]
    return bias.reshape(b, heads, qt * qh * qw, kt * kh * kw)


def _prefix_padded_bias(grid_bias: torch.Tensor, n_prefix: int, k_len: int) -> torch.Tensor:
    """The patch-patch bias grown to the full ``(B, heads, Nq, Nk)`` mask with zero prefix rows/columns.

    The last dimension is allocated padded to a multiple of 8 and sliced back: SDPA's memory-efficient kernel
    needs 8-element-aligned mask strides and would otherwise make this copy itself.
    """
    pad = -k_len % 8
    return F.pad(grid_bias, (n_prefix, pad, n_prefix, 0))[..., :k_len]


def _attend(
    attn: tvm.MultiscaleAttention,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_thw: Thw,
    k_thw: Thw,
    n_prefix: int,
    fused: bool,
) -> torch.Tensor:
    """softmax(scaler q k^T + rel-pos) v: one fused SDPA call, or torchvision's explicit matmuls."""
    has_rel = attn.rel_pos_h is not None and attn.rel_pos_w is not None and attn.rel_pos_t is not None
    grid_bias = (
        _rel_pos_bias(q[:, :, n_prefix:], q_thw, k_thw, attn.rel_pos_h, attn.rel_pos_w, attn.rel_pos_t)
        if has_rel
        else None
    )
    if fused:
        # The bias depends on q (it is q times the rel-pos tables), so it is a (B, heads, Nq, Nk) input.
        mask = None if grid_bias is None else _prefix_padded_bias(grid_bias, n_prefix, k.shape[2])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaler)
    scores = torch.matmul(attn.scaler * q, k.transpose(2, 3))
    if grid_bias is not None:
        # In place on a fresh matmul output is autograd-safe (matmul saves its inputs, not its output).
        scores[:, :, n_prefix:, n_prefix:] += grid_bias
    return torch.matmul(scores.softmax(dim=-1), v)


def _attention(
    attn: tvm.MultiscaleAttention, x: torch.Tensor, thw: Thw, n_prefix: int, fused: bool = True
) -> tuple[torch.Tensor, Thw]:
    """torchvision ``MultiscaleAttention.forward`` with ``n_prefix`` CLS-like tokens."""
    b, n, _ = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    k, k_thw = _pool_tokens(attn.pool_k, k, thw, n_prefix)
    v, _ = _pool_tokens(attn.pool_v, v, thw, n_prefix)
    q, q_thw = _pool_tokens(attn.pool_q, q, thw, n_prefix)
    out = _attend(attn, q, k, v, q_thw, k_thw, n_prefix, fused)
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
        self, x: torch.Tensor, thw: Thw, n_prefix: int = 1, fused: bool = True
    ) -> tuple[torch.Tensor, Thw]:
        if self.needs_transposal:
            raise NotImplementedError("PrefixBlock supports LayerNorm blocks only (as in MViTv2)")
        x_norm1 = self.norm1(x)
        x_attn, thw_new = _attention(self.attn, x_norm1, thw, n_prefix, fused)
        if self.project is not None and self.proj_after_attn:
            x = self.project(x_norm1)
        x_skip, _ = _pool_tokens(self.pool_skip, x, thw, n_prefix)
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
        settings = block_settings(cfg)
        super().__init__(
            spatial_size=(cfg.img_size, cfg.img_size),
            temporal_size=cfg.num_frames,
            block_setting=settings,
            residual_pool=True,
            residual_with_cls_embed=False,
            rel_pos_embed=True,
            proj_after_attn=True,
            dropout=cfg.head_dropout,
            stochastic_depth_prob=cfg.drop_path,
            num_classes=cfg.num_classes,
            block=PrefixBlock,
        )
        self.num_prompts = num_prompts
        # "fused" (SDPA) or "explicit" (torchvision's matmuls); a plain attribute, so benches can flip it.
        self.attention = cfg.attention
        self.block_channels = [setting.output_channels for setting in settings]
        self.prompt_tokens: nn.Parameter | None = None
        if num_prompts > 0:
            self.prompt_tokens = nn.Parameter(torch.zeros(1, num_prompts, cfg.embed_dim))
            nn.init.trunc_normal_(self.prompt_tokens, std=cfg.prompt_init_std)

    @property
    def n_prefix(self) -> int:
        return 1 + self.num_prompts

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
        grids: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x, thw = block(x, thw, k, self.attention == "fused")
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

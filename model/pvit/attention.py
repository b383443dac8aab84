"""MViTv2 attention with decomposed relative positions and ``K`` CLS-like prefix tokens, four ways.

All four compute ``softmax(scale q k^T + B) v`` where the bias ``B`` is zero in the prefix rows and columns
and, between a query at grid position ``(t, h, w)`` and a key at ``(t', h', w')``,
``A_t[q, t'] + A_h[q, h'] + A_w[q, w']``: three small ``(B, heads, Nq_grid, k_t | k_h | k_w)`` tensors
computed from q and the rel-pos tables (``rel_pos_terms``). They differ in how the bias reaches the kernel:

- ``explicit``: torchvision's matmul, add, softmax, matmul (the reference).
- ``sdpa``: ``F.scaled_dot_product_attention`` with the bias broadcast to a full ``(B, heads, Nq, Nk)`` mask
  (memory-efficient kernel; that mask costs 315 MB per first-stage block at batch 16, 16x224²).
- ``folded``: the bias folded into the dot product: q gains the columns ``[A_t, A_h, A_w] / scale`` and each
  grid key the one-hot columns of its ``t'``, ``h'`` and ``w'``, so ``scale q' k'^T = scale q k^T + B``
  exactly; one mask-free SDPA call (flash kernel on CUDA, and a backward everywhere). Costs
  ``k_t + k_h + k_w`` extra channels (22 at 16x224², 96 -> 120 with alignment; flash rounds 96 up to 128
  anyway) and a padded copy of q, k and v.
- ``flex``: ``torch.nn.attention.flex_attention`` with a ``score_mod`` that indexes the three small tensors,
  fused into one kernel when compiled (on CUDA the eager path calls a compiled ``flex_attention``). Its
  gradients to the three tensors are scattered with atomic adds. FlexAttention has no CPU backward.

``resolve_attention`` picks ``auto``: ``folded`` on CUDA, ``sdpa`` elsewhere (so CPU numerics stay those of
the SDPA path the golden-loss tests pinned).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.models.video import mvit as tvm

Thw = tuple[int, int, int]
Terms = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def resolve_attention(name: str, device: torch.device) -> str:
    """``auto`` as the formulation for ``device``: folded on CUDA (a mask-free flash call), else sdpa."""
    if name != "auto":
        return name
    return "folded" if device.type == "cuda" else "sdpa"


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


def rel_pos_terms(attn: tvm.MultiscaleAttention, q_grid: torch.Tensor, q_thw: Thw, k_thw: Thw) -> Terms:
    """The decomposed rel-pos logits ``(A_t, A_h, A_w)``, each ``(B, heads, qt, qh, qw, k_t|k_h|k_w)``."""
    assert attn.rel_pos_h is not None and attn.rel_pos_w is not None and attn.rel_pos_t is not None
    b, heads, _, c = q_grid.shape
    (qt, qh, qw), (kt, kh, kw) = q_thw, k_thw
    r = q_grid.reshape(b, heads, qt, qh, qw, c)
    bias_t = torch.einsum("bnthwc,tkc->bnthwk", r, _rel_table(attn.rel_pos_t, qt, kt))
    bias_h = torch.einsum("bnthwc,hkc->bnthwk", r, _rel_table(attn.rel_pos_h, qh, kh))
    bias_w = torch.einsum("bnthwc,wkc->bnthwk", r, _rel_table(attn.rel_pos_w, qw, kw))
    return bias_t, bias_h, bias_w


def full_bias(terms: Terms) -> torch.Tensor:
    """The patch-patch block of the bias, materialised: ``(B, heads, Nq_grid, Nk_grid)``."""
    bias_t, bias_h, bias_w = terms
    b, heads, qt, qh, qw, _ = bias_t.shape
    bias = bias_t[..., :, None, None] + bias_h[..., None, :, None] + bias_w[..., None, None, :]
    return bias.reshape(b, heads, qt * qh * qw, -1)


def _explicit(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, terms: Terms | None, n_prefix: int, scale: float
) -> torch.Tensor:
    scores = torch.matmul(scale * q, k.transpose(2, 3))
    if terms is not None:
        # In place on a fresh matmul output is autograd-safe (matmul saves its inputs, not its output).
        scores[:, :, n_prefix:, n_prefix:] += full_bias(terms)
    return torch.matmul(scores.softmax(dim=-1), v)


def prefix_padded_bias(grid_bias: torch.Tensor, n_prefix: int, k_len: int) -> torch.Tensor:
    """The patch-patch bias grown to the full ``(B, heads, Nq, Nk)`` mask with zero prefix rows/columns.

    The last dimension is allocated padded to a multiple of 8 and sliced back: SDPA's memory-efficient kernel
    needs 8-element-aligned mask strides and would otherwise make this copy itself.
    """
    pad = -k_len % 8
    return F.pad(grid_bias, (n_prefix, pad, n_prefix, 0))[..., :k_len]


def _sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, terms: Terms | None, n_prefix: int, scale: float
) -> torch.Tensor:
    """SDPA with the bias as its additive mask (the bias depends on q, so it is a full 4-D input)."""
    if terms is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    grid_bias = full_bias(terms)
    if not q.is_cuda:
        mask = prefix_padded_bias(grid_bias, n_prefix, k.shape[2])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    q, k, v, mask = keys_padded_to_8(q, k, v, grid_bias, n_prefix)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def keys_padded_to_8(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid_bias: torch.Tensor, n_prefix: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """k and v padded with zero keys to a multiple of 8, masked out with -inf: a dense, 8-aligned mask.

    Under torch.compile on CUDA the slice of ``prefix_padded_bias`` need not survive as a view of an aligned
    buffer, and the memory-efficient kernel then finds no kernel for the mask's strides ("cutlassF: no kernel
    found to launch!"). A mask whose own last dimension is a multiple of 8 is aligned whatever layout the
    compiler picks. The padded keys get probability exactly 0, so the result is unchanged.
    """
    pad = -k.shape[2] % 8
    mask = F.pad(grid_bias, (n_prefix, 0, n_prefix, 0))
    if pad:
        mask = F.pad(mask, (0, pad), value=float("-inf"))
        k, v = F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
    return q, k, v, mask


def _key_one_hots(k_thw: Thw, n_prefix: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """``(Nk, width)``: grid key ``(t, h, w)`` has ones in columns ``t``, ``k_t + h``, ``k_t + k_h + w``;
    prefix keys and the alignment columns after ``k_t + k_h + k_w`` are zero."""
    kt, kh, kw = k_thw
    idx = torch.arange(kt * kh * kw, device=like.device)
    t, h, w = idx // (kh * kw), (idx // kw) % kh, idx % kw
    hots = torch.cat((F.one_hot(t, kt), F.one_hot(h, kh), F.one_hot(w, kw)), dim=1).to(like.dtype)
    return F.pad(hots, (0, width - (kt + kh + kw), n_prefix, 0))


@functools.lru_cache(maxsize=64)
def _cached_key_one_hots(
    k_thw: Thw, n_prefix: int, width: int, dtype: torch.dtype, device: torch.device, inference: bool
) -> torch.Tensor:
    # ``inference`` is part of the key: a tensor made under inference_mode must not reach autograd.
    return _key_one_hots(k_thw, n_prefix, width, torch.empty(0, dtype=dtype, device=device))


def _to_compute_dtype(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors in autocast's dtype when autocast is on: the pool norms hand q, k and v over in fp32,
    and the widened copies below are cheaper built in bf16 than cast by SDPA's autocast rule afterwards."""
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device):
        return list(tensors)
    dtype = torch.get_autocast_dtype(device)
    return [t.to(dtype) for t in tensors]


def _folded(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, terms: Terms | None, n_prefix: int, scale: float
) -> torch.Tensor:
    """One mask-free SDPA on q, k (and v) widened by the rel-pos columns; see the module docstring."""
    if terms is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    head_dim = q.shape[-1]
    k_thw = (terms[0].shape[-1], terms[1].shape[-1], terms[2].shape[-1])
    extra = sum(k_thw)
    # Flash and memory-efficient kernels want q, k and v equally wide and 8-element aligned.
    width = -(-(head_dim + extra) // 8) * 8 - head_dim
    rel = torch.cat(terms, dim=-1).flatten(2, 4) / scale  # SDPA multiplies it back by scale
    q, k, v, rel = _to_compute_dtype(q, k, v, rel)
    q = torch.cat((q, F.pad(rel, (0, width - extra, n_prefix, 0))), dim=-1)
    if torch.compiler.is_compiling():
        hots = _key_one_hots(k_thw, n_prefix, width, k)
    else:  # eager: build the constant once per shape, not every step
        inference = torch.is_inference_mode_enabled()
        hots = _cached_key_one_hots(k_thw, n_prefix, width, k.dtype, k.device, inference)
    k = torch.cat((k, hots.expand(k.shape[0], k.shape[1], -1, -1)), dim=-1)
    v = F.pad(v, (0, width))
    return F.scaled_dot_product_attention(q, k, v, scale=scale)[..., :head_dim]


@functools.cache
def _compiled_flex_attention() -> Callable[..., torch.Tensor]:
    """``flex_attention`` compiled once for eager callers: uncompiled it materialises the scores.

    Shapes are static (each MViT stage has its own q/k lengths and heads: about 7 variants per model, more
    with prompts and other clip sizes), so dynamo's per-function recompile limit (8) is raised to 64.
    """
    from torch.nn.attention.flex_attention import flex_attention

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    return torch.compile(flex_attention, dynamic=False)


def _flex(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, terms: Terms | None, n_prefix: int, scale: float
) -> torch.Tensor:
    """FlexAttention adding ``A_t + A_h + A_w`` to grid-grid scores in its ``score_mod``."""
    from torch.nn.attention.flex_attention import flex_attention

    flex: Callable[..., torch.Tensor] = flex_attention
    if q.is_cuda and not torch.compiler.is_compiling():
        flex = _compiled_flex_attention()
    q, k, v = _to_compute_dtype(q, k, v)  # older torch has no autocast rule for flex_attention
    if terms is None:
        return flex(q, k, v, scale=scale)
    # The terms are indexed in their 6-D (B, heads, qt, qh, qw, k) shape: flattening a permuted einsum
    # output would be a copy, which inductor's CPU flex lowering does not accept as a captured buffer.
    a_t, a_h, a_w = terms
    _, _, _, qh, qw, kh = a_h.shape
    kw = a_w.shape[-1]
    p = n_prefix

    def rel_pos_bias(
        score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        # Indices are clamped into range for the prefix rows/columns, whose bias the where() drops.
        qi, ki = (q_idx - p).clamp(min=0), (kv_idx - p).clamp(min=0)
        t, y, x = qi // (qh * qw), (qi // qw) % qh, qi % qw
        bias = (
            a_t[b, h, t, y, x, ki // (kh * kw)]
            + a_h[b, h, t, y, x, (ki // kw) % kh]
            + a_w[b, h, t, y, x, ki % kw]
        )
        return score + torch.where((q_idx >= p) & (kv_idx >= p), bias, 0.0)

    return flex(q, k, v, score_mod=rel_pos_bias, scale=scale)


_PATHS: dict[str, Callable[..., torch.Tensor]] = {
    "explicit": _explicit,
    "sdpa": _sdpa,
    "folded": _folded,
    "flex": _flex,
}


def attend(
    attn: tvm.MultiscaleAttention,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_thw: Thw,
    k_thw: Thw,
    n_prefix: int,
    path: str,
) -> torch.Tensor:
    """softmax(scaler q k^T + rel-pos) v through formulation ``path`` (a resolved name, not ``auto``)."""
    has_rel = attn.rel_pos_h is not None and attn.rel_pos_w is not None and attn.rel_pos_t is not None
    terms = rel_pos_terms(attn, q[:, :, n_prefix:], q_thw, k_thw) if has_rel else None
    return _PATHS[path](q, k, v, terms, n_prefix, attn.scaler)


__all__ = [
    "attend",
    "full_bias",
    "keys_padded_to_8",
    "prefix_padded_bias",
    "rel_pos_terms",
    "resolve_attention",
]

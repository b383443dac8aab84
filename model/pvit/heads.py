"""Task heads (architecture.md §5): an FC on the task token for pose3d and boxes; tap-fusing dense heads; and
the downstream heads besides action (Ego4D OSCC and PNR, AVA detection), which read the encoder's CLS and
last-stage patch tokens in every mode.

Every synthetic head maps ``(task token, Features, output size)`` to its prediction so ``PViT`` can keep them
in one ``nn.ModuleDict`` keyed by task name; the downstream heads take ``Features`` (plus the frame count
for PNR and the person boxes for AVA) and live in ``PViT.downstream``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import box_iou, roi_align

from .backbone import Features, resize_grid
from .config import PViTConfig

Size3 = tuple[int, int, int]


@dataclass(frozen=True)
class HeadContext:
    """What a head factory may size its head by."""

    cfg: PViTConfig
    dim: int  # channels of the last block: CLS, prompts and last-stage patch tokens
    tap_channels: tuple[int, ...]  # channels of the blocks tapped for dense heads (cfg.taps)
    tap_strides: tuple[tuple[int, int], ...]  # (time, space) stride of each tapped block
    real: bool = False  # the head of a real-world prompt (``real_<task>``, §A.2), not the synthetic one


@dataclass(frozen=True)
class HeadInput:
    """What a head call may read: the encoder's features, the task's token, the label size, AVA's boxes."""

    feats: Features
    token: torch.Tensor | None  # the task token (its prompt group's mean, or CLS in mt); None if it has none
    label_size: tuple[int, int, int]  # (T, h, w) of the label maps
    boxes: torch.Tensor | None = None  # ``(B, P, 4)`` person boxes, NaN rows padding (``forward``'s)


def call_token_head(head: nn.Module, x: HeadInput) -> dict[str, torch.Tensor]:
    """How dense and token heads are called: ``head(task token, features, label size)``."""
    return head(x.token, x.feats, x.label_size)


def _resize_time(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Linearly resample dim 1 of ``(B, T, ...)`` to ``frames`` (FC heads are built for ``num_frames``)."""
    if x.shape[1] == frames:
        return x
    b, t = x.shape[:2]
    rest = x.shape[2:]
    flat = x.reshape(b, t, -1).transpose(1, 2)
    flat = F.interpolate(flat, size=frames, mode="linear", align_corners=False)
    return flat.transpose(1, 2).reshape(b, frames, *rest)


class PoseHead(nn.Module):
    """FC on the task token -> per-frame 3D joints ``(B, T, J, 3)`` in metres."""

    def __init__(self, dim: int, num_frames: int, num_joints: int = 25) -> None:
        super().__init__()
        self.num_frames, self.num_joints = num_frames, num_joints
        self.fc = nn.Linear(dim, num_frames * num_joints * 3)

    def forward(self, token: torch.Tensor, feats: Features, out_size: Size3) -> dict[str, torch.Tensor]:
        pose = self.fc(token).reshape(-1, self.num_frames, self.num_joints, 3)
        return {"pose3d": _resize_time(pose, out_size[0])}


class BoxHead(nn.Module):
    """FC on the task token -> per-frame box slots: ``boxes`` ``(B, T, O, 4)`` xyxy in [0, 1] and
    ``boxes_cls`` logits ``(B, T, O, num_classes + 1)``; the last logit is "no object" (padding slots)."""

    def __init__(self, dim: int, num_frames: int, num_slots: int, num_classes: int) -> None:
        super().__init__()
        self.num_frames, self.num_slots, self.num_logits = num_frames, num_slots, num_classes + 1
        self.fc = nn.Linear(dim, num_frames * num_slots * (4 + self.num_logits))

    def forward(self, token: torch.Tensor, feats: Features, out_size: Size3) -> dict[str, torch.Tensor]:
        out = self.fc(token).reshape(-1, self.num_frames, self.num_slots, 4 + self.num_logits)
        out = _resize_time(out, out_size[0])
        # Centre/size through a sigmoid, then xyxy: boxes are always valid (x2 >= x1), which GIoU needs.
        cxcy, wh = out[..., :2].sigmoid(), out[..., 2:4].sigmoid()
        boxes = torch.cat((cxcy - wh / 2, cxcy + wh / 2), dim=-1).clamp(0.0, 1.0)
        return {"boxes": boxes, "boxes_cls": out[..., 4:]}


class DenseHead(nn.Module):
    """Patch tokens of three blocks, each upsampled by a transposed 3D conv to the finest tap's grid,
    dropout, concatenated with the (projected) task token, then a per-position MLP.

    The MLP predicts a ``ut x uh x uw`` cell of label pixels per tap-grid position (3D pixel shuffle), which
    brings back the time the patch embedding halved and reaches the label stride without a full-resolution
    conv; a final interpolation only runs if odd input sizes left a mismatch. ``output`` maps the
    ``(B, out_channels, T, h, w)`` map to the task's prediction (the task table's entry says how; None keeps
    it, as segmentation logits with the class dim 1 that ``F.cross_entropy`` expects).
    """

    def __init__(
        self,
        task: str,
        tap_channels: list[int],
        tap_strides: list[tuple[int, int]],
        token_dim: int,
        out_channels: int,
        label_stride: int,
        dim: int = 64,
        hidden: int = 256,
        dropout: float = 0.1,
        output: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.task, self.out_channels, self.output = task, out_channels, output
        base_t, base_s = tap_strides[0]
        self.upsample = nn.ModuleList()
        for channels, (t, s) in zip(tap_channels, tap_strides, strict=True):
            factor = (t // base_t, s // base_s, s // base_s)  # kernel = stride: each token becomes a cell
            self.upsample.append(nn.ConvTranspose3d(channels, dim, kernel_size=factor, stride=factor))
        self.dropout = nn.Dropout(dropout)
        self.token_proj = nn.Linear(token_dim, dim)
        self.cell = (base_t, max(base_s // label_stride, 1), max(base_s // label_stride, 1))
        cell_size = self.cell[0] * self.cell[1] * self.cell[2]
        self.mlp = nn.Sequential(
            nn.Conv3d(dim * (len(tap_channels) + 1), hidden, kernel_size=1),
            nn.GELU(),
            nn.Conv3d(hidden, out_channels * cell_size, kernel_size=1),
        )

    def forward(self, token: torch.Tensor, feats: Features, out_size: Size3) -> dict[str, torch.Tensor]:
        grids = [feats.taps[i] for i in sorted(feats.taps)]
        base = tuple(grids[0].shape[2:])
        ups = [self.dropout(resize_grid(up(g), base)) for up, g in zip(self.upsample, grids, strict=True)]
        tok = self.token_proj(token)[:, :, None, None, None].expand(-1, -1, *base)
        x = self.mlp(torch.cat(ups + [tok], dim=1))
        x = resize_grid(self._shuffle(x), out_size)  # (B, out_channels, T, h, w)
        return {self.task: self.output(x) if self.output is not None else x}

    def _shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C*ut*uh*uw, T, H, W) -> (B, C, T*ut, H*uh, W*uw)."""
        b, _, t, h, w = x.shape
        ut, uh, uw = self.cell
        x = x.reshape(b, self.out_channels, ut, uh, uw, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return x.reshape(b, self.out_channels, t * ut, h * uh, w * uw)


def depth_map(x: torch.Tensor) -> torch.Tensor:
    """A 1-channel dense map ``(B, 1, T, h, w)`` as depth ``(B, T, h, w)`` in metres."""
    return x[:, 0]


def unit_normals(x: torch.Tensor) -> torch.Tensor:
    """A 3-channel dense map ``(B, 3, T, h, w)`` as unit surface normals ``(B, T, h, w, 3)``."""
    return F.normalize(x.permute(0, 2, 3, 4, 1), dim=-1, eps=1e-6)


# --- downstream heads besides action: Ego4D OSCC/PNR, AVA detection (architecture.md §5) --------------------


def _linear(dim_in: int, dim_out: int) -> nn.Linear:
    """A classifier layer initialised like torchvision's MViT head (trunc-normal 0.02, zero bias)."""
    layer = nn.Linear(dim_in, dim_out)
    nn.init.trunc_normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


def patch_grid(feats: Features) -> torch.Tensor:
    """The last stage's normalised patch tokens as a ``(B, C, T', H', W')`` feature map."""
    b, _, c = feats.patches.shape
    return feats.patches.transpose(1, 2).reshape(b, c, *feats.thw)


class OsccHead(nn.Module):
    """Ego4D object state change classification: dropout and a 2-way linear layer on the CLS output."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.dropout, self.fc = nn.Dropout(dropout), _linear(dim, 2)

    def forward(self, feats: Features) -> dict[str, torch.Tensor]:
        return {"oscc": self.fc(self.dropout(feats.cls))}


class PnrHead(nn.Module):
    """Ego4D PNR keyframe localisation: one logit per sampled frame, ``(B, T)``, softmax-ed over time.

    As the Ego4D i3d baseline's ``ResNetKeyframeLocalizationHead`` (``models/head_helper.py``) does, the last
    stage is pooled over space only and a linear layer scores every temporal position. MViT's patch
    embedding halves time, so each token time step gives ``t_stride`` logits, one per frame it covers.
    """

    def __init__(self, dim: int, t_stride: int, dropout: float) -> None:
        super().__init__()
        self.dropout, self.fc = nn.Dropout(dropout), _linear(dim, t_stride)

    def forward(self, feats: Features, frames: int) -> dict[str, torch.Tensor]:
        x = self.dropout(patch_grid(feats).mean(dim=(3, 4)).transpose(1, 2))  # (B, T', C)
        logits = self.fc(x).flatten(1)  # (B, T' * t_stride), frame order
        if logits.shape[1] != frames:  # an odd clip length: resample the logits onto the T frames
            logits = F.interpolate(logits[:, None], size=frames, mode="linear", align_corners=False)[:, 0]
        return {"pnr": logits}


class AvaHead(nn.Module):
    """AVA action detection after SlowFast's ``ResNetRoIHead`` (paper §C.5), on the last MViT stage.

    Temporal average pool, ``torchvision.ops.roi_align`` of each person box (the keyframe box, replicated
    along time by the pooling), spatial max pool, dropout, linear to the classes. Returns logits
    ``(B, P, num_classes)``; scores are their sigmoid. ``boxes`` are ``(B, P, 4)`` xyxy normalised to the
    full input frame, NaN rows padding (their logits are 0 and carry no gradient).
    """

    def __init__(self, dim: int, num_classes: int, roi_size: int, dropout: float) -> None:
        super().__init__()
        self.roi_size, self.num_classes = roi_size, num_classes
        self.dropout, self.fc = nn.Dropout(dropout), _linear(dim, num_classes)

    def forward(self, feats: Features, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        # fp32 even under autocast: box coordinates in bf16 would be off by up to a pixel of the input.
        grid = patch_grid(feats).float().mean(dim=2)  # (B, C, H', W'): temporal average pool
        b, p = boxes.shape[:2]
        valid = torch.isfinite(boxes).all(-1)
        where = valid.nonzero()
        h, w = grid.shape[2:]
        # Normalised boxes straight to feature-map coordinates (pixel i spans [i, i+1], hence aligned=True):
        # the same sampling as SlowFast's pixel boxes with spatial_scale 1/32, and right for any H', W'.
        scale = torch.tensor([w, h, w, h], dtype=grid.dtype, device=grid.device)
        rois = torch.cat((where[:, :1].to(grid.dtype), boxes[valid].to(grid.dtype) * scale), dim=1)
        pooled = roi_align(grid, rois, self.roi_size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
        logits = self.fc(self.dropout(pooled.amax(dim=(2, 3))))  # (K, classes)
        out = logits.new_zeros(b, p, self.num_classes)
        out[valid] = logits
        return {"ava": out}


def pad_per_clip(rows: Sequence[torch.Tensor], fill: float) -> torch.Tensor:
    """Stack per-clip ``(P_i, ...)`` tensors into ``(B, max P_i, ...)``, padding rows with ``fill``.

    The model takes AVA boxes padded with NaN (``fill=nan``) and the loss takes labels padded with -1.
    """
    if not rows:
        raise ValueError("pad_per_clip needs at least one clip")
    most = max(r.shape[0] for r in rows)
    out = rows[0].new_full((len(rows), most, *rows[0].shape[1:]), fill)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def ava_training_boxes(
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    proposals: torch.Tensor | None,
    iou_threshold: float = 0.9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training clip's persons: the ground truth plus every proposal overlapping one by IoU > threshold.

    A kept proposal takes the labels of the ground-truth box it overlaps most (the paper's §C.5 and
    SlowFast's ``iou90`` training box lists). ``gt_boxes`` ``(G, 4)`` and ``proposals`` ``(N, 4+)`` are
    xyxy in one coordinate frame (extra proposal columns, e.g. a score, are ignored); ``gt_labels`` is
    ``(G, classes)``. Returns ``(boxes, labels)``, ground truth first.
    """
    if proposals is None or proposals.numel() == 0 or gt_boxes.numel() == 0:
        return gt_boxes, gt_labels
    iou = box_iou(proposals[:, :4].float(), gt_boxes.float())  # (N, G)
    best, match = iou.max(dim=1)
    keep = best > iou_threshold
    boxes = torch.cat((gt_boxes, proposals[keep, :4].to(gt_boxes.dtype)))
    return boxes, torch.cat((gt_labels, gt_labels[match[keep]]))

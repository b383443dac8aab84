"""Task heads (DESIGN §5): an FC on the task token for pose3d and boxes; tap-fusing dense heads.

Every head maps ``(task token, Features, output size)`` to its prediction so ``PViT`` can keep them in one
``nn.ModuleDict`` keyed by task name.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Features, resize_grid

Size3 = tuple[int, int, int]


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
    conv; a final interpolation only runs if odd input sizes left a mismatch.
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
    ) -> None:
        super().__init__()
        self.task, self.out_channels = task, out_channels
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
        return {self.task: self._format(x)}

    def _shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C*ut*uh*uw, T, H, W) -> (B, C, T*ut, H*uh, W*uw)."""
        b, _, t, h, w = x.shape
        ut, uh, uw = self.cell
        x = x.reshape(b, self.out_channels, ut, uh, uw, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return x.reshape(b, self.out_channels, t * ut, h * uh, w * uw)

    def _format(self, x: torch.Tensor) -> torch.Tensor:
        if self.task == "depth":
            return x[:, 0]  # (B, T, h, w) metres
        if self.task == "normal":
            return F.normalize(x.permute(0, 2, 3, 4, 1), dim=-1, eps=1e-6)  # (B, T, h, w, 3) unit vectors
        return x  # segm logits (B, K, T, h, w), class dim 1 as F.cross_entropy expects

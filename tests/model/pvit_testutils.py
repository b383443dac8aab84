"""Helpers for the pvit tests: tiny models and a batch of trainer-style targets on CPU."""

from __future__ import annotations

import pvit
import torch

NUM_CLASSES, NUM_SEG, NUM_BOX_CLASSES, NUM_SLOTS = 7, 5, 3, 4


def tiny(mode: str = "pvit", **overrides: object) -> pvit.PViT:
    torch.manual_seed(0)
    return pvit.build_model(
        "tiny",
        mode,
        num_classes=NUM_CLASSES,
        num_seg_classes=NUM_SEG,
        num_box_classes=NUM_BOX_CLASSES,
        num_box_slots=NUM_SLOTS,
        **overrides,
    )


def make_targets(batch: int = 2, frames: int = 4, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every label present for every sample; tests knock entries out."""
    g = torch.Generator().manual_seed(seed)
    b, t, h, w = batch, frames, size, size
    boxes = torch.tensor([0.1, 0.2, 0.5, 0.7]).expand(b, t, NUM_SLOTS, 4).clone()
    boxes_cls = torch.randint(0, NUM_BOX_CLASSES, (b, t, NUM_SLOTS), generator=g)
    boxes[:, :, -1] = float("nan")  # one padding row per frame
    boxes_cls[:, :, -1] = -1
    return {
        "action": torch.randint(0, NUM_CLASSES, (b,), generator=g),
        "depth": torch.rand(b, t, h, w, generator=g) * 5,
        "normal": torch.nn.functional.normalize(torch.randn(b, t, h, w, 3, generator=g), dim=-1),
        "segm": torch.randint(0, NUM_SEG, (b, t, h, w), generator=g),
        "pose3d": torch.randn(b, t, 25, 3, generator=g),
        "boxes": boxes,
        "boxes_cls": boxes_cls,
        "mask": torch.ones(b, len(pvit.TASKS), dtype=torch.bool),
    }

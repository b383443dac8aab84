"""Geometric augmentation that keeps every label consistent with the pixels (DESIGN §2).

Works on one decoded sample (numpy, in a loader worker). Dense label maps sit on a grid `stride` times
coarser than the RGB frames; crops are chosen on that label grid and multiplied by the stride for the RGB,
so clip and labels stay exactly aligned. A horizontal flip negates normal x and pose x, swaps left/right
Kinect joints and mirrors boxes; a zoom + crop resamples dense maps (nearest, so classes and NaN holes
survive) and shifts/clips boxes. Depth, normals and 3D pose are camera-frame quantities that a zoom (a
focal-length change) leaves as they are.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.schema import BOX_CLS_PADDING, KINECT_FLIP

DENSE = ("depth.npy", "normal.npy", "segm.npy")
_FLIP = np.asarray(KINECT_FLIP)


def hflip(sample: dict) -> dict:
    """Mirror the clip and its labels left-right."""
    out = dict(sample)
    out["video"] = sample["video"][:, :, ::-1]
    for name in DENSE:
        if name in sample:
            out[name] = sample[name][:, :, ::-1]
    if "normal.npy" in sample:
        out["normal.npy"] = out["normal.npy"] * np.array([-1, 1, 1], dtype=sample["normal.npy"].dtype)
    if "pose3d.npy" in sample:
        # Joint i of the mirrored person is the mirror image of joint KINECT_FLIP[i] of the original.
        out["pose3d.npy"] = sample["pose3d.npy"][:, _FLIP] * np.array([-1, 1, 1], dtype=np.float32)
    if "boxes.npy" in sample:
        boxes = sample["boxes.npy"]
        out["boxes.npy"] = np.stack([1 - boxes[..., 2], boxes[..., 1], 1 - boxes[..., 0], boxes[..., 3]], -1)
    return out


def _nearest(array: np.ndarray, size: int) -> np.ndarray:
    """Resize axes 1 and 2 of `array` to `size` by nearest neighbour (index arithmetic, any dtype)."""
    src = array.shape[1]
    index = np.minimum(((np.arange(size) + 0.5) * src / size).astype(np.int64), src - 1)
    return array[:, index][:, :, index]


def _resize_video(video: np.ndarray, size: int) -> np.ndarray:
    if video.shape[1] == size:
        return video
    frames = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).float()
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def zoom_crop(sample: dict, grid: int, top: int, left: int, label_size: int, stride: int) -> dict:
    """Zoom the clip so its label grid is `grid` cells wide, then crop `label_size` cells at (top, left)."""
    out = dict(sample)
    if grid == label_size and top == 0 and left == 0:
        return out
    video = _resize_video(sample["video"], grid * stride)
    out["video"] = video[
        :, top * stride : (top + label_size) * stride, left * stride : (left + label_size) * stride
    ]
    for name in DENSE:
        if name in sample:
            out[name] = _nearest(sample[name], grid)[:, top : top + label_size, left : left + label_size]
    if "boxes.npy" in sample:
        out["boxes.npy"], out["boxes_cls.npy"] = _crop_boxes(
            sample["boxes.npy"], sample["boxes_cls.npy"], grid, top, left, label_size
        )
    return out


def _crop_boxes(
    boxes: np.ndarray, classes: np.ndarray, grid: int, top: int, left: int, label_size: int
) -> tuple[np.ndarray, np.ndarray]:
    shift = np.array([left, top, left, top], dtype=np.float32)
    moved = np.clip((boxes * grid - shift) / label_size, 0.0, 1.0)
    # A box cropped away entirely collapses to zero width or height: it becomes an empty slot.
    gone = ~((moved[..., 2] > moved[..., 0]) & (moved[..., 3] > moved[..., 1]))
    moved[gone] = np.nan
    classes = np.where(gone, BOX_CLS_PADDING, classes).astype(classes.dtype)
    return moved.astype(np.float32), classes


def random_augment(
    sample: dict,
    rng: np.random.Generator,
    scale: tuple[float, float],
    flip: bool,
    label_size: int,
    stride: int,
) -> dict:
    """Training augmentation: zoom by a factor in `scale`, random crop back to size, random flip."""
    grid = max(label_size, int(round(label_size * rng.uniform(*scale))))
    top, left = (int(v) for v in rng.integers(0, grid - label_size + 1, size=2))
    out = zoom_crop(sample, grid, top, left, label_size, stride)
    if flip and rng.random() < 0.5:
        out = hflip(out)
    return out


def eval_view(sample: dict, view: int, views: int, zoom: float, label_size: int, stride: int) -> dict:
    """Spatial test view `view` of `views`: the whole clip (1 view) or left/centre/right crops of a zoom."""
    if views == 1:
        return sample
    grid = max(label_size + 2, int(round(label_size * zoom)))
    spare = grid - label_size
    left = (0, spare // 2, spare)[view]
    return zoom_crop(sample, grid, spare // 2, left, label_size, stride)

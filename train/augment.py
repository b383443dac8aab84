"""PySlowFast's spatial protocol on stored full frames, every label kept consistent (architecture.md §2, §6).

Training (MViTv2's recipe, PySlowFast `random_short_side_scale_jitter` + `random_crop`): the short side is
scaled to an integer `s` drawn uniformly from `train_scale` and a random `crop_size` square is cut, then a
horizontal flip where the recipe allows. Testing (`uniform_crop`): the short side is scaled to `crop_size`
and 1 (centre) or 3 (left/top, centre, right/bottom) squares are cut along the long side.

Either way the square is first expressed as a window of the *stored* frame (integer pixels), and only that
window is resampled to `crop_size` (uint8 in and out, bilinear, antialiased only when it shrinks), so the cost
does not depend on how much of the frame is thrown away. Dense maps sit on a grid `label_stride` times
coarser than the stored frame; the output label grid (`crop_size // label_stride` square) samples them by
nearest neighbour at its cell centres inside the same window, so classes and NaN holes survive. Boxes
(normalised to the stored frame) are shifted, scaled and clipped; a box cut away becomes an empty slot. A
flip negates normal x and pose x, swaps left/right Kinect joints and mirrors boxes. Depth, normals and 3D
pose are camera-frame quantities that a crop or a zoom (a focal-length change) leaves as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.geometry import scaled_hw
from pipeline.schema import BOX_CLS_PADDING, DENSE_MEMBERS, KINECT_FLIP, MEMBER_SPECS

PERSON_BOXES = ("ava_boxes.npy", "ava_proposals")  # AVA persons and stored detections, [P, 4(+score)]
# How each label follows a horizontal flip, as the schema declares it; the stored AVA detections (meta.json,
# not a member) are boxes too.
FLIP_OF: dict[str, str] = {
    **{name: spec.flip for name, spec in MEMBER_SPECS.items() if spec.flip},
    "ava_proposals": "boxes",
}
_FLIP = np.asarray(KINECT_FLIP)


@dataclass(frozen=True)
class SquareWindow:
    """A square of the stored frame in whole pixels: rows `top..top+side`, columns `left..left+side`."""

    top: int
    left: int
    side: int


@dataclass(frozen=True)
class Protocol:
    """The spatial protocol of one run: crop size, training scale range, flip, and the label grid."""

    crop_size: int  # pixels of the square the model sees
    train_scale: tuple[int, int]  # short side before the random crop, in pixels (PySlowFast: 256 320)
    flip: bool
    label_stride: int  # the build's --label-stride: stored frame pixels per label cell
    rand_augment: str = ""  # timm RandAugment config for real action clips (train/realaug.py); "" = off

    @property
    def label_size(self) -> int:
        """Side of the label maps the model predicts for a `crop_size` input."""
        return max(1, self.crop_size // self.label_stride)


# ----------------------------------------------------------------------------- choosing the window


def train_window(hw: tuple[int, int], protocol: Protocol, rng: np.random.Generator) -> SquareWindow:
    """Scale jitter + random crop as a window of the stored `hw` frame."""
    height, width = hw
    short = min(height, width)
    scale = int(rng.integers(protocol.train_scale[0], protocol.train_scale[1] + 1))
    side = min(short, max(1, int(round(protocol.crop_size * short / scale))))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return SquareWindow(top, left, side)


def uniform_crop_window(hw: tuple[int, int], view: int, views: int) -> SquareWindow:
    """Spatial test view `view` of `views` (1 or 3): squares of the short side along the long side."""
    height, width = hw
    side = min(height, width)
    spare = max(height, width) - side
    offset = (0, -(-spare // 2), spare)[1 if views == 1 else view]  # PySlowFast uniform_crop
    return SquareWindow(offset, 0, side) if height > width else SquareWindow(0, offset, side)


# ----------------------------------------------------------------------------- applying it


def resample_video(video: np.ndarray, window: SquareWindow, size: int) -> np.ndarray:
    """uint8 `[T,H,W,3]` -> the window resampled to `[T,size,size,3]` (bilinear, antialias when shrinking)."""
    crop = video[:, window.top : window.top + window.side, window.left : window.left + window.side]
    if window.side == size:
        return np.ascontiguousarray(crop)
    return resize_clip(crop, (size, size))


def resize_clip(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """uint8 `[T,h,w,3]` (a strided view is fine) -> `[T,*hw,3]`, bilinear, antialiased when shrinking."""
    # As NCHW a NHWC view is channels_last, the layout torch's vectorised uint8 bilinear kernel wants, and
    # its output comes back channels_last, i.e. NHWC-contiguous. antialias=True is plain bilinear when
    # enlarging (the filter support is then one pixel) and takes the faster separable uint8 path either way.
    nchw = torch.from_numpy(frames).permute(0, 3, 1, 2)
    out = F.interpolate(nchw, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def label_cells(start: int, side: int, frame: int, grid: int, size: int) -> np.ndarray:
    """Label-grid indices (of a `grid`-cell axis over `frame` pixels) at the centres of `size` cells
    spread over pixels `[start, start + side)`."""
    centres = start + (np.arange(size) + 0.5) * side / size
    return np.clip(np.floor(centres * grid / frame).astype(np.int64), 0, grid - 1)


def crop_dense(array: np.ndarray, hw: tuple[int, int], window: SquareWindow, size: int) -> np.ndarray:
    """A `[T,h,w,...]` label map of a stored `hw` frame -> `[T,size,size,...]` over `window` (nearest)."""
    rows = label_cells(window.top, window.side, hw[0], array.shape[1], size)
    cols = label_cells(window.left, window.side, hw[1], array.shape[2], size)
    return np.take(np.take(array, rows, axis=1), cols, axis=2)  # two takes: ~2x fancy indexing


def crop_box_array(
    boxes: np.ndarray, hw: tuple[int, int], window: SquareWindow
) -> tuple[np.ndarray, np.ndarray]:
    """xyxy boxes normalised to the stored frame -> normalised to `window`, clipped; and which survive."""
    height, width = hw
    scale = np.array([width, height, width, height], dtype=np.float32)
    shift = np.array([window.left, window.top, window.left, window.top], dtype=np.float32)
    moved = np.clip((boxes * scale - shift) / window.side, 0.0, 1.0).astype(np.float32)
    # A box cropped away entirely collapses to zero width or height.
    alive = (moved[..., 2] > moved[..., 0]) & (moved[..., 3] > moved[..., 1])
    moved[~alive] = np.nan
    return moved, alive


def apply_window(sample: dict, window: SquareWindow, protocol: Protocol) -> dict:
    """The sample seen through `window`: the clip at `crop_size`, labels on the model's label grid."""
    out = dict(sample)
    hw = sample["video"].shape[1:3]
    out["video"] = resample_video(sample["video"], window, protocol.crop_size)
    for name in DENSE_MEMBERS:
        if name in sample:
            out[name] = crop_dense(sample[name], hw, window, protocol.label_size)
    if "boxes.npy" in sample:
        out["boxes.npy"], alive = crop_box_array(sample["boxes.npy"], hw, window)
        out["boxes_cls.npy"] = np.where(alive, sample["boxes_cls.npy"], BOX_CLS_PADDING).astype(
            sample["boxes_cls.npy"].dtype
        )
    for name in PERSON_BOXES:
        if name in sample:
            # Persons keep their rows (their labels stay aligned); one cropped away is a NaN box.
            out[name], _ = crop_box_array(sample[name][..., :4], hw, window)
            if sample[name].shape[-1] > 4:  # detections carry their score in column 4
                out[name] = np.concatenate([out[name], sample[name][..., 4:]], axis=-1)
    return out


def hflip(sample: dict) -> dict:
    """Mirror the clip and its labels left-right."""
    out = dict(sample)
    # torch's flip kernel copies ~7x faster than numpy's reversed-stride copy of 3-byte pixels, and a
    # contiguous clip keeps the collate's stack a plain memcpy.
    out["video"] = torch.flip(torch.from_numpy(np.ascontiguousarray(sample["video"])), dims=[2]).numpy()
    for name, kind in FLIP_OF.items():
        if name in sample:
            out[name] = FLIPS[kind](sample[name])
    return out


def _flip_map(label: np.ndarray) -> np.ndarray:
    return label[:, :, ::-1]


def _flip_directions(label: np.ndarray) -> np.ndarray:
    return _negate_x(label[:, :, ::-1])


def _flip_joints(joints: np.ndarray) -> np.ndarray:
    # Joint i of the mirrored person is the mirror image of joint KINECT_FLIP[i] of the original.
    return joints[:, _FLIP] * np.array([-1, 1, 1], dtype=np.float32)


def _flip_boxes(boxes: np.ndarray) -> np.ndarray:
    mirrored = np.stack([1 - boxes[..., 2], boxes[..., 1], 1 - boxes[..., 0], boxes[..., 3]], -1)
    return np.concatenate([mirrored, boxes[..., 4:]], axis=-1).astype(boxes.dtype)  # a score column stays


FLIPS = {"map": _flip_map, "directions": _flip_directions, "joints": _flip_joints, "boxes": _flip_boxes}


def _negate_x(normal: np.ndarray) -> np.ndarray:
    """A copy of float16 normals `[..., 3]` with x negated: the sign bit flipped (exact, NaN stays NaN,
    and far cheaper than float16 arithmetic, which numpy emulates)."""
    out = np.ascontiguousarray(normal)
    out = out.copy() if out is normal else out
    bits = out.view(np.uint16) if out.dtype == np.float16 else None
    if bits is None:
        out[..., 0] *= -1
    else:
        bits[..., 0] ^= 0x8000
    return out


def train_view(sample: dict, protocol: Protocol, rng: np.random.Generator) -> dict:
    """Training augmentation: scale jitter, random crop, random flip (if the protocol allows)."""
    out = apply_window(sample, train_window(sample["video"].shape[1:3], protocol, rng), protocol)
    if protocol.flip and rng.random() < 0.5:
        out = hflip(out)
    return out


def full_frame_view(sample: dict, protocol: Protocol) -> dict:
    """The whole stored frame with its short side at the crop size (AVA's test protocol, as SlowFast's:
    a detector sees every person, so nothing is cropped). Boxes are normalised to the frame: unchanged."""
    out = dict(sample)
    video = sample["video"]
    height, width = video.shape[1:3]
    out["video"] = resize_clip(video, scaled_hw(height, width, protocol.crop_size))
    return out


def eval_view(sample: dict, view: int, views: int, protocol: Protocol) -> dict:
    """Spatial test view `view` of `views`: short side at the crop size, crops along the long side."""
    return apply_window(sample, uniform_crop_window(sample["video"].shape[1:3], view, views), protocol)

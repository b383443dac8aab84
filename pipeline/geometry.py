"""Build geometry: every clip becomes `size x size`, every label map `label_size x label_size`.

The short side is scaled to the target and the centre square kept, for the video and for every
label map alike, so pixels of both keep looking at the same point of the scene. Label maps are
resampled by nearest neighbour: a depth, a normal or a class id is never blended with its
neighbour (a blended class id would be a different class; a blended depth across an edge is a
surface that does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Window:
    """The centre square of a frame, in fractions of its height and width."""

    top: float
    left: float
    height: float
    width: float


def centre_square(height: int, width: int) -> Window:
    """The largest centred square of a `height x width` frame, as a `Window`."""
    side = min(height, width)
    return Window(
        top=(height - side) / 2 / height,
        left=(width - side) / 2 / width,
        height=side / height,
        width=side / width,
    )


def crop_and_resize_frames(video: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[T,H,W,3]` -> `[T,size,size,3]`: centre square, then an antialiased resize."""
    frames, height, width, _ = video.shape
    if height == width == size:
        return np.ascontiguousarray(video)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        square = Image.fromarray(video[t, top : top + side, left : left + side])
        out[t] = np.asarray(square.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0))
    return out


def nearest_indices(length: int, start: float, extent: float, size: int) -> np.ndarray:
    """Source indices sampled at the centres of `size` target cells over [start, start+extent)."""
    centres = (np.arange(size) + 0.5) / size * extent + start
    return np.clip(np.floor(centres * length).astype(np.int64), 0, length - 1)


def label_pixels(height: int, width: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a `height x width` map that its `size x size` label map keeps.

    An adapter with expensive per-pixel conversions (Hypersim at 1024x768) may select these pixels
    first: the engine's own resampling of the resulting `size x size` map is then the identity.
    """
    window = centre_square(height, width)
    rows = nearest_indices(height, window.top, window.height, size)
    cols = nearest_indices(width, window.left, window.width, size)
    return rows, cols


def crop_and_resize_map(label_map: np.ndarray, size: int) -> np.ndarray:
    """A `[T,h,w,...]` label map -> `[T,size,size,...]` by nearest neighbour over the centre square."""
    rows, cols = label_pixels(label_map.shape[1], label_map.shape[2], size)
    return np.ascontiguousarray(label_map[:, rows][:, :, cols])


def crop_boxes(boxes: np.ndarray, classes: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Map normalised xyxy boxes `[T,N,4]` into `window`, clipping; boxes left empty become padding."""
    boxes = boxes.astype(np.float32, copy=True)
    classes = classes.astype(np.int16, copy=True)
    boxes[..., 0::2] = (boxes[..., 0::2] - window.left) / window.width
    boxes[..., 1::2] = (boxes[..., 1::2] - window.top) / window.height
    boxes = np.clip(boxes, 0.0, 1.0)
    empty = np.isnan(boxes).any(-1) | (boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])
    boxes[empty] = np.nan
    classes[empty] = -1
    return boxes, classes


def pad_box_slots(boxes: np.ndarray, classes: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first `slots` non-empty boxes of every frame, in order, padding with NaN / -1."""
    frames = boxes.shape[0]
    out_boxes = np.full((frames, slots, 4), np.nan, dtype=np.float32)
    out_classes = np.full((frames, slots), -1, dtype=np.int16)
    for t in range(frames):
        kept = np.flatnonzero(classes[t] >= 0)[:slots]
        out_boxes[t, : len(kept)] = boxes[t, kept]
        out_classes[t, : len(kept)] = classes[t, kept]
    return out_boxes, out_classes

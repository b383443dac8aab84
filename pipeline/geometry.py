"""Build geometry: how a source frame becomes the stored frame, and its labels the stored labels.

A source frame `h x w` keeps a pixel *window* (`--crop none`: the whole frame, unless its long
side exceeds `--max-aspect` short sides, then the centre of it; `--crop centre`: the centre
square), and the window is scaled so its short side is `--size S`. Dense label maps are stored on
a grid `--label-stride k` times coarser than the stored frame, `[H/k, W/k]` (rounded), sampled by
nearest neighbour over the same window: a depth, a normal or a class id is never blended with its
neighbour (a blended class id would be a different class; a blended depth across an edge is a
surface that does not exist). Boxes are normalised to the stored frame, i.e. to the window.

The integer rules here are ffmpeg's, because real video is cut and scaled inside ffmpeg's filter
graph (`pipeline.video`): the window's pixel size is truncated, its offset is `trunc((iw-ow)/2)`,
and the scaled long side is `av_rescale(S, long, short)` (round half up), as the scale filter
computes a `-1` dimension. `pipeline.video` checks the decoded frame against `frame_geometry`.

`fit_sample` applies all of it to one clip and its labels: the one call the build makes per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.config import BuildConfig
from pipeline.schema import DENSE_MEMBERS, SampleError


@dataclass(frozen=True)
class Window:
    """A rectangle of a frame, in fractions of its height and width."""

    top: float
    left: float
    height: float
    width: float


FULL = Window(0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Framing:
    """How a source frame becomes the stored frame: the window kept and the short side it is scaled to."""

    size: int  # the stored short side S
    crop: str = "none"  # none: the whole frame, long side at most max_aspect short sides; centre: a square
    max_aspect: float = 2.0


@dataclass(frozen=True)
class FrameGeometry:
    """Where the stored frame comes from in a `source_hw` frame, and its stored sizes."""

    source_hw: tuple[int, int]
    crop_box: tuple[int, int, int, int]  # top, left, height, width of the kept window, source pixels
    hw: tuple[int, int]  # stored frame (H, W)
    label_hw: tuple[int, int]  # stored dense label maps (H/k, W/k)

    @property
    def window(self) -> Window:
        top, left, height, width = self.crop_box
        src_h, src_w = self.source_hw
        return Window(top / src_h, left / src_w, height / src_h, width / src_w)


def kept_window(height: int, width: int, crop: str, max_aspect: float) -> tuple[int, int, int, int]:
    """(top, left, height, width) in pixels of the part of a `height x width` frame that is kept."""
    if crop == "centre":
        keep_h = keep_w = min(height, width)
    else:
        keep_h = min(height, math.floor(width * max_aspect))
        keep_w = min(width, math.floor(height * max_aspect))
    return (height - keep_h) // 2, (width - keep_w) // 2, keep_h, keep_w


def scaled_hw(height: int, width: int, short_side: int) -> tuple[int, int]:
    """`height x width` scaled so the short side is `short_side`; the long side rounded half up."""
    if width >= height:
        return short_side, (short_side * width + height // 2) // height
    return (short_side * height + width // 2) // width, short_side


def label_hw(hw: tuple[int, int], stride: int) -> tuple[int, int]:
    """The dense label grid of a stored frame `hw`: each side divided by `stride`, rounded half up."""
    return tuple(max(1, (side + stride // 2) // stride) for side in hw)  # type: ignore[return-value]


def stored_geometry(height: int, width: int, framing: Framing, label_stride: int = 1) -> FrameGeometry:
    """The stored geometry of a `height x width` source frame under `framing`, labels at `label_stride`."""
    box = kept_window(height, width, framing.crop, framing.max_aspect)
    hw = scaled_hw(box[2], box[3], framing.size)
    return FrameGeometry((height, width), box, hw, label_hw(hw, label_stride))


def config_framing(config: BuildConfig) -> Framing:
    """The framing a build config asks for."""
    return Framing(config.size, config.crop, config.max_aspect)


def frame_geometry(height: int, width: int, config: BuildConfig) -> FrameGeometry:
    """The stored geometry of a `height x width` source frame under `config`."""
    return stored_geometry(height, width, config_framing(config), config.label_stride)


def resize_frames(video: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """uint8 `[T,h,w,3]` source frames -> `[T,H,W,3]`: the kept window, then an antialiased resize."""
    frames = video.shape[0]
    top, left, height, width = geometry.crop_box
    out_h, out_w = geometry.hw
    if (height, width) == (out_h, out_w) and (top, left) == (0, 0):
        return np.ascontiguousarray(video)
    out = np.empty((frames, out_h, out_w, 3), dtype=np.uint8)
    for t in range(frames):
        window = Image.fromarray(np.ascontiguousarray(video[t, top : top + height, left : left + width]))
        out[t] = np.asarray(window.resize((out_w, out_h), Image.Resampling.BILINEAR, reducing_gap=3.0))
    return out


def nearest_indices(length: int, start: float, extent: float, size: int) -> np.ndarray:
    """Source indices sampled at the centres of `size` target cells over [start, start+extent)."""
    centres = (np.arange(size) + 0.5) / size * extent + start
    return np.clip(np.floor(centres * length).astype(np.int64), 0, length - 1)


def label_pixels(map_hw: tuple[int, int], geometry: FrameGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a `map_hw` label map (covering the source frame) that the stored grid keeps.

    An adapter with expensive per-pixel conversions (Hypersim at 1024x768) may select these pixels
    first: the engine's own resampling of the resulting map is then the identity.
    """
    window = geometry.window
    rows = nearest_indices(map_hw[0], window.top, window.height, geometry.label_hw[0])
    cols = nearest_indices(map_hw[1], window.left, window.width, geometry.label_hw[1])
    return rows, cols


def resize_map(label_map: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """A `[T,h,w,...]` label map covering the source frame -> `[T,H/k,W/k,...]` by nearest neighbour."""
    rows, cols = label_pixels(label_map.shape[1:3], geometry)
    same_size = len(rows) == label_map.shape[1] and len(cols) == label_map.shape[2]
    if same_size and (rows == np.arange(len(rows))).all() and (cols == np.arange(len(cols))).all():
        return np.ascontiguousarray(label_map)
    return np.ascontiguousarray(label_map[:, rows][:, :, cols])


def crop_boxes(boxes: np.ndarray, classes: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Map normalised xyxy boxes `[..., N, 4]` into `window`, clipping; boxes left empty become padding."""
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


@dataclass(frozen=True)
class FittedSample:
    """A clip and its labels in the stored geometry."""

    video: np.ndarray  # uint8 [T, H, W, 3], short side `size`
    labels: dict[
        str, np.ndarray
    ]  # dense maps on the label grid; boxes in the stored frame, padded to the slots
    geometry: FrameGeometry


def fit_sample(
    video: np.ndarray,
    labels: dict[str, np.ndarray],
    config: BuildConfig,
    source_hw: tuple[int, int] | None = None,
    dense_on_grid: bool = False,
) -> FittedSample:
    """Frame a clip: the kept window at short side `size`, dense maps on the label grid, boxes
    normalised to the stored frame and padded to `max_objects` slots; `SampleError` when they do not fit.

    `video` is `[T, h, w, 3]` at the source size, or already framed by the decoder, in which case
    `source_hw` is the source frame it came from. `dense_on_grid`: the dense maps were sampled with
    `label_pixels` already (their resampling here is then the identity, and their size is checked).
    """
    height, width = source_hw or video.shape[1:3]
    geometry = frame_geometry(height, width, config)
    fitted = dict(labels)
    for name in DENSE_MEMBERS:
        if name in fitted:
            fitted[name] = _fit_dense(name, fitted[name], geometry, dense_on_grid)
    if "boxes.npy" in fitted or "boxes_cls.npy" in fitted:
        fitted["boxes.npy"], fitted["boxes_cls.npy"] = _fit_boxes(fitted, geometry, config.max_objects)
    return FittedSample(_fit_frames(video, geometry), fitted, geometry)


def _fit_frames(video: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """The stored frames: as they are when the decoder already framed them, else resized here."""
    if video.shape[1:3] == geometry.hw:
        return np.ascontiguousarray(video)
    if video.shape[1:3] != geometry.source_hw:
        (src_h, src_w), (out_h, out_w) = geometry.source_hw, geometry.hw
        raise SampleError(
            f"video frames are {video.shape[2]}x{video.shape[1]}, neither the source size "
            f"{src_w}x{src_h} nor the stored {out_w}x{out_h}"
        )
    return resize_frames(video, geometry)


def _fit_dense(name: str, array: np.ndarray, geometry: FrameGeometry, on_grid: bool) -> np.ndarray:
    if array.ndim < 3:
        raise SampleError(f"{name}: shape {array.shape}, expected [T,h,w,...]")
    if not on_grid:
        return resize_map(array, geometry)
    if array.shape[1:3] != geometry.label_hw:
        raise SampleError(f"{name}: {array.shape[1:3]} is not the label grid {geometry.label_hw}")
    return np.ascontiguousarray(array)


def _fit_boxes(
    labels: dict[str, np.ndarray], geometry: FrameGeometry, slots: int
) -> tuple[np.ndarray, np.ndarray]:
    if not {"boxes.npy", "boxes_cls.npy"} <= set(labels):
        raise SampleError("boxes.npy and boxes_cls.npy must come together")
    boxes, classes = labels["boxes.npy"], labels["boxes_cls.npy"]
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or classes.shape != boxes.shape[:2]:
        raise SampleError(f"boxes {boxes.shape} / boxes_cls {classes.shape}, expected [T,N,4] / [T,N]")
    boxes, classes = crop_boxes(boxes, classes, geometry.window)
    return pad_box_slots(boxes, classes, slots)

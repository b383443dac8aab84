"""`pvit-pipeline show`: a PNG contact sheet per sample with every label it carries drawn (torch-free).

    pvit-pipeline show shards/procedural                      # the first sample
    pvit-pipeline show shards/procedural --split val --count 4 --out val.png
    pvit-pipeline show shards/ssv2 --key ssv2-12345

Layout of one sample: a header line (source, id, split, label name, mask, config hash), then one row of
up to 8 frames across, then one row per label the sample carries, at the same frames:

- depth: `viridis` over log-metres from the minimum to the 98th percentile of the sample's depth, a
  colour bar in metres; NaN grey;
- normal: RGB = (n + 1) / 2 in the OpenCV camera frame (x right, y down, z forward), so a surface
  facing the camera is yellow-ish (z < 0 -> little blue); NaN grey;
- segm: a fixed palette (class id -> colour, the same in every sheet), legend with the label space's
  class names (`manifests/labelspaces/`); 65535 (ignore) grey;
- boxes: drawn on the frame with their class names (meta.json `box_space`);
- pose3d: the Kinect V2 skeleton projected with the sample's camera (meta.json `intrinsics`
  {fx, fy, cx, cy} in source-frame pixels with `crop_box`, or a source's known camera), else an
  orthographic side view;
- ava: the keyframe's person boxes with their action names; pnr: the point-of-no-return frame marked.

Dense labels smaller than the frame (a label stride) are upsampled by nearest neighbour, never
smoothed, so every pixel shows a stored value. The drawing primitives here are reused by
`train.visualize` for the model's predictions.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.fileio import atomic_write, first_line
from pipeline.manifest import read_manifest
from pipeline.reader import decode_sample
from pipeline.schema import KINECT_BONES, KINECT_JOINTS, SEGM_IGNORE, SampleError, tasks_of
from pipeline.shards import SpanError
from pipeline.spans import SpanRequest, read_store_span
from pipeline.storage import Store, open_store

GREY = (128, 128, 128)  # NaN depth / normal, ignored segmentation
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
MAX_FRAMES = 8
DEPTH_COLORMAP = "viridis"  # perceptually uniform, readable in greyscale
DEPTH_HIGH_PERCENTILE = 98.0  # far planes (sky at 100 m) would otherwise squash the near range
MIN_DEPTH = 1e-3  # metres; the log scale's floor
LEFT, RIGHT, CENTRE = (80, 160, 255), (255, 110, 80), (240, 240, 240)  # skeleton sides
_JOINT = {name: i for i, name in enumerate(KINECT_JOINTS)}
BONE_INDEX = tuple((_JOINT[a], _JOINT[b]) for a, b in KINECT_BONES)


class ShowError(ValueError):
    """What stops a sheet, in one line: a user mistake (unknown or quarantined key, empty split, bad count,
    an --out that cannot be written) or a damaged build (a sample that cannot be read)."""


# ----------------------------------------------------------------------------- colours


@cache
def _colormap(name: str) -> np.ndarray:
    from matplotlib import colormaps  # the colormap table only; no pyplot, no figure

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def depth_range(depth: np.ndarray) -> tuple[float, float]:
    """(low, high) metres the colours span: the minimum and the 98th percentile of the finite values."""
    finite = np.asarray(depth, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 1.0, 10.0
    low = max(float(finite.min()), MIN_DEPTH)
    high = max(float(np.percentile(finite, DEPTH_HIGH_PERCENTILE)), low)
    return low, high if high > low * 1.001 else low * 1.001


def depth_scale(depth: np.ndarray, low: float, high: float) -> np.ndarray:
    """Position in [0, 1] on the colour scale: log-metres, so 1-2 m and 10-20 m get equal room."""
    depth = np.clip(np.asarray(depth, dtype=np.float64), MIN_DEPTH, None)
    return np.clip(np.log(depth / low) / np.log(high / low), 0.0, 1.0)


def depth_colors(depth: np.ndarray, low: float, high: float) -> np.ndarray:
    """uint8 `[..., 3]`: log-metres from `low` to `high` (clipped) through the colormap; NaN grey."""
    depth = np.asarray(depth, dtype=np.float64)
    finite = np.isfinite(depth)
    scaled = depth_scale(np.where(finite, depth, low), low, high)
    out = _colormap(DEPTH_COLORMAP)[np.rint(scaled * 255).astype(np.int64)]
    out[~finite] = GREY
    return out


def normal_colors(normal: np.ndarray) -> np.ndarray:
    """uint8 `[..., 3]`: RGB = (n + 1) / 2 (OpenCV camera frame); a NaN component makes the pixel grey."""
    normal = np.asarray(normal, dtype=np.float64)
    valid = np.isfinite(normal).all(-1)
    out = np.clip(np.rint((np.nan_to_num(normal) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    out[~valid] = GREY
    return out


def palette_color(class_id: int) -> tuple[int, int, int]:
    """A fixed colour per class id: golden-ratio hue steps, three brightness levels (stable across sheets)."""
    hue = (class_id * 0.618033988749895 + 0.1) % 1.0
    value = (0.95, 0.75, 0.55)[class_id % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, 0.7, value)
    return round(r * 255), round(g * 255), round(b * 255)


def segm_colors(segm: np.ndarray) -> np.ndarray:
    """uint8 `[..., 3]` from class ids through `palette_color`; SEGM_IGNORE grey."""
    segm = np.asarray(segm, dtype=np.int64)
    ids = np.unique(segm)
    lut = {int(i): GREY if i == SEGM_IGNORE or i < 0 else palette_color(int(i)) for i in ids}
    out = np.zeros((*segm.shape, 3), dtype=np.uint8)
    for class_id, colour in lut.items():
        out[segm == class_id] = colour
    return out


def upsample_nearest(label: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """`label [h, w, ...]` to `[H, W, ...]` by nearest neighbour (pixel centres), for any h/H, w/W."""
    h, w = label.shape[:2]
    rows = np.minimum(((np.arange(hw[0]) + 0.5) * h / hw[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(hw[1]) + 0.5) * w / hw[1]).astype(np.int64), w - 1)
    return label[rows][:, cols]


# ----------------------------------------------------------------------------- text and shapes


@cache
def font(size: int = 11) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def text_width(text: str, size: int = 11) -> int:
    return math.ceil(font(size).getlength(text))


def wrap(text: str, width: int, size: int = 11) -> list[str]:
    """Greedy word wrap to `width` pixels (a word longer than the width gets a line of its own)."""
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}" if line else word
        if line and text_width(trial, size) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


def label_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    colour: tuple[int, int, int],
    size: int = 10,
) -> None:
    """Text on a dark box so it reads on any background; kept inside the image."""
    x, y = xy
    w, h = text_width(text, size) + 4, size + 4
    x = min(max(x, 0), max(draw.im.size[0] - w, 0))
    y = min(max(y, 0), max(draw.im.size[1] - h, 0))
    draw.rectangle((x, y, x + w, y + h), fill=(0, 0, 0))
    draw.text((x + 2, y + 1), text, fill=colour, font=font(size))


def draw_boxes(
    image: Image.Image,
    boxes: np.ndarray,
    names: list[str],
    colours: list[tuple[int, int, int]],
    width: int = 2,
) -> Image.Image:
    """Boxes xyxy normalised to the whole image, outlined from pixel floor(x0 * W) to ceil(x1 * W) - 1."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for box, name, colour in zip(boxes, names, colours, strict=True):
        if not np.isfinite(box).all():
            continue
        x0, y0 = math.floor(box[0] * w), math.floor(box[1] * h)
        x1, y1 = max(math.ceil(box[2] * w) - 1, x0), max(math.ceil(box[3] * h) - 1, y0)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        if name:
            label_text(draw, (x0, y0 - 14 if y0 >= 14 else y0 + width), name, colour)
    return image


def draw_skeleton(image: Image.Image, points: np.ndarray, radius: int = 2) -> Image.Image:
    """Kinect V2 bones between finite 2D points `[25, 2]` (pixels of `image`); left blue, right orange."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    finite = np.isfinite(points).all(-1)
    for (a, b), (name_a, _) in zip(BONE_INDEX, KINECT_BONES, strict=True):
        if finite[a] and finite[b]:
            side = _side(KINECT_JOINTS[b]) if _side(name_a) == CENTRE else _side(name_a)
            draw.line((*points[a], *points[b]), fill=side, width=2)
    for i in np.flatnonzero(finite):
        x, y = points[i]
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=_side(KINECT_JOINTS[i]))
    return image


def _side(joint: str) -> tuple[int, int, int]:
    return LEFT if joint.endswith("_left") else RIGHT if joint.endswith("_right") else CENTRE


# ----------------------------------------------------------------------------- cameras


def known_camera(source: str, hw: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """(fx, fy, cx, cy) in stored-frame pixels for a source whose camera is fixed by construction.

    The adapter registered as `source` says so with a `fixed_camera(hw)` classmethod (procedural,
    surreact); any other source, or a name no adapter has, has none.
    """
    from pipeline.sources import SourceError, get_source

    try:
        adapter = get_source(source)
    except SourceError:
        return None
    fixed_camera = getattr(adapter, "fixed_camera", None)
    return fixed_camera(hw) if fixed_camera is not None else None


def camera_of(meta: dict, hw: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """(fx, fy, cx, cy) in stored-frame pixels: meta.json `intrinsics` (source-frame pixels, moved through
    `crop_box` and scaled to the stored `hw`), else the source's known camera, else None."""
    given = meta.get("intrinsics")
    if isinstance(given, dict) and {"fx", "fy", "cx", "cy"} <= set(given):
        fx, fy, cx, cy = (float(given[k]) for k in ("fx", "fy", "cx", "cy"))
        source_hw = meta.get("orig_hw") or hw
        top, left, height, width = meta.get("crop_box") or (0, 0, *source_hw)
        sy, sx = hw[0] / height, hw[1] / width
        return fx * sx, fy * sy, (cx - left) * sx, (cy - top) * sy
    return known_camera(str(meta.get("source", "")), hw)


def project(joints: np.ndarray, camera: tuple[float, float, float, float]) -> np.ndarray:
    """Camera-frame points `[..., 3]` (OpenCV) -> pixels `[..., 2]`; NaN behind the camera or missing."""
    fx, fy, cx, cy = camera
    joints = np.asarray(joints, dtype=np.float64)
    z = joints[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([fx * joints[..., 0] / z + cx, fy * joints[..., 1] / z + cy], axis=-1)
    uv[~(z > 1e-6)] = np.nan
    return uv


def side_view(joints: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Orthographic side view: z (forward) to the right, y (down) down, one scale for all frames given.

    `joints [T, J, 3]` -> pixels `[T, J, 2]` inside an image of `size` (w, h) with a 10% margin.
    """
    w, h = size
    zy = np.asarray(joints, dtype=np.float64)[..., [2, 1]]
    finite = np.isfinite(zy).all(-1)
    if not finite.any():
        return np.full(zy.shape, np.nan)
    low, high = zy[finite].min(0), zy[finite].max(0)
    centre, span = (low + high) / 2, max(float((high - low).max()), 1e-6)
    scale = 0.8 * min(w, h) / span
    out = (zy - centre) * scale + np.array([w / 2, h / 2])
    out[~finite] = np.nan
    return out


# ----------------------------------------------------------------------------- reading samples


def read_samples(
    source_dir: Path | str | Store, key: str | None = None, split: str | None = None, count: int = 1
) -> list[dict]:
    """Decoded samples of a finished build: the one with `key`, else `count` spread evenly over `split`."""
    folder = open_store(source_dir)
    if count < 1:
        raise ShowError(f"--count must be at least 1, got {count}")
    rows = chosen_rows(folder, read_manifest(folder).to_pylist(), key, split, count)
    # str(): a damaged manifest's null shard reads as a missing file "None", one line like any other
    return [read_sample_at(folder, str(row["shard"]), row["offset"], row["size"], row["key"]) for row in rows]


def chosen_rows(
    source_dir: Path | Store, table: list[dict], key: str | None, split: str | None, count: int
) -> list[dict]:
    """The manifest rows to draw; `ShowError` (one line) for a key that is not there or was quarantined."""
    rows = [row for row in table if split in (None, row["split"])]
    if key is not None:
        rows = [row for row in rows if row["key"] == key]
        if not rows:
            like = f" (keys look like {table[0]['key']!r})" if table else " (the manifest is empty)"
            raise ShowError(f"{source_dir}: no sample with key {key!r}{like}")
        if rows[0]["status"] != "ok":
            raise ShowError(f"{key} was quarantined at build time: {rows[0]['reason']}; nothing to draw")
    rows = [row for row in rows if row["status"] == "ok"]
    if not rows:
        have = ", ".join(sorted({row["split"] for row in table})) or "none"
        raise ShowError(f"{source_dir}: no samples in split {split!r} (splits: {have})")
    picks = np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))
    return [rows[i] for i in picks]


def read_sample_at(folder: Store, shard: str, offset: int, size: int, key: str) -> dict:
    """The sample `key` stored at byte `offset` of shard `shard` of `folder` (its manifest row), decoded.

    A span that is not that sample (a missing or truncated tar, a damaged header, a stale offset or size)
    is a `ShowError` naming the shard and the key: `show` is often the first look at a damaged build.
    A remote shard is read by one ranged request.
    """
    advice = f"run `pvit-pipeline verify {folder}`"
    where = folder.where(shard)
    tar_bytes = folder.listing().get(shard)
    if tar_bytes is None:
        raise ShowError(f"{where}: missing, so sample {key} cannot be drawn; {advice}")
    try:
        return decode_sample(key, read_store_span(folder, shard, SpanRequest(offset, size, key), tar_bytes))
    except (SpanError, SampleError, OSError) as error:
        raise ShowError(f"{where}: sample {key} cannot be read ({first_line(error)}); {advice}") from None


# ----------------------------------------------------------------------------- composing a sheet

MARGIN, GAP, LABEL_W, LINE = 6, 2, 64, 14


@dataclass
class Row:
    """One row of a sheet: a name on the left, equal-size cells, and an optional panel on the right."""

    name: str
    cells: list[Image.Image]
    side: Image.Image | None = None


@dataclass
class Sheet:
    image: Image.Image
    rows: list[str]
    cells: dict[tuple[str, int], tuple[int, int, int, int]] = field(default_factory=dict)  # (x0, y0, x1, y1)


def compose(
    header: list[str], rows: list[Row], titles: list[str] | None = None, label_w: int = LABEL_W
) -> Sheet:
    """Stack rows of equal-size cells under a wrapped header (and optional column titles)."""
    cw, ch = rows[0].cells[0].size
    columns = max(len(row.cells) for row in rows)
    side_w = max((row.side.size[0] for row in rows if row.side is not None), default=0)
    width = MARGIN * 2 + label_w + columns * (cw + GAP) + (side_w + GAP if side_w else 0)
    lines = [line for text in header for line in wrap(text, width - 2 * MARGIN)]
    top = MARGIN + LINE * len(lines) + (LINE + 2 if titles else 0) + 4
    height = top + len(rows) * (ch + GAP) + MARGIN
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((MARGIN, MARGIN + i * LINE), line, fill=TEXT, font=font(11))
    x_cells = MARGIN + label_w
    for j, title in enumerate(titles or []):
        draw.text((x_cells + j * (cw + GAP) + 2, top - LINE - 4), title, fill=TEXT, font=font(11))
    sheet = Sheet(image, [row.name for row in rows])
    for i, row in enumerate(rows):
        y = top + i * (ch + GAP)
        for k, line in enumerate(wrap(row.name, label_w - 4)[: ch // LINE]):
            draw.text((MARGIN, y + 2 + k * LINE), line, fill=TEXT, font=font(11))
        for j, cell in enumerate(row.cells):
            x = x_cells + j * (cw + GAP)
            image.paste(cell, (x, y))
            sheet.cells[(row.name, j)] = (x, y, x + cw, y + ch)
        if row.side is not None:
            image.paste(row.side.crop((0, 0, row.side.size[0], ch)), (x_cells + columns * (cw + GAP), y))
    return sheet


def stack_vertically(images: list[Image.Image]) -> Image.Image:
    width = max(image.size[0] for image in images)
    out = Image.new("RGB", (width, sum(image.size[1] for image in images)), BACKGROUND)
    y = 0
    for image in images:
        out.paste(image, (0, y))
        y += image.size[1]
    return out


def depth_bar(low: float, high: float, height: int, has_nan: bool) -> Image.Image:
    """A vertical colour bar (far at the top) with ticks in metres, and the NaN swatch when NaN occurs."""
    panel = Image.new("RGB", (76, height), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    bar_top, bar_bottom = 6, height - (22 if has_nan else 6)
    values = np.geomspace(high, low, max(bar_bottom - bar_top, 2))
    strip = depth_colors(values, low, high)[:, None, :].repeat(12, axis=1)
    panel.paste(Image.fromarray(strip), (4, bar_top))
    for value in np.geomspace(low, high, 4):
        y = bar_bottom - float(depth_scale(value, low, high)) * (bar_bottom - bar_top)
        draw.line((16, y, 19, y), fill=TEXT)
        draw.text((21, y - 6), f"{value:.3g} m", fill=TEXT, font=font(10))
    if has_nan:
        draw.rectangle((4, height - 16, 15, height - 6), fill=GREY)
        draw.text((21, height - 18), "NaN", fill=TEXT, font=font(10))
    return panel


def normal_key(height: int) -> Image.Image:
    """The colours of a camera-facing unit hemisphere, so a reader can decode a normal's direction."""
    size = min(height - 20, 64)
    v, u = np.mgrid[0:size, 0:size]
    x, y = (u + 0.5) / size * 2 - 1, (v + 0.5) / size * 2 - 1
    inside = x * x + y * y <= 1
    z = -np.sqrt(np.clip(1 - x * x - y * y, 0, None))  # facing the camera: z < 0 in OpenCV axes
    rgb = normal_colors(np.stack([x, y, z], axis=-1))
    rgb[~inside] = BACKGROUND
    panel = Image.new("RGB", (76, height), BACKGROUND)
    panel.paste(Image.fromarray(rgb), (4, 4))
    ImageDraw.Draw(panel).text((4, size + 6), "x> y v z fwd", fill=TEXT, font=font(9))
    return panel


def legend(entries: list[tuple[str, tuple[int, int, int]]], height: int, column_w: int = 150) -> Image.Image:
    """Colour swatches with names, in as many columns as the row height needs."""
    per_column = max(1, (height - 4) // 13)
    columns = max(1, -(-len(entries) // per_column))
    panel = Image.new("RGB", (columns * column_w, height), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for i, (name, colour) in enumerate(entries):
        x, y = (i // per_column) * column_w + 4, (i % per_column) * 13 + 3
        draw.rectangle((x, y + 1, x + 9, y + 10), fill=colour)
        draw.text((x + 13, y), name[:24], fill=TEXT, font=font(10))
    return panel


def class_names(space: str | None, count: int = 0) -> list[str]:
    """The label space's class names from `manifests/labelspaces/`, or `class <id>` when unknown."""
    if space:
        try:
            from pipeline.labelspace import load_label_space

            return list(load_label_space(space).classes)
        except (FileNotFoundError, KeyError, TypeError):
            pass
    return [f"class {i}" for i in range(count)]


def name_of(names: list[str], class_id: int) -> str:
    return names[class_id] if 0 <= class_id < len(names) else f"class {class_id}"


# ----------------------------------------------------------------------------- one sample


def shown_frames(sample: dict, max_frames: int = MAX_FRAMES) -> list[int]:
    """Up to `max_frames` evenly spaced frame indices, always including the PNR frame and AVA keyframe."""
    t = len(sample["video"])
    picks = [int(i) for i in np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))]
    for must in (pnr_frame(sample), ava_keyframe(sample)):
        if must is not None and must not in picks:
            nearest = int(np.argmin([abs(p - must) for p in picks]))
            picks[nearest] = must
    return sorted(set(picks))


def pnr_frame(sample: dict) -> int | None:
    target = sample.get("pnr.npy")
    return int(np.argmax(target)) if target is not None and np.nanmax(target, initial=0) > 0 else None


def ava_keyframe(sample: dict) -> int | None:
    """The sampled frame nearest the AVA keyframe (meta `keyframe_index`), else the middle one."""
    if "ava_boxes.npy" not in sample:
        return None
    meta, t = sample["meta"], len(sample["video"])
    indices, keyframe = meta.get("frame_indices"), meta.get("keyframe_index")
    if keyframe is None or not indices or len(indices) != t:
        return t // 2
    return int(np.argmin([abs(i - keyframe) for i in indices]))


def header_of(meta: dict) -> list[str]:
    mask = int(meta.get("mask", 0))
    label = meta.get("label")
    label_text_ = f"label {meta.get('label_name')!r} ({label})" if label is not None else "no action label"
    parts = [
        str(meta.get("source")),
        f"id {meta.get('id')}",
        f"split {meta.get('split')}",
        label_text_,
        f"mask {mask:#x} ({','.join(tasks_of(mask)) or 'none'})",
        f"config {meta.get('config_hash')}",
    ]
    if meta.get("oscc") is not None:
        parts.insert(4, f"state change {'yes' if meta['oscc'] else 'no'}")
    return [" | ".join(parts)]


def sample_sheet(sample: dict, cell: int = 128, max_frames: int = MAX_FRAMES) -> Sheet:
    """The contact sheet of one decoded sample (as `pipeline.reader.decode_sample` returns it)."""
    video, meta = sample["video"], sample["meta"]
    frames = shown_frames(sample, max_frames)
    hw = video.shape[1:3]
    size = (max(1, round(hw[1] * cell / hw[0])), cell)  # PIL (w, h): the frame's aspect ratio kept
    pictures = [Image.fromarray(video[t]).resize(size, Image.Resampling.BILINEAR) for t in frames]
    rows = [Row("frames", pictures)]
    if "depth.npy" in sample:
        rows.append(_depth_row(sample["depth.npy"], frames, size))
    if "normal.npy" in sample:
        cells = [dense_image(normal_colors(sample["normal.npy"][t]), size) for t in frames]
        rows.append(Row("normal", cells, normal_key(cell)))
    if "segm.npy" in sample:
        rows.append(_segm_row(sample["segm.npy"], frames, size, meta.get("segm_space")))
    if "pose3d.npy" in sample:
        rows.append(_pose_row(sample["pose3d.npy"], frames, pictures, meta, hw))
    if "boxes.npy" in sample:
        rows.append(_boxes_row(sample, frames, pictures, meta.get("box_space")))
    if "pnr.npy" in sample:
        rows.append(_pnr_row(sample["pnr.npy"], frames, pictures))
    if "ava_boxes.npy" in sample:
        rows.append(_ava_row(sample, frames, pictures))
    return compose(header_of(meta), rows, titles=[f"t={t}" for t in frames])


def dense_image(colours: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A colour map `[h, w, 3]` upsampled by nearest neighbour to a `size` (w, h) image."""
    return Image.fromarray(upsample_nearest(colours, (size[1], size[0])))


def _depth_row(depth: np.ndarray, frames: list[int], size: tuple[int, int]) -> Row:
    shown = depth[frames]
    low, high = depth_range(shown)
    cells = [dense_image(depth_colors(d, low, high), size) for d in shown]
    return Row("depth", cells, depth_bar(low, high, size[1], bool(np.isnan(shown.astype(np.float32)).any())))


def _segm_row(segm: np.ndarray, frames: list[int], size: tuple[int, int], space: str | None) -> Row:
    shown = segm[frames]
    present = [int(i) for i in np.unique(shown)]
    names = class_names(space, max(present) + 1 if present else 0)
    entries = [
        ("ignore", GREY) if i == SEGM_IGNORE else (f"{i} {name_of(names, i)}", palette_color(i))
        for i in present
    ]
    cells = [dense_image(segm_colors(s), size) for s in shown]
    return Row("segm", cells, legend(entries, size[1]))


def _pose_row(
    pose: np.ndarray, frames: list[int], pictures: list[Image.Image], meta: dict, hw: tuple[int, int]
) -> Row:
    camera = camera_of(meta, (int(hw[0]), int(hw[1])))
    size = pictures[0].size
    if camera is not None:
        scale = np.array([size[0] / hw[1], size[1] / hw[0]])
        cells = [
            draw_skeleton(p, project(pose[t], camera) * scale) for p, t in zip(pictures, frames, strict=True)
        ]
        note = "projected with the sample's camera"
    else:
        points = side_view(pose[frames], size)
        cells = [draw_skeleton(Image.new("RGB", size, (40, 40, 48)), pts) for pts in points]
        note = "no camera: side view (z right, y down)"
    panel = Image.new("RGB", (150, size[1]), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for i, line in enumerate(wrap(note, 140, 10)):
        draw.text((4, 4 + i * 12), line, fill=TEXT, font=font(10))
    draw.text((4, size[1] - 30), "left", fill=LEFT, font=font(10))
    draw.text((4, size[1] - 16), "right", fill=RIGHT, font=font(10))
    return Row("pose3d", cells, panel)


def _boxes_row(sample: dict, frames: list[int], pictures: list[Image.Image], space: str | None) -> Row:
    boxes, classes = sample["boxes.npy"], sample["boxes_cls.npy"]
    names = class_names(space, int(classes.max(initial=0)) + 1)
    cells = []
    for picture, t in zip(pictures, frames, strict=True):
        keep = classes[t] >= 0
        ids = [int(c) for c in classes[t][keep]]
        cells.append(
            draw_boxes(
                picture, boxes[t][keep], [name_of(names, c) for c in ids], [palette_color(c) for c in ids]
            )
        )
    return Row("boxes", cells)


def _pnr_row(target: np.ndarray, frames: list[int], pictures: list[Image.Image]) -> Row:
    pnr = int(np.argmax(target)) if np.nanmax(target, initial=0) > 0 else None
    cells = []
    for picture, t in zip(pictures, frames, strict=True):
        picture = picture.copy()
        draw = ImageDraw.Draw(picture)
        if t == pnr:
            draw.rectangle((0, 0, picture.size[0] - 1, picture.size[1] - 1), outline=(255, 40, 40), width=4)
            label_text(draw, (4, 4), "PNR", (255, 80, 80))
        cells.append(picture)
    side = legend([("point of no return" if pnr is not None else "no PNR in this clip", (255, 40, 40))], 40)
    return Row("pnr", cells, side)


def _ava_row(sample: dict, frames: list[int], pictures: list[Image.Image]) -> Row:
    keyframe = ava_keyframe(sample)
    names = class_names("ava", sample["ava_labels.npy"].shape[-1])
    cells = []
    for picture, t in zip(pictures, frames, strict=True):
        if t != keyframe:
            # The labels are the keyframe's: other frames are dimmed for context.
            cells.append(Image.blend(picture, Image.new("RGB", picture.size), 0.6))
            continue
        boxes, labels = sample["ava_boxes.npy"], sample["ava_labels.npy"]
        tags = [", ".join(name_of(names, int(c)) for c in np.flatnonzero(row)) for row in labels]
        colours = [palette_color(i) for i in range(len(boxes))]
        cells.append(draw_boxes(picture, boxes, [f"P{i}: {tag}" for i, tag in enumerate(tags)], colours))
    return Row("ava (keyframe)", cells)


# ----------------------------------------------------------------------------- the command


def default_out(source_dir: Path | Store, key: str | None, split: str | None) -> Path:
    """Next to the source directory: `<parent>/<source>.show[.<key or split>].png` (a URL's: here)."""
    folder = open_store(source_dir)
    tag = f".{key}" if key else f".{split}" if split else ""
    if not folder.local:
        return Path(f"{folder.location.rstrip('/').rsplit('/', 1)[-1]}.show{tag}.png")
    local = Path(folder.location).resolve()
    return local.parent / f"{local.name}.show{tag}.png"


def show(
    source_dir: Path | str | Store,
    key: str | None = None,
    split: str | None = None,
    count: int = 1,
    out: Path | str | None = None,
    cell: int = 128,
) -> Path:
    """Write the contact sheet(s) of the chosen samples, one under the other, to a PNG; returns its path."""
    path = Path(out) if out is not None else default_out(open_store(source_dir), key, split)
    check_out(path)  # before any reading: a path that cannot be written is known at once
    samples = read_samples(source_dir, key, split, count)
    image = stack_vertically([sample_sheet(sample, cell).image for sample in samples])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG", optimize=True))
    except OSError as error:
        raise ShowError(f"--out: cannot write {path} ({error.strerror or first_line(error)})") from None
    return path


def check_out(path: Path) -> None:
    """`ShowError` (one line) when the PNG cannot go to `path`: a directory there, or a file above it."""
    if path.is_dir():
        raise ShowError(f"--out: {path} is a directory; give the PNG's file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ShowError(f"--out: {parent} is a file, not a directory")
            return

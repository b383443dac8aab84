"""`phav`: Procedural Human Action Videos (de Souza et al., CVPR 2017), depth + class segmentation.

PHAV's file formats are NOT publicly documented (shared/reference/synthetic_datasets.md §3,
uncertainty register item 4). Confirmed: ~40k Unity-rendered videos of 35 actions, one torrent
per modality, with depth and pixel-level semantic labels among the modalities. Everything below is
the documented *guess*, modelled on the authors' sister dataset Virtual KITTI 1.3.1, and is only
used under `--option phav_format=vkitti-guess` (the default and, for now, the only format):

    rgb/<video>.{avi,mp4}  or  rgb/<video>/<frame>.{png,jpg}    RGB
    depth/<video>/<frame>.png     single-channel uint16, 1 unit = 1 cm (phav_depth_scale), 0/65535 invalid
    semseg/<video>/<frame>.png    RGB class colours (phav_segm=rgb_table) or class indices (phav_segm=index)
    semseg_colors.txt             "<class> <r> <g> <b>" per line (VKITTI scenegt_rgb_encoding style;
                                  "Car:3"-style instance names count as their class)

The decoders check their guess on every frame: an 8-bit depth PNG, a depth PNG with no valid
pixel or a segmentation in which no pixel matches the colour table is quarantined with a reason
that says the guess failed, so the first real build tells whether the format is right. Class
names map into the unified label space through `mappings: phav:` (unmapped names -> ignore,
listed in `extra["unmapped_classes"]`). Depth is taken as planar (as in VKITTI): unconfirmed.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.labelspace import IGNORE, source_mapping
from pipeline.sources._synthetic_common import (
    FRAME_STRIDE,
    SYNTHETIC_SAMPLING,
    decode_sampled,
    require_files,
    sample_frames,
)
from pipeline.sources.base import Item, Option, Quarantine, Sample, Source, SourceError, file_fingerprint

FORMATS = ("vkitti-guess",)
SEGM_MODES = ("rgb_table", "index")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".webm")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
SEGM_SPACE = "unified"


def read_colour_table(path: Path) -> dict[tuple[int, int, int], str]:
    """(r, g, b) -> lower-case class name; a header line and blank lines are skipped."""
    table = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            r, g, b = (int(v) for v in parts[-3:])
        except ValueError:
            continue  # the "Category r g b" header
        name = " ".join(parts[:-3]).split(":")[0].strip().lower()
        table[(r, g, b)] = name
    return table


def read_png(path: Path) -> np.ndarray:
    require_files(path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError) as error:
        raise Quarantine(f"{path.name}: unreadable image ({type(error).__name__})") from None
    if mode in ("I;16", "I;16B", "I"):
        return array.astype(np.uint16) if mode != "I" else array.astype(np.int64)
    return array


def decode_depth(path: Path, scale: float) -> np.ndarray:
    """uint16 PNG (cm by default) -> float32 metres, 0 and 65535 -> NaN. Checks the guess."""
    raw = read_png(path)
    if raw.ndim != 2 or raw.dtype == np.uint8:
        raise Quarantine(f"{path.name}: depth PNG is not single-channel 16-bit (guess phav_format fails)")
    valid = (raw > 0) & (raw != 65535)
    if not valid.any():
        raise Quarantine(f"{path.name}: depth PNG has no valid pixel")
    depth = raw.astype(np.float32) * scale
    depth[~valid] = np.nan
    return depth


def decode_segm_rgb(path: Path, lut: dict[int, int]) -> tuple[np.ndarray, float]:
    """RGB class-colour PNG -> unified ids (unknown colours -> ignore) and the unknown fraction."""
    raw = read_png(path)
    if raw.ndim != 3 or raw.shape[2] < 3:
        raise Quarantine(f"{path.name}: segmentation PNG is not RGB (guess phav_segm=rgb_table fails)")
    packed = (raw[..., 0].astype(np.int64) << 16) | (raw[..., 1].astype(np.int64) << 8) | raw[..., 2]
    out = np.full(packed.shape, IGNORE, dtype=np.uint16)
    for colour, class_id in lut.items():
        out[packed == colour] = class_id
    known = np.isin(packed, np.fromiter(lut, dtype=np.int64, count=len(lut)))
    if not known.any():
        raise Quarantine(f"{path.name}: no pixel matches the colour table (guess phav_segm=rgb_table fails)")
    return out, float(1.0 - known.mean())


def decode_segm_index(path: Path, classes: list[int]) -> tuple[np.ndarray, float]:
    """Single-channel class-index PNG -> unified ids; indices past the class list -> ignore."""
    raw = read_png(path)
    if raw.ndim != 2:
        raise Quarantine(f"{path.name}: segmentation PNG is not single-channel (guess phav_segm=index fails)")
    lut = np.full(int(raw.max()) + 1, IGNORE, dtype=np.uint16)
    lut[: min(len(classes), len(lut))] = classes[: len(lut)]
    out = lut[raw.astype(np.int64)]
    return out, float((raw >= len(classes)).mean())


class PhavSource(Source):
    name = "phav"
    version = "1"
    tasks = ("depth", "segm")
    sampling = SYNTHETIC_SAMPLING
    splits = ("train",)
    description = (
        "PHAV action videos: depth + class segm; format UNCONFIRMED, VKITTI-style guess (phav_format option)"
    )
    options = (
        Option("phav_format", "str", "vkitti-guess", "the guessed file format", choices=FORMATS),
        Option("phav_segm", "str", "rgb_table", "segmentation PNGs: colours or class indices", SEGM_MODES),
        Option("phav_segm_table", "str", None, "colour table file (default <root>/semseg_colors.txt)"),
        Option("phav_rgb_dir", "str", "rgb", "RGB folder under --root"),
        Option("phav_depth_dir", "str", "depth", "depth folder under --root"),
        Option("phav_segm_dir", "str", "semseg", "segmentation folder under --root"),
        Option("phav_depth_scale", "float", 0.01, "metres per depth PNG unit", minimum=0),
        FRAME_STRIDE,
    )

    @cached_property
    def _segm_lookup(self) -> tuple[dict[int, int], list[int], list[str]]:
        """(packed rgb -> unified id, index -> unified id, table class names with no mapping)."""
        mapping = {k: v for k, v in source_mapping("phav").items() if isinstance(k, str)}
        by_index = list(mapping.values())
        if self.option("phav_segm") == "index":
            return {}, by_index, []
        table_path = Path(self.option("phav_segm_table") or self.root_dir / "semseg_colors.txt")
        if not table_path.is_file():
            raise SourceError(
                f"phav: colour table {table_path} not found (set phav_segm_table or phav_segm=index)"
            )
        table = read_colour_table(table_path)
        if not table:
            raise SourceError(f"phav: colour table {table_path} lists no '<class> r g b' line")
        lut = {(r << 16) | (g << 8) | b: mapping.get(name, IGNORE) for (r, g, b), name in table.items()}
        unmapped = sorted({name for name in table.values() if name not in mapping})
        return lut, by_index, unmapped

    def items(self, split: str) -> Iterator[Item]:
        rgb_dir = self.root_dir / self.option("phav_rgb_dir")
        if not rgb_dir.is_dir():
            raise SourceError(f"phav: no {rgb_dir.name}/ folder under {self.root_dir}")
        if split != "train":
            return
        for entry in sorted(rgb_dir.iterdir()):
            if entry.is_dir() or entry.suffix.lower() in VIDEO_SUFFIXES:
                video = entry.name if entry.is_dir() else entry.stem
                yield Item(
                    id=video,
                    split=split,
                    fingerprint=file_fingerprint(*self._fingerprint_paths(entry, video)),
                    payload={"rgb": str(entry), "video": video},
                )

    def _fingerprint_paths(self, rgb: Path, video: str) -> list[Path]:
        paths = [rgb, *self._frames(self.root_dir / self.option("phav_depth_dir") / video)]
        paths += self._frames(self.root_dir / self.option("phav_segm_dir") / video)
        return paths + ([] if rgb.is_file() else self._frames(rgb))

    @staticmethod
    def _frames(folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)

    def load(self, item: Item) -> Sample:
        rgb, video = Path(item.payload["rgb"]), item.payload["video"]
        depth_files = self._frames(self.root_dir / self.option("phav_depth_dir") / video)
        segm_files = self._frames(self.root_dir / self.option("phav_segm_dir") / video)
        counts = {"depth": len(depth_files), "segm": len(segm_files)}
        if rgb.is_file():
            clip, padded = decode_sampled(rgb, self.config, counts, item, self.option("frame_stride"))
            frames, fps, chosen = clip.frames, clip.info.fps, clip.indices
        else:
            rgb_files = self._frames(rgb)
            counts = {"rgb": len(rgb_files), **counts}
            if min(counts.values()) == 0 or len(set(counts.values())) != 1:
                raise Quarantine("frame counts disagree: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            chosen, padded = sample_frames(counts["rgb"], self.config, item, self.option("frame_stride"))
            frames, fps = self._rgb_frames(rgb_files, chosen), 30.0
        scale = self.option("phav_depth_scale")
        unique = sorted(set(chosen))
        depth = {t: decode_depth(depth_files[t], scale) for t in unique}
        segm = {t: self._segm(segm_files[t]) for t in unique}
        shapes = {d.shape for d in depth.values()} | {s[0].shape for s in segm.values()} | {frames.shape[1:3]}
        if len(shapes) != 1:
            raise Quarantine(f"rgb, depth and segmentation sizes disagree: {sorted(shapes)}")
        unknown = max(s[1] for s in segm.values())
        return Sample(
            video=frames,
            fps=fps,
            frame_indices=chosen,
            labels={
                "depth.npy": np.stack([depth[t] for t in chosen]).astype(np.float16),
                "segm.npy": np.stack([segm[t][0] for t in chosen]),
            },
            extra={
                "segm_space": SEGM_SPACE,
                "padded_frames": padded,
                "phav_format": "vkitti-guess",
                "segm_unknown_fraction": round(unknown, 4),
                "unmapped_classes": self._segm_lookup[2],
            },
        )

    def _segm(self, path: Path) -> tuple[np.ndarray, float]:
        lut, by_index, _ = self._segm_lookup
        if self.option("phav_segm") == "index":
            return decode_segm_index(path, by_index)
        return decode_segm_rgb(path, lut)

    @staticmethod
    def _rgb_frames(files: list[Path], chosen: list[int]) -> np.ndarray:
        decoded = {}
        for t in sorted(set(chosen)):
            image = read_png(files[t])
            if image.ndim != 3:
                raise Quarantine(f"{files[t].name}: RGB frame is not a colour image")
            decoded[t] = image[..., :3]
        return np.stack([decoded[t] for t in chosen])

"""`hypersim`: Apple Hypersim (Roberts et al., ICCV 2021), depth + surface normals + NYU40 semantics.

Raw layout (one unzipped scene per `ai_VVV_NNN/` under `--root`):

    ai_VVV_NNN/images/scene_cam_XX_final_hdf5/frame.IIII.color.hdf5
    ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.{depth_meters,normal_cam,semantic,
                                                               render_entity_id}.hdf5
    metadata_images_split_scene_v1.csv       the official split (required)
    metadata_camera_parameters.csv           per-scene intrinsics (required; see below)

Every HDF5 file holds one dataset named "dataset". One camera trajectory (scene, cam_XX) is one
clip; its frames are the rows of the split CSV that are in the public release. Conversions:

* color: linear HDR -> the official tone map (90th-percentile brightness to 0.8, gamma 1/2.2);
* depth_meters is the distance to the camera centre -> planar depth along the optical axis, with
  the scene's `M_cam_from_uv` from `metadata_camera_parameters.csv`. That file is not in the scene
  downloads (it is in the ml-hypersim repository, `contrib/mikeroberts3000/`), and 235 of its 482
  scenes are not the standard 60-degree camera (planar depth > 1% off in 148 scenes, up to 17.8%),
  so it is required; `--option intrinsics=standard` uses the standard camera for every scene on
  purpose. `meta.json` records the matrix used (`m_cam_from_uv`);
* normal_cam (OpenGL camera axes: x right, y up, z backward) -> OpenCV axes by diag(1, -1, -1),
  renormalised. Some Hypersim normals face away from the camera, are zero or are not unit length
  (ml-hypersim#26): those facing away are flipped toward the camera, zero or non-finite ones become
  invalid (NaN), and `meta.json` counts both (`normals_flipped`, `normals_invalid`: label pixels
  with geometry, over the clip's distinct frames);
* semantic NYU40 ids -> the unified label space (manifests/labelspaces/unified.yaml);
* NaN geometry and -1 semantics become invalid (NaN / 65535).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import h5py
import numpy as np

from pipeline.fileio import first_line
from pipeline.geometry import frame_geometry, label_pixels
from pipeline.labelspace import lookup_table
from pipeline.sources._synthetic_common import FRAME_STRIDE, SYNTHETIC_SAMPLING, require_files, sample_frames
from pipeline.sources.base import (
    Item,
    Option,
    Quarantine,
    Sample,
    Source,
    SourceError,
    file_fingerprint,
    value_fingerprint,
)

SPLIT_CSV = "metadata_images_split_scene_v1.csv"
CAMERA_CSV = "metadata_camera_parameters.csv"
# Where the official repository keeps the two CSVs, relative to its root, if --root is a checkout.
CSV_SEARCH = ("", "evermotion_dataset/analysis", "contrib/mikeroberts3000")
# M_cam_from_uv of the standard camera: 60 degrees horizontal field of view, 4:3, looking down -z.
STANDARD_M_CAM_FROM_UV = ((0.5773502691896258, 0.0, 0.0), (0.0, 0.4330127018922193, 0.0), (0.0, 0.0, -1.0))
NORMAL_FILES = ("normal_cam", "normal_bump_cam")
SEGM_SPACE = "unified"
# Official tone-mapping constants (ml-hypersim scene_generate_images_tonemap.py).
GAMMA = 1.0 / 2.2
PERCENTILE = 90
BRIGHTNESS_TARGET = 0.8


# ----------------------------------------------------------------------------- conversions


def tonemap(color: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear HDR `[H,W,3]` -> uint8 the way Hypersim's own previews are made.

    The scale maps the 90th percentile of the valid pixels' brightness to 0.8 after gamma; a frame
    with no valid pixel keeps scale 1, a black one scale 0 (both as in the official script).
    """
    rgb = color.astype(np.float32)
    if not valid.any():
        scale = 1.0
    else:
        brightness = 0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2]
        current = np.percentile(brightness[valid], PERCENTILE)
        scale = 0.0 if current < 0.0001 else BRIGHTNESS_TARGET ** (1.0 / GAMMA) / current
    mapped = np.power(np.maximum(scale * rgb, 0.0), GAMMA)
    return np.round(np.clip(mapped, 0.0, 1.0) * 255.0).astype(np.uint8)


def camera_rays(m_cam_from_uv: np.ndarray, height: int, width: int) -> np.ndarray:
    """Unit view rays `[H,W,3]` of a Hypersim camera, in its OpenGL camera frame (looking down -z).

    A pixel's camera-space ray is `M_cam_from_uv @ [u, v, 1]` at the pixel centre in uv
    coordinates (u right, v up, both in [-1, 1]; ml-hypersim's notebook 01).
    """
    u = np.linspace(-1.0 + 1.0 / width, 1.0 - 1.0 / width, width)
    v = np.linspace(-1.0 + 1.0 / height, 1.0 - 1.0 / height, height)[::-1]
    uu, vv = np.meshgrid(u, v)
    uv1 = np.stack([uu, vv, np.ones_like(uu)], axis=-1)
    rays = uv1 @ np.asarray(m_cam_from_uv, dtype=np.float64).T
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def planar_ratio(rays: np.ndarray) -> np.ndarray:
    """Per-pixel factor `planar depth / distance` of unit view rays `[..., 3]`: a point at distance d
    along a unit ray r lies at planar depth d * (-r_z) (the camera looks down -z)."""
    return -rays[..., 2]


@lru_cache(maxsize=8)
def _cached_rays(m: tuple[tuple[float, ...], ...], height: int, width: int) -> np.ndarray:
    """camera_rays memoised per camera: every frame of a scene shares them (about 50 ms at 1024x768)."""
    rays = camera_rays(np.asarray(m), height, width).astype(np.float32)
    rays.flags.writeable = False
    return rays


def planar_depth(distance: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """`depth_meters` (distance to the camera centre) -> planar depth; non-finite -> NaN."""
    depth = distance.astype(np.float32) * ratio
    depth[~np.isfinite(depth)] = np.nan
    return depth


def normals_to_opencv(
    normal: np.ndarray, rays: np.ndarray | None = None, geometry: np.ndarray | None = None
) -> tuple[np.ndarray, int, int]:
    """OpenGL camera-frame normals `[H,W,3]` -> unit OpenCV camera-frame normals, and two counts over
    the pixels with geometry (`geometry` `[H,W]`, default all): flipped, and zero or non-finite.

    A visible surface faces the camera, `n . r < 0` along the unit view ray `r` (OpenGL frame, same
    `[H,W,3]`); a normal with `n . r > 0` is flipped (ml-hypersim#26). Without `rays` none is flipped.
    Zero or non-finite normals become NaN; the rest are renormalised.
    """
    n = normal.astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        norm = np.linalg.norm(n, axis=-1)
    bad = ~(np.isfinite(norm) & (norm > 1e-6))
    away = np.zeros_like(bad)
    if rays is not None:
        with np.errstate(invalid="ignore"):
            away = (np.einsum("hwc,hwc->hw", n, rays) > 0) & ~bad
        n[away] = -n[away]
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n / norm[..., None] * np.array([1.0, -1.0, -1.0], dtype=np.float32)
    n[bad] = np.nan
    counted = np.ones_like(bad) if geometry is None else geometry
    return n, int((away & counted).sum()), int((bad & counted).sum())


def check_semantic_range(semantic: np.ndarray) -> None:
    """NYU40 ids are 1..40 and -1 (unlabelled); any other value is a corrupt frame."""
    if semantic.size and (semantic.min() < -1 or semantic.max() > 40):
        raise Quarantine(f"semantic id outside -1..40 ({int(semantic.min())}..{int(semantic.max())})")


def semantic_to_unified(semantic: np.ndarray) -> np.ndarray:
    """NYU40 ids (1..40, -1 unlabelled) -> unified ids; the caller checks the range on the whole frame."""
    return lookup_table("hypersim", -1, 40)[semantic.astype(np.int64) + 1]


# ----------------------------------------------------------------------------- files


def read_hdf5(path: Path) -> np.ndarray:
    """The `dataset` of one Hypersim HDF5 file; Quarantine when missing, truncated or unreadable."""
    require_files(path)
    try:
        with h5py.File(path, "r") as handle:
            return handle["dataset"][()]
    except (OSError, KeyError, ValueError) as error:
        raise Quarantine(f"{path.name}: unreadable HDF5 ({first_line(error, limit=80)})") from None


Matrix = tuple[tuple[float, float, float], ...]  # a 3x3 M_cam_from_uv, hashable for the ray cache


@dataclass(frozen=True)
class Trajectory:
    """What `load()` needs of one camera trajectory (one clip)."""

    scene: str
    camera: str
    frames: tuple[int, ...]  # public-release frame ids, sorted
    m_cam_from_uv: Matrix  # the camera used for planar depth and the normals' view rays


def _matrix_row(row: dict[str, str], i: int) -> tuple[float, float, float]:
    """Row ``i`` of the camera CSV's M_cam_from_uv; KeyError or ValueError when missing or not a number."""
    x, y, z = (float(row[f"M_cam_from_uv_{i}{j}"]) for j in range(3))
    return x, y, z


def _find_csv(root: Path, name: str, option: str | None) -> Path | None:
    if option:
        return Path(option)
    for folder in CSV_SEARCH:
        candidate = root / folder / name
        if candidate.is_file():
            return candidate
    return None


class HypersimSource(Source):
    name = "hypersim"
    version = "2"  # 2: per-scene intrinsics required; normals facing away flipped toward the camera
    tasks = ("depth", "normal", "segm")
    sampling = SYNTHETIC_SAMPLING
    splits = ("train", "val", "test")
    description = (
        "Hypersim indoor scenes (HDF5 per frame): planar depth, OpenCV normals, NYU40 segm; trajectory = clip"
    )
    options = (
        Option(
            "intrinsics",
            "str",
            "scene",
            f"scene: each scene's camera from {CAMERA_CSV} (required); standard: the 60-degree one for all",
            ("scene", "standard"),
        ),
        Option("hypersim_camera_csv", "str", None, f"path of {CAMERA_CSV} (default: found under --root)"),
        Option("hypersim_split_csv", "str", None, f"path of {SPLIT_CSV} (default: found under --root)"),
        Option("hypersim_normal", "str", "normal_cam", "which normal pass to read", NORMAL_FILES),
        Option(
            "hypersim_skip_missing", "int", 0, "1: drop frames with missing files (ml-hypersim#7)", ("0", "1")
        ),
        FRAME_STRIDE,
    )

    # --- listing

    @cached_property
    def _rows(self) -> dict[str, dict[tuple[str, str], list[int]]]:
        """split -> (scene, camera) -> frame ids, from the official split CSV (public release only)."""
        path = _find_csv(self.root_dir, SPLIT_CSV, self.option("hypersim_split_csv"))
        if path is None or not path.is_file():
            raise SourceError(f"hypersim: split file {SPLIT_CSV} not found under {self.root_dir}")
        rows: dict[str, dict[tuple[str, str], list[int]]] = {}
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("included_in_public_release", "").strip().lower() != "true":
                    continue
                key = (row["scene_name"], row["camera_name"])
                split = rows.setdefault(row["split_partition_name"], {})
                split.setdefault(key, []).append(int(row["frame_id"]))
        return rows

    @cached_property
    def _cameras(self) -> dict[str, Matrix] | None:
        """scene -> M_cam_from_uv (3x3) from the camera-parameter CSV; None under intrinsics=standard."""
        if self.option("intrinsics") == "standard":
            return None
        path = _find_csv(self.root_dir, CAMERA_CSV, self.option("hypersim_camera_csv"))
        if path is None or not path.is_file():
            raise SourceError(
                f"hypersim: {CAMERA_CSV} not found under {self.root_dir} (it is not in the scene downloads: "
                "take it from the ml-hypersim repository's contrib/mikeroberts3000/ folder, or pass "
                "--option intrinsics=standard to use the standard 60-degree camera for every scene)"
            )
        cameras: dict[str, Matrix] = {}
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    m = tuple(_matrix_row(row, i) for i in range(3))
                except (KeyError, ValueError):
                    continue  # a row without usable intrinsics: its scene is quarantined (Item.problem)
                cameras[row["scene_name"]] = m
        return cameras

    def _frame_files(self, scene: str, camera: str, frame: int) -> dict[str, Path]:
        images = self.root_dir / scene / "images"
        stem = f"frame.{frame:04d}"
        geometry = images / f"scene_{camera}_geometry_hdf5"
        normal = self.option("hypersim_normal")
        return {
            "color": images / f"scene_{camera}_final_hdf5" / f"{stem}.color.hdf5",
            "depth": geometry / f"{stem}.depth_meters.hdf5",
            "normal": geometry / f"{stem}.{normal}.hdf5",
            "semantic": geometry / f"{stem}.semantic.hdf5",
            "entity": geometry / f"{stem}.render_entity_id.hdf5",
        }

    def _complete(self, scene: str, camera: str, frame: int) -> bool:
        """Whether every required file of a frame exists (render_entity_id is optional)."""
        files = self._frame_files(scene, camera, frame)
        return all(path.is_file() for name, path in files.items() if name != "entity")

    def items(self, split: str) -> Iterator[Item]:
        # Scenes not downloaded are left out of the listing: users routinely fetch a subset.
        for (scene, camera), frames in sorted(self._rows.get(split, {}).items()):
            if not (self.root_dir / scene).is_dir():
                continue
            frames = sorted(frames)
            # Training views draw their frames at random: any frame of the trajectory may be read.
            stride = self.option("frame_stride")
            chosen = (
                range(len(frames))
                if split == "train"
                else sample_frames(len(frames), self.config, None, stride)[0]
            )
            files = [self._frame_files(scene, camera, frames[k]) for k in sorted(set(chosen))]
            cameras = self._cameras
            m = STANDARD_M_CAM_FROM_UV if cameras is None else cameras.get(scene)
            problem = None if m is not None else f"scene {scene} has no usable row in {CAMERA_CSV}"
            yield Item(
                id=f"{scene}/{camera}",
                split=split,
                fingerprint=value_fingerprint(file_fingerprint(*(p for f in files for p in f.values())), m),
                payload=Trajectory(scene, camera, tuple(frames), m or STANDARD_M_CAM_FROM_UV),
                problem=problem,
            )

    # --- loading

    def load(self, item: Item) -> Sample:
        trajectory: Trajectory = item.payload
        scene, camera, frames = trajectory.scene, trajectory.camera, list(trajectory.frames)
        if self.option("hypersim_skip_missing") == 1:
            # Known holes in the release (ml-hypersim#7): drop frames whose files are absent.
            frames = [f for f in frames if self._complete(scene, camera, f)]
        chosen, padded = sample_frames(len(frames), self.config, item, self.option("frame_stride"))
        decoded = {k: self._load_frame(scene, camera, frames[k]) for k in sorted(set(chosen))}
        shapes = {v[0].shape for v in decoded.values()}
        if len(shapes) != 1:
            raise Quarantine(f"frames of different sizes {sorted(shapes)}")
        height, width = next(iter(shapes))[:2]
        rays = self._label_pixels(_cached_rays(trajectory.m_cam_from_uv, height, width))
        ratio = planar_ratio(rays)
        normals, flipped, invalid = {}, 0, 0
        for k, frame in decoded.items():  # distinct frames: each pixel counted once
            normals[k], away, bad = normals_to_opencv(frame[2], rays, np.isfinite(frame[1]))
            flipped, invalid = flipped + away, invalid + bad
        stack = [decoded[k] for k in chosen]
        return Sample(
            video=np.stack([s[0] for s in stack]),
            fps=1.0,  # trajectory keyframes, not a video: one "frame" per keyframe
            dense_on_label_grid=self._selects(height, width),
            frame_indices=[frames[k] for k in chosen],
            labels={
                "depth.npy": np.stack([planar_depth(s[1], ratio) for s in stack]).astype(np.float16),
                "normal.npy": np.stack([normals[k] for k in chosen]).astype(np.float16),
                "segm.npy": np.stack([s[3] for s in stack]),
            },
            extra={
                "segm_space": SEGM_SPACE,
                "padded_frames": padded,
                "scene": scene,
                "camera": camera,
                "intrinsics": self.option("intrinsics"),
                "m_cam_from_uv": [list(row) for row in trajectory.m_cam_from_uv],
                "normals_flipped": flipped,
                "normals_invalid": invalid,
            },
        )

    def _load_frame(self, scene: str, camera: str, frame: int) -> tuple[np.ndarray, ...]:
        """(tone-mapped uint8 RGB, distance, OpenGL normals, unified segm) of one frame (label pixels)."""
        files = self._frame_files(scene, camera, frame)
        color = read_hdf5(files["color"])
        distance = read_hdf5(files["depth"])
        normal = read_hdf5(files["normal"])
        semantic = read_hdf5(files["semantic"])
        height, width = distance.shape[:2] if distance.ndim == 2 else (-1, -1)
        expected = {"color": (height, width, 3), "normal": (height, width, 3), "semantic": (height, width)}
        for name, array in (("color", color), ("normal", normal), ("semantic", semantic)):
            if distance.ndim != 2 or array.shape != expected[name]:
                raise Quarantine(f"frame.{frame:04d}: {name} shape {array.shape} vs depth {distance.shape}")
        if not np.isfinite(color).all():
            raise Quarantine(f"frame.{frame:04d}: NaN or inf in color")
        # The official tone map looks only at pixels with geometry; render_entity_id says which.
        # Without it, finite depth is the same test (empty pixels have NaN depth).
        valid = read_hdf5(files["entity"]) > 0 if files["entity"].is_file() else np.isfinite(distance)
        check_semantic_range(semantic)
        labels = [self._label_pixels(array) for array in (distance, normal, semantic)]
        return tonemap(color, valid), labels[0], labels[1], semantic_to_unified(labels[2])

    def _label_pixels(self, array: np.ndarray) -> np.ndarray:
        """Only the pixels the build's label maps keep, when that is fewer than all of them.

        The engine would pick exactly these pixels later; converting only them gives the same
        shards for a fraction of the work on 1024x768 frames.
        """
        height, width = array.shape[:2]
        if not self._selects(height, width):
            return array
        rows, cols = label_pixels((height, width), frame_geometry(height, width, self.config))
        return array[rows][:, cols]

    def _selects(self, height: int, width: int) -> bool:
        """Whether `_label_pixels` selects (the label grid is smaller than the frame)."""
        return frame_geometry(height, width, self.config).label_hw[0] < height

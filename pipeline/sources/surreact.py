"""`surreact`: SURREACT (Varol et al., IJCV 2021), SMPL bodies rendered over NTU / UESTC motion.

Raw layout under `--root` (one of `surreact/{ntu,uestc}/{vibe,hmmr}/`):

    {train,test}/<sequence>/<sequence>_v%03d_r%02d.mp4         RGB, 320x240, 30 fps
    {train,test}/<sequence>/<sequence>_v%03d_r%02d_info.mat    joints3D (3x24xT, SMPL, world metres), ...
    {train,test}/<sequence>/<sequence>_v%03d_r%02d_segm.mat    segm_1..segm_T (uint8, 0 bg, 1..24 parts)
    {train,test}/<sequence>/<sequence>_v%03d_r%02d_depth.mat   depth_1..depth_T (generator only)

For UESTC, `<sequence>` itself ends in `.avi` (`a0_d1_p001_c1_color.avi/a0_d1_p001_c1_color.avi_v045_r00.mp4`,
SURREACT's `datageneration/vidlists/uestc/`), so sibling files are named by appending a suffix
to the stem string, never with `Path.with_suffix`, which would cut at that `.avi`.

The public release has no `_depth.mat`: depth is then absent from the sample's mask, not an error.
`v%03d` is the camera azimuth in degrees (the `zrot_euler` field disagrees between releases, so
the file name is used). Conversions:

* segm: Blender material index -> unified label space (0 -> background, 1..24 -> smpl/<part>);
* depth (when present): metres, background (Blender's ~1e10) -> NaN; `surreact_depth=radial`
  converts a distance-to-centre pass to planar depth (which one Blender wrote is unconfirmed);
* joints3D: world -> OpenCV camera frame with the generator's camera (blenderutils.set_camera:
  azimuth from the file name, cam_dist, cam_height; fx = fy = 600 px at 320x240), then SMPL 24 ->
  Kinect V2 25 by SURREACT's own kinect2smpl pairing (pipeline.sources._synthetic_common.SMPL_TO_KINECT:
  Kinect hand <- SMPL wrist, hand tip <- SMPL hand; Kinect wrists and thumbs missing).
  `extra["pose_reprojection_px"]` compares the projected joints with the file's joints2D, so the
  first real build shows whether the camera model holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io as sio

from pipeline.labelspace import lookup_table
from pipeline.sources._synthetic_common import (
    FRAME_STRIDE,
    SYNTHETIC_SAMPLING,
    decode_sampled,
    require_files,
    smpl_to_kinect,
)
from pipeline.sources.base import Item, Option, Quarantine, Sample, Source, SourceError, file_fingerprint

SEGM_SPACE = "unified"
FOCAL_PX = 600.0  # lens 60 mm on a 32 mm sensor at 320 px width
NATIVE_WIDTH, NATIVE_HEIGHT = 320, 240
DEPTH_BACKGROUND = 1e3  # metres; Blender writes ~1e10 where no surface is hit (SURREAL's loader test)
_VIEW = re.compile(r"_v(\d{3})_r\d{2}$")


# ----------------------------------------------------------------------------- camera and joints


def generator_camera(azimuth_deg: float, cam_dist: float, cam_height: float) -> tuple[np.ndarray, np.ndarray]:
    """(R_world_from_blendercam 3x3, camera position 3) exactly as SURREACT's set_camera builds them.

    matrix_world = Translation(d sin a, d cos a, h) @ R0 @ Ry(a) @ Rx(atan((h - 1) / d)) with
    R0 = [[1,0,0],[0,0,1],[0,-1,0]]; the Blender camera looks down its -z with +y up.
    """
    a = np.radians(azimuth_deg)
    tilt = np.arctan((cam_height - 1.0) / cam_dist)
    r0 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    ry = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(tilt), -np.sin(tilt)], [0.0, np.sin(tilt), np.cos(tilt)]])
    position = np.array([cam_dist * np.sin(a), cam_dist * np.cos(a), cam_height])
    return r0 @ ry @ rx, position


def world_to_opencv(joints: np.ndarray, rotation: np.ndarray, position: np.ndarray) -> np.ndarray:
    """World points `[...,3]` -> OpenCV camera frame (Blender camera frame with y and z negated)."""
    blender_cam = (joints - position) @ rotation  # R^T (X - t), row-vector form
    return blender_cam * np.array([1.0, -1.0, -1.0])


def joints_frames(joints: np.ndarray, dims: int, name: str) -> np.ndarray:
    """joints as stored (dims x24xT, P x dims x24xT or dims x24) -> `[T,24,dims]` of the first person."""
    array = np.asarray(joints, dtype=np.float64)
    if array.ndim == 4:
        array = array[0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[:2] != (dims, 24):
        raise Quarantine(f"{name} has shape {np.shape(joints)}, expected {dims}x24xT")
    return array.transpose(2, 1, 0)


def reprojection_error(
    camera_joints: np.ndarray, points: np.ndarray, height: int
) -> tuple[float | None, str]:
    """Median pixel distance between projected `[T,24,3]` joints and joints2D `[T,24,2]`.

    joints2D come from Blender's world_to_camera_view, whose y may run from the bottom of the
    frame: both origins are tried and the better one is reported with its error.
    """
    focal = FOCAL_PX * height / NATIVE_HEIGHT
    with np.errstate(divide="ignore", invalid="ignore"):
        u = focal * camera_joints[..., 0] / camera_joints[..., 2] + height * NATIVE_WIDTH / NATIVE_HEIGHT / 2
        v = focal * camera_joints[..., 1] / camera_joints[..., 2] + height / 2
    errors = {}
    for origin, y in (("top", points[..., 1]), ("bottom", height - points[..., 1])):
        errors[origin] = float(np.nanmedian(np.hypot(u - points[..., 0], v - y)))
    best = min(errors, key=lambda k: errors[k] if np.isfinite(errors[k]) else np.inf)
    if not np.isfinite(errors[best]):
        return None, "unknown"  # meta.json is strict JSON: no NaN
    return round(errors[best], 2), best


# ----------------------------------------------------------------------------- the adapter


def _view(name: str) -> int:
    """The view number (the camera azimuth in degrees) of a clip name ending ``_vNNN_rNN``."""
    match = _VIEW.search(name)
    if match is None:
        raise Quarantine(f"{name}: no _vNNN_rNN view suffix")
    return int(match[1])


def _mat_frames(path: Path, prefix: str) -> list[int]:
    """The frame numbers t of the `<prefix>_t` variables of a .mat file (without loading them)."""
    try:
        names = [name for name, _, _ in sio.whosmat(str(path))]
    except Exception as error:  # scipy raises several types for a corrupt file
        raise Quarantine(f"{path.name}: unreadable .mat ({type(error).__name__})") from None
    pattern = re.compile(rf"^{prefix}_(\d+)$")
    return sorted(int(m.group(1)) for m in map(pattern.match, names) if m)


def _load_mat(path: Path, names: list[str] | None = None) -> dict:
    try:
        return sio.loadmat(str(path), variable_names=names)
    except Exception as error:
        raise Quarantine(f"{path.name}: unreadable .mat ({type(error).__name__})") from None


@dataclass(frozen=True)
class ClipFiles:
    """The files of one SURREACT clip; `stem` is `<folder>/<sequence>_v%03d_r%02d` as a plain string."""

    stem: str

    def path(self, suffix: str) -> Path:
        return Path(self.stem + suffix)  # appended: a UESTC stem contains ".avi"

    @property
    def name(self) -> str:
        return Path(self.stem).name


class SurreactSource(Source):
    name = "surreact"
    version = "2"  # 2: SURREACT's kinect2smpl wrist/hand pairing; the shared ffmpeg decode
    tasks = ("depth", "segm", "pose3d")
    sampling = SYNTHETIC_SAMPLING
    splits = ("train", "test")
    description = (
        "SURREACT SMPL humans (mp4 + _info/_segm.mat): body-part segm, Kinect-25 camera pose, depth if any"
    )
    options = (
        Option(
            "surreact_depth",
            "str",
            "planar",
            "what _depth.mat holds: planar depth, or distance to the camera centre (radial)",
            ("planar", "radial"),
        ),
        Option(
            "surreact_swap_lr", "int", 0, "1: pair SMPL left with Kinect right (no mirroring)", ("0", "1")
        ),
        FRAME_STRIDE,
    )

    @classmethod
    def fixed_camera(cls, hw: tuple[int, int]) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels of a stored `hw` frame: SURREACT renders every clip with one camera;
        both crop modes keep the centre and scale the short side (240 px natively) to `min(hw)`."""
        h, w = hw
        focal = FOCAL_PX * min(h, w) / NATIVE_HEIGHT
        return focal, focal, w / 2, h / 2

    def items(self, split: str) -> Iterator[Item]:
        folder = self.root_dir / split
        if not folder.is_dir():
            raise SourceError(f"surreact: no {split}/ folder under {self.root}")
        for video in sorted(folder.glob("*/*.mp4")):
            files = ClipFiles(str(video)[: -len(".mp4")])
            if not _VIEW.search(files.name):
                continue  # e.g. a _fg.mp4 foreground video of the generator
            paths = [files.path(suffix) for suffix in (".mp4", "_info.mat", "_segm.mat", "_depth.mat")]
            yield Item(id=files.name, split=split, fingerprint=file_fingerprint(*paths), payload=files)

    def load(self, item: Item) -> Sample:
        files: ClipFiles = item.payload
        video_path, info_path = files.path(".mp4"), files.path("_info.mat")
        segm_path, depth_path = files.path("_segm.mat"), files.path("_depth.mat")
        require_files(video_path, info_path, segm_path)
        info = _load_mat(info_path, ["joints3D", "joints2D", "cam_dist", "cam_height"])
        if "joints3D" not in info:
            raise Quarantine(f"{info_path.name}: no joints3D")
        joints = joints_frames(info["joints3D"], 3, "joints3D")
        has_depth = depth_path.is_file()
        counts = {"info": len(joints), "segm": len(_mat_frames(segm_path, "segm"))}
        if has_depth:
            counts["depth"] = len(_mat_frames(depth_path, "depth"))
        clip, padded = decode_sampled(video_path, self.config, counts, item, self.option("frame_stride"))
        video, fps, chosen = clip.frames, clip.info.fps, clip.indices
        labels = {"segm.npy": self._segm(segm_path, chosen, video.shape[1:3])}
        if has_depth:
            labels["depth.npy"] = self._depth(depth_path, chosen, video.shape[1:3])
        camera_joints, check = self._pose(info, files.name, joints, chosen, video.shape[1])
        labels["pose3d.npy"] = camera_joints
        return Sample(
            video=video,
            fps=fps,
            frame_indices=chosen,
            labels=labels,
            extra={
                "segm_space": SEGM_SPACE,
                "padded_frames": padded,
                "view": _view(files.name),
                **check,
            },
        )

    def _segm(self, path: Path, chosen: list[int], hw: tuple[int, int]) -> np.ndarray:
        wanted = sorted(set(chosen))
        data = _load_mat(path, [f"segm_{t + 1}" for t in wanted])
        lut = lookup_table("surreact", 0, 24)
        maps = {}
        for t in wanted:
            raw = data.get(f"segm_{t + 1}")
            if raw is None or raw.shape != hw:
                raise Quarantine(f"{path.name}: segm_{t + 1} missing or not {hw[0]}x{hw[1]}")
            if raw.max(initial=0) > 24:
                raise Quarantine(f"{path.name}: segm_{t + 1} has part index {int(raw.max())} > 24")
            maps[t] = lut[raw.astype(np.int64)]
        return np.stack([maps[t] for t in chosen])

    def _depth(self, path: Path, chosen: list[int], hw: tuple[int, int]) -> np.ndarray:
        kind = self.option("surreact_depth")
        wanted = sorted(set(chosen))
        data = _load_mat(path, [f"depth_{t + 1}" for t in wanted])
        maps = {}
        for t in wanted:
            raw = data.get(f"depth_{t + 1}")
            if raw is None or raw.shape != hw:
                raise Quarantine(f"{path.name}: depth_{t + 1} missing or not {hw[0]}x{hw[1]}")
            depth = raw.astype(np.float32)
            depth[~np.isfinite(depth) | (depth > DEPTH_BACKGROUND) | (depth <= 0)] = np.nan
            maps[t] = depth * _radial_to_planar(*hw) if kind == "radial" else depth
        return np.stack([maps[t] for t in chosen]).astype(np.float16)

    def _pose(
        self, info: dict, name: str, joints: np.ndarray, chosen: list[int], height: int
    ) -> tuple[np.ndarray, dict]:
        """Kinect V2 camera-frame joints of the chosen frames, and the joints2D consistency check."""
        try:
            cam_dist = float(np.ravel(info["cam_dist"])[0])
            cam_height = float(np.ravel(info["cam_height"])[0])
        except (KeyError, IndexError, ValueError):
            raise Quarantine(f"{name}_info.mat: no cam_dist / cam_height") from None
        if not np.isfinite(joints[chosen]).all():
            raise Quarantine(f"{name}_info.mat: NaN in joints3D")
        rotation, position = generator_camera(float(_view(name)), cam_dist, cam_height)
        camera = world_to_opencv(joints[chosen], rotation, position)
        check = {}
        if "joints2D" in info:
            points = joints_frames(info["joints2D"], 2, "joints2D")
            if len(points) == len(joints):
                error, origin = reprojection_error(camera, points[chosen], height)
                check = {"pose_reprojection_px": error, "joints2d_y_origin": origin}
        swap = self.option("surreact_swap_lr") == 1
        return smpl_to_kinect(camera.astype(np.float32), swap_left_right=swap), check


def _radial_to_planar(height: int, width: int) -> np.ndarray:
    """Factor turning distance-to-centre into planar depth for the SURREACT pinhole (scaled to size)."""
    focal = FOCAL_PX * width / NATIVE_WIDTH
    x = np.arange(width) + 0.5 - width / 2
    y = np.arange(height) + 0.5 - height / 2
    xx, yy = np.meshgrid(x, y)
    return (focal / np.sqrt(xx**2 + yy**2 + focal**2)).astype(np.float32)

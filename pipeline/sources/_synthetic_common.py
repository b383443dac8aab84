"""Helpers shared by the synthetic-dataset adapters (hypersim, surreact, phav, kist-synadl, ehoi).

Frame sampling, joint-set bridges into the Kinect V2 order of `pose3d.npy`, and decoding chosen
frames of a video file. Everything here raises `Quarantine` for a bad raw input, never a bare
exception, so an adapter can call it without wrapping.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import ffmpeg
import numpy as np

from pipeline.config import BuildConfig
from pipeline.schema import KINECT_JOINTS, NUM_JOINTS
from pipeline.sources.base import Quarantine
from pipeline.video import VideoError, ffmpeg_exe, probe


def sample_frames(available: int, config: BuildConfig) -> tuple[list[int], int]:
    """Choose `config.frames` positions in `0..available-1`; return them and how many are padding.

    By default the clip spans the whole trajectory/video: the centre of each of `frames` equal
    segments (deterministic, so a rebuild picks the same frames). With `--option frame_stride=S`
    a centred window of consecutive frames `S` apart is taken instead (what a video model that
    expects a fixed frame rate wants). Too short a source is padded by repeating its last frame.
    """
    if available < 1:
        raise Quarantine("no frames to sample from")
    frames = config.frames
    stride = int(config.option("frame_stride", "0") or 0)
    if stride > 0:
        span = (frames - 1) * stride + 1
        start = max(0, (available - span) // 2)
        chosen = [i for i in range(start, start + span, stride) if i < available]
    elif available >= frames:
        chosen = [int((k + 0.5) * available / frames) for k in range(frames)]
    else:
        chosen = list(range(available))
    padded = frames - len(chosen)
    return chosen + [chosen[-1]] * padded, padded


# --- joint-set bridges into Kinect V2 (pipeline.schema.KINECT_JOINTS) ----------------------------

SMPL_JOINTS: tuple[str, ...] = (
    "pelvis", "l_hip", "r_hip", "spine1", "l_knee", "r_knee", "spine2", "l_ankle", "r_ankle", "spine3",
    "l_foot", "r_foot", "neck", "l_collar", "r_collar", "head", "l_shoulder", "r_shoulder", "l_elbow",
    "r_elbow", "l_wrist", "r_wrist", "l_hand", "r_hand",
)  # fmt: skip

# Kinect joint -> SMPL joint, anatomical left to anatomical left. spine_mid <- spine1 follows the
# official SURREACT kinect2smpl table; the hand tips and thumbs have no SMPL counterpart.
SMPL_TO_KINECT: dict[str, str | None] = {
    "spine_base": "pelvis", "spine_mid": "spine1", "neck": "neck", "head": "head",
    "shoulder_left": "l_shoulder", "elbow_left": "l_elbow", "wrist_left": "l_wrist", "hand_left": "l_hand",
    "shoulder_right": "r_shoulder", "elbow_right": "r_elbow", "wrist_right": "r_wrist",
    "hand_right": "r_hand",
    "hip_left": "l_hip", "knee_left": "l_knee", "ankle_left": "l_ankle", "foot_left": "l_foot",
    "hip_right": "r_hip", "knee_right": "r_knee", "ankle_right": "r_ankle", "foot_right": "r_foot",
    "spine_shoulder": "spine3", "handtip_left": None, "thumb_left": None, "handtip_right": None,
    "thumb_right": None,
}  # fmt: skip

BODY25_JOINTS: tuple[str, ...] = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "mid_hip",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
    "l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel",
)  # fmt: skip

# Kinect joint -> the BODY_25 joints whose mean it is (all must be valid); () = no counterpart.
# Head prefers the ears' midpoint (the Kinect head joint is the head's centre) and falls back to
# the nose (see BODY25_FALLBACK). The hands, hand tips and thumbs have no BODY_25 counterpart.
BODY25_TO_KINECT: dict[str, tuple[str, ...]] = {
    "spine_base": ("mid_hip",), "spine_mid": ("mid_hip", "neck"), "neck": ("neck",),
    "head": ("r_ear", "l_ear"),
    "shoulder_left": ("l_shoulder",), "elbow_left": ("l_elbow",), "wrist_left": ("l_wrist",), "hand_left": (),
    "shoulder_right": ("r_shoulder",), "elbow_right": ("r_elbow",), "wrist_right": ("r_wrist",),
    "hand_right": (),
    "hip_left": ("l_hip",), "knee_left": ("l_knee",), "ankle_left": ("l_ankle",),
    "foot_left": ("l_big_toe", "l_small_toe"),
    "hip_right": ("r_hip",), "knee_right": ("r_knee",), "ankle_right": ("r_ankle",),
    "foot_right": ("r_big_toe", "r_small_toe"),
    "spine_shoulder": ("neck",), "handtip_left": (), "thumb_left": (), "handtip_right": (), "thumb_right": (),
}  # fmt: skip
BODY25_FALLBACK: dict[str, tuple[str, ...]] = {"head": ("nose",)}


def smpl_to_kinect(joints: np.ndarray, swap_left_right: bool = False) -> np.ndarray:
    """SMPL-24 joints `[T,24,3]` -> Kinect V2 `[T,25,3]` float32, NaN rows for joints SMPL lacks.

    `swap_left_right` pairs SMPL left with Kinect right, as the official SURREACT NTU loader does
    (it mirrors Kinect z); kept as an option because the SURREACT left/right convention is unverified.
    """
    index = {name: i for i, name in enumerate(SMPL_JOINTS)}
    out = np.full((joints.shape[0], NUM_JOINTS, 3), np.nan, dtype=np.float32)
    for k, name in enumerate(KINECT_JOINTS):
        source = SMPL_TO_KINECT[name]
        if source is None:
            continue
        if swap_left_right:
            source = source.replace("l_", "@").replace("r_", "l_").replace("@", "r_")
        out[:, k] = joints[:, index[source]]
    return out


def body25_to_kinect(joints: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """OpenPose BODY_25 `[T,25,3]` with per-joint validity `[T,25]` -> Kinect V2 `[T,25,3]` float32.

    A Kinect joint that is the mean of several BODY_25 joints is valid only when all of them are.
    """
    index = {name: i for i, name in enumerate(BODY25_JOINTS)}
    out = np.full((joints.shape[0], NUM_JOINTS, 3), np.nan, dtype=np.float32)
    for k, name in enumerate(KINECT_JOINTS):
        for sources in (BODY25_TO_KINECT[name], BODY25_FALLBACK.get(name, ())):
            if not sources:
                continue
            ids = [index[s] for s in sources]
            ok = valid[:, ids].all(axis=1) & np.isnan(out[:, k]).any(axis=1)
            out[ok, k] = joints[ok][:, ids].mean(axis=1)
    return out


# --- video ---------------------------------------------------------------------------------------

_FRAME_COUNT = re.compile(r"frame=\s*(\d+)")


def count_frames(path: Path) -> int:
    """Number of video frames in `path`, counted by demuxing (stream copy, no decode)."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostats", "-progress", "pipe:2", "-i", str(path),
         "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
        capture_output=True, text=True,
    )  # fmt: skip
    counts = _FRAME_COUNT.findall(result.stderr)
    if result.returncode != 0 or not counts:
        raise Quarantine(f"{path.name}: cannot read video ({_last_line(result.stderr)})")
    return int(counts[-1])


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no output"


def decode_frames(path: Path, indices: list[int]) -> tuple[np.ndarray, float]:
    """The frames of `path` at `indices` (repeats allowed), uint8 `[len(indices),H,W,3]`, and its fps.

    Only the chosen frames leave ffmpeg (a `select` filter), so a long 640x360 video costs the
    decode, not gigabytes of RGB in memory.
    """
    try:
        info = probe(path)
    except VideoError as error:
        raise Quarantine(str(error)) from None
    wanted = sorted(set(indices))
    expression = "+".join(f"eq(n,{i})" for i in wanted)  # ffmpeg-python escapes the commas
    try:
        out, _ = (
            ffmpeg.input(str(path))
            .filter("select", expression)
            .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
            .run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as error:
        detail = _last_line(error.stderr.decode(errors="replace"))
        raise Quarantine(f"{path.name}: cannot decode ({detail})") from None
    frames = np.frombuffer(out, dtype=np.uint8)
    frame_bytes = info.height * info.width * 3
    if frames.size != frame_bytes * len(wanted):
        got = frames.size // frame_bytes
        raise Quarantine(f"{path.name}: decoded {got} of the {len(wanted)} frames asked for (too short)")
    frames = frames.reshape(len(wanted), info.height, info.width, 3)
    position = {frame: k for k, frame in enumerate(wanted)}
    return frames[[position[i] for i in indices]], info.fps


def require_files(*paths: Path) -> None:
    """Quarantine naming the first of `paths` that does not exist."""
    for path in paths:
        if not path.is_file():
            raise Quarantine(f"missing file {path.name} ({path.parent.name}/)")

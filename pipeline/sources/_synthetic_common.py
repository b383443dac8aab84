"""Helpers shared by the synthetic-dataset adapters (hypersim, surreact, phav, kist-synadl, ehoi).

Frame sampling, joint-set bridges into the Kinect V2 order of `pose3d.npy`, and decoding chosen
frames of a video file through the engine's one ffmpeg path (`pipeline.video`). Everything here
raises `Quarantine` for a bad raw input, never a bare exception, so an adapter can call it
without wrapping.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import BuildConfig
from pipeline.schema import KINECT_JOINTS, NUM_JOINTS
from pipeline.sources.base import Item, Option, Quarantine, SamplingRule, sampling_rng
from pipeline.video import Clip, VideoError, sample_clip

FRAME_STRIDE = Option(
    "frame_stride",
    "int",
    0,
    "0: frames spread over the whole clip; S: a centred window, S frames apart",
    minimum=0,
)


SYNTHETIC_SAMPLING = SamplingRule(
    "one frame in each of --frames equal segments of the clip, or --option frame_stride=S apart"
)


def sample_frames(
    available: int, config: BuildConfig, item: Item | None = None, stride: int = 0
) -> tuple[list[int], int]:
    """Choose `config.frames` positions in `0..available-1`; return them and how many are padding.

    By default the clip spans the whole trajectory/video, one frame in each of `frames` equal
    segments: its centre for evaluation, a uniformly random one for a training `item` (PySlowFast's
    train mode; `--train-views K` stores K such draws, seeded by `base.sampling_rng`, so a rebuild
    picks the same frames). With a `stride` S (`--option frame_stride=S`) a window of frames `S` apart
    is taken instead (what a video model that expects a fixed frame rate wants): centred for
    evaluation, starting anywhere for training. Too short a source is padded by repeating its last
    frame.
    """
    if available < 1:
        raise Quarantine("no frames to sample from")
    frames = config.frames
    rng = sampling_rng(config, item) if item is not None else None
    if stride > 0:
        span = (frames - 1) * stride + 1
        spare = max(0, available - span)
        start = int(rng.integers(0, spare + 1)) if rng is not None else spare // 2
        chosen = [i for i in range(start, start + span, stride) if i < available]
    elif available >= frames:
        offsets = rng.uniform(0.0, 1.0, frames) if rng is not None else np.full(frames, 0.5)
        chosen = [int((k + offsets[k]) * available / frames) for k in range(frames)]
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

# Kinect joint -> SMPL joint, anatomical left to anatomical left, as SURREACT's own kinect2smpl
# table pairs them (training/datasets/ntu.py): Kinect *hand* <- SMPL *wrist* and Kinect *hand tip*
# <- SMPL *hand*, spine_mid <- spine1. Kinect's wrist and thumb have no SMPL counterpart. The
# official table also pairs SMPL left with Kinect right, together with a z negation: that is a
# reflection of the whole skeleton, not a relabelling, so without the negation left stays left.
SMPL_TO_KINECT: dict[str, str | None] = {
    "spine_base": "pelvis", "spine_mid": "spine1", "neck": "neck", "head": "head",
    "shoulder_left": "l_shoulder", "elbow_left": "l_elbow", "wrist_left": None, "hand_left": "l_wrist",
    "shoulder_right": "r_shoulder", "elbow_right": "r_elbow", "wrist_right": None, "hand_right": "r_wrist",
    "hip_left": "l_hip", "knee_left": "l_knee", "ankle_left": "l_ankle", "foot_left": "l_foot",
    "hip_right": "r_hip", "knee_right": "r_knee", "ankle_right": "r_ankle", "foot_right": "r_foot",
    "spine_shoulder": "spine3", "handtip_left": "l_hand", "thumb_left": None, "handtip_right": "r_hand",
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

    `swap_left_right` pairs SMPL left with Kinect right without mirroring the points: a debugging
    aid for a release whose labels turn out swapped (gulvarol/surreal#10), off by default.
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


def decode_sampled(
    path: Path,
    config: BuildConfig,
    counts: dict[str, int] | None = None,
    item: Item | None = None,
    stride: int = 0,
) -> tuple[Clip, int]:
    """The `sample_frames` frames of a video at its stored size, and how many of them are padding.

    Decoded by the engine's one ffmpeg path (`pipeline.video.sample_clip`, displayed size): frame n is
    the n-th decoded frame of a checked frame count. `counts` are the frame counts of the labels that go
    with the video; the clip is quarantined when the video's count differs from any of them.
    """

    def pick(available: int) -> list[int]:
        if counts and any(count != available for count in counts.values()):
            listed = ", ".join(f"{name} {count}" for name, count in {"video": available, **counts}.items())
            raise Quarantine(f"frame counts disagree: {listed}")
        return sample_frames(available, config, item, stride)[0]

    try:
        clip = sample_clip(path, None, pick)
    except VideoError as error:
        raise Quarantine(str(error)) from None
    return clip, sample_frames(clip.decoded, config, item, stride)[1]


def require_files(*paths: Path) -> None:
    """Quarantine naming the first of `paths` that does not exist."""
    for path in paths:
        if not path.is_file():
            raise Quarantine(f"missing file {path.name} ({path.parent.name}/)")

"""The sample contract shared by the pipeline, `verify` and the trainer (architecture.md §2–§3).

One place defines the task tuple and its bits, the shard members each task owns (dtype, shape,
meaning), how sample keys are sanitised, and `validate_sample()`, which the shard writer runs on
every sample before it is written and `verify` runs on every sample it reads back. Torch-free.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Bit i of a sample's mask is set when TASKS[i]'s label is present. New downstream tasks are
# appended after the synthetic ones, never renumbering (architecture.md §2).
TASKS: tuple[str, ...] = ("action", "depth", "normal", "segm", "pose3d", "boxes", "oscc", "pnr", "ava")
TASK_BIT: dict[str, int] = {name: bit for bit, name in enumerate(TASKS)}
SYNTHETIC_TASKS: tuple[str, ...] = ("depth", "normal", "segm", "pose3d", "boxes")
REAL_TASKS: tuple[str, ...] = ("action", "oscc", "pnr", "ava")

SEGM_IGNORE = 65535  # segm.npy value for "no label at this pixel"
BOX_CLS_PADDING = -1  # boxes_cls.npy value of an empty slot (its boxes.npy row is NaN)
NUM_JOINTS = 25  # Kinect V2 joint count of pose3d.npy
NUM_AVA_CLASSES = 60  # the AVA v2.2 evaluation subset

# Kinect V2 joint order (the NTU RGB+D convention, 0-based).
KINECT_JOINTS: tuple[str, ...] = (
    "spine_base", "spine_mid", "neck", "head",
    "shoulder_left", "elbow_left", "wrist_left", "hand_left",
    "shoulder_right", "elbow_right", "wrist_right", "hand_right",
    "hip_left", "knee_left", "ankle_left", "foot_left",
    "hip_right", "knee_right", "ankle_right", "foot_right",
    "spine_shoulder", "handtip_left", "thumb_left", "handtip_right", "thumb_right",
)  # fmt: skip


def _left_right_swap() -> tuple[int, ...]:
    index = {name: i for i, name in enumerate(KINECT_JOINTS)}
    swapped = []
    for name in KINECT_JOINTS:
        if name.endswith("_left"):
            name = name[: -len("_left")] + "_right"
        elif name.endswith("_right"):
            name = name[: -len("_right")] + "_left"
        swapped.append(index[name])
    return tuple(swapped)


# The Kinect V2 skeleton as joint-name pairs (NTU RGB+D's 24 bones).
KINECT_BONES: tuple[tuple[str, str], ...] = (
    ("spine_base", "spine_mid"), ("spine_mid", "spine_shoulder"), ("spine_shoulder", "neck"),
    ("neck", "head"),
    ("spine_shoulder", "shoulder_left"), ("shoulder_left", "elbow_left"), ("elbow_left", "wrist_left"),
    ("wrist_left", "hand_left"), ("hand_left", "handtip_left"), ("wrist_left", "thumb_left"),
    ("spine_shoulder", "shoulder_right"), ("shoulder_right", "elbow_right"), ("elbow_right", "wrist_right"),
    ("wrist_right", "hand_right"), ("hand_right", "handtip_right"), ("wrist_right", "thumb_right"),
    ("spine_base", "hip_left"), ("hip_left", "knee_left"), ("knee_left", "ankle_left"),
    ("ankle_left", "foot_left"),
    ("spine_base", "hip_right"), ("hip_right", "knee_right"), ("knee_right", "ankle_right"),
    ("ankle_right", "foot_right"),
)  # fmt: skip

# KINECT_FLIP[i] is the joint that joint i becomes under a horizontal flip (left <-> right).
KINECT_FLIP: tuple[int, ...] = _left_right_swap()


@dataclass(frozen=True)
class MemberSpec:
    """One label file inside a sample: `<key>.<name>` in the tar.

    `shape` uses symbolic dimensions: "T" frames, "h"/"w" label map size, "O" box slots,
    "P" per-sample count (AVA persons); ints are fixed. `flip` says how the label follows a horizontal flip
    of the frame (architecture.md §2): one of `FLIPS`, "" when it does not change.
    """

    name: str
    dtype: str
    shape: tuple[str | int, ...]
    meaning: str
    flip: str = ""


# How a label follows a horizontal flip: "map" mirrors a per-pixel map along its width, "directions" also
# negates the x component of camera-frame vectors, "joints" swaps left and right joints (KINECT_FLIP) and
# negates x, "boxes" mirrors normalised xyxy boxes.
FLIPS: tuple[str, ...] = ("", "map", "directions", "joints", "boxes")


# Label members per task. Tasks whose label lives in meta.json have no members here.
TASK_MEMBERS: dict[str, tuple[MemberSpec, ...]] = {
    "action": (),
    "depth": (
        MemberSpec("depth.npy", "float16", ("T", "h", "w"), "planar depth in metres; NaN = invalid", "map"),
    ),
    "normal": (
        MemberSpec(
            "normal.npy",
            "float16",
            ("T", "h", "w", 3),
            "unit normal, OpenCV camera frame; NaN = invalid",
            "directions",
        ),
    ),
    "segm": (
        MemberSpec(
            "segm.npy", "uint16", ("T", "h", "w"), "unified segmentation class id; 65535 = ignore", "map"
        ),
    ),
    "pose3d": (
        MemberSpec(
            "pose3d.npy",
            "float32",
            ("T", NUM_JOINTS, 3),
            "Kinect V2 joints, metres, camera frame; NaN row = missing",
            "joints",
        ),
    ),
    "boxes": (
        MemberSpec(
            "boxes.npy", "float32", ("T", "O", 4), "xyxy normalised to [0, 1]; NaN row = empty slot", "boxes"
        ),
        MemberSpec("boxes_cls.npy", "int16", ("T", "O"), "box class id; -1 = empty slot"),
    ),
    "oscc": (),
    "pnr": (
        MemberSpec(
            "pnr.npy", "float32", ("T",), "per-frame point-of-no-return target (one-hot; zeros = no PNR)"
        ),
    ),
    "ava": (
        MemberSpec(
            "ava_boxes.npy",
            "float32",
            ("P", 4),
            "person boxes on the keyframe, xyxy normalised to [0, 1]",
            "boxes",
        ),
        MemberSpec(
            "ava_labels.npy", "uint8", ("P", NUM_AVA_CLASSES), "multi-hot actions over the 60-class subset"
        ),
    ),
}
# Tasks whose label is a meta.json field: task -> field name.
TASK_META_FIELDS: dict[str, str] = {"action": "label", "oscc": "oscc"}

VIDEO_NPY = "video.npy"
META_JSON = "meta.json"
REQUIRED_META = (
    "source", "id", "split", "mask", "tasks", "label", "label_name",
    "fps", "frame_indices", "orig_hw", "hw", "view", "view_group", "config_hash",
)  # fmt: skip
LABEL_MEMBERS: dict[str, str] = {spec.name: task for task, specs in TASK_MEMBERS.items() for spec in specs}
MEMBER_SPECS: dict[str, MemberSpec] = {spec.name: spec for specs in TASK_MEMBERS.values() for spec in specs}
# Members that are per-pixel maps `[T, h, w, ...]` on the label grid: resized, cropped and flipped as images.
DENSE_MEMBERS: tuple[str, ...] = tuple(
    name for name, spec in MEMBER_SPECS.items() if spec.shape[1:3] == ("h", "w")
)


class SampleError(ValueError):
    """A sample breaks the contract; the message is one line saying what and where."""


def mask_of(tasks: list[str] | tuple[str, ...] | set[str]) -> int:
    """The availability mask with the bit of every named task set."""
    return sum(1 << TASK_BIT[name] for name in set(tasks))


def tasks_of(mask: int) -> list[str]:
    """Task names whose bit is set in `mask`, in bit order."""
    return [name for bit, name in enumerate(TASKS) if mask >> bit & 1]


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def sample_key(source: str, sample_id: str) -> str:
    """`<source>-<id>` with every character outside [A-Za-z0-9_-] replaced by `_`.

    WebDataset splits a tar member name at its first dot, so a dot inside a key would silently
    cut the sample in two. Replacing characters can make two ids one key (`50.1` and `50_1`), so a
    key whose id had to change ends in `_` and 8 hex digits of the raw id's SHA-1; ids that are
    already safe keep their plain key.
    """
    raw = f"{source}-{sample_id}"
    safe = _KEY_UNSAFE.sub("_", raw)
    if safe == raw:
        return raw
    return f"{safe}_{hashlib.sha1(raw.encode()).hexdigest()[:8]}"


def frame_member(index: int) -> str:
    """Member name of frame `index` under the `jpeg` codec."""
    return f"video.{index:03d}.jpg"


def _check_array(name: str, array: np.ndarray, dims: dict[str, int]) -> None:
    spec = MEMBER_SPECS[name]
    if array.dtype != np.dtype(spec.dtype):
        raise SampleError(f"{name}: dtype {array.dtype}, expected {spec.dtype}")
    if array.ndim != len(spec.shape):
        raise SampleError(f"{name}: shape {array.shape}, expected {spec.shape}")
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if isinstance(want, int):
            if got != want:
                raise SampleError(f"{name}: axis {axis} is {got}, expected {want}")
        elif want in dims and dims[want] != got:
            raise SampleError(f"{name}: axis {axis} ({want}) is {got}, expected {dims[want]}")
        else:
            dims[want] = got


def _check_values(name: str, array: np.ndarray) -> None:
    if array.dtype.kind == "f" and np.isinf(array).any():
        raise SampleError(f"{name}: contains inf")
    if name == "depth.npy" and (array[~np.isnan(array)] < 0).any():
        raise SampleError("depth.npy: negative depth")
    if name in ("boxes.npy", "ava_boxes.npy"):
        valid = array[~np.isnan(array).any(axis=-1)]
        if ((valid < 0) | (valid > 1)).any() or (valid[:, 2:] < valid[:, :2]).any():
            raise SampleError(f"{name}: a box is outside [0, 1] or not x1<=x2, y1<=y2")
    if name == "pnr.npy" and np.isnan(array).any():
        raise SampleError("pnr.npy: contains NaN")


def validate_sample(meta: Mapping, arrays: Mapping[str, np.ndarray], video_shape: tuple[int, ...]) -> None:
    """Check one sample against the contract; raise `SampleError` naming the first problem.

    `arrays` maps member names (`depth.npy`, ...) to decoded arrays; `video_shape` is the decoded
    clip's shape `(T, H, W, 3)`. The mask must agree with the label members present and with the
    meta.json label fields, in both directions.
    """
    missing = [field for field in REQUIRED_META if field not in meta]
    if missing:
        raise SampleError(f"meta.json lacks {', '.join(missing)}")
    if len(video_shape) != 4 or video_shape[3] != 3 or min(video_shape) < 1:
        raise SampleError(f"video: shape {tuple(video_shape)}, expected (T, H, W, 3)")
    mask = int(meta["mask"])
    if mask < 0 or mask >> len(TASKS):
        raise SampleError(f"meta.json: mask {mask} has bits outside the {len(TASKS)} known tasks")
    present = set(tasks_of(mask))
    if list(meta["tasks"]) != tasks_of(mask):
        raise SampleError(f"meta.json: tasks {meta['tasks']} disagree with mask {mask}")
    unknown = [name for name in arrays if name not in LABEL_MEMBERS]
    if unknown:
        raise SampleError(f"unknown member(s) {', '.join(sorted(unknown))}")
    for task in TASKS:
        wanted = {spec.name for spec in TASK_MEMBERS[task]}
        have = wanted & set(arrays)
        if task in present and have != wanted:
            raise SampleError(
                f"mask says {task} but member(s) {', '.join(sorted(wanted - have))} are missing"
            )
        if task not in present and have:
            raise SampleError(f"member(s) {', '.join(sorted(have))} present but the mask lacks {task}")
        field = TASK_META_FIELDS.get(task)
        if field is not None and (meta.get(field) is not None) != (task in present):
            raise SampleError(f"meta.json {field}={meta.get(field)!r} disagrees with the mask bit of {task}")
    if list(meta["hw"]) != list(video_shape[1:3]):
        raise SampleError(f"meta.json hw {meta['hw']} disagrees with the video's {list(video_shape[1:3])}")
    dims = {"T": video_shape[0]}
    if len(meta["frame_indices"]) != video_shape[0]:
        raise SampleError(
            f"frame_indices has {len(meta['frame_indices'])} entries for {video_shape[0]} frames"
        )
    for name in sorted(arrays):
        _check_array(name, arrays[name], dims)
        _check_values(name, arrays[name])
    if "boxes.npy" in arrays:
        empty_box = np.isnan(arrays["boxes.npy"]).any(axis=-1)
        if not np.array_equal(empty_box, arrays["boxes_cls.npy"] == BOX_CLS_PADDING):
            raise SampleError("boxes.npy NaN rows and boxes_cls.npy -1 entries disagree")

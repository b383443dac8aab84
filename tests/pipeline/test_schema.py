"""The sample contract: member round trips, keys, masks and validate_sample()."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.reader import decode_sample
from pipeline.schema import (
    DENSE_MEMBERS,
    KINECT_FLIP,
    KINECT_JOINTS,
    MEMBER_SPECS,
    TASK_BIT,
    TASKS,
    SampleError,
    mask_of,
    sample_key,
    tasks_of,
    validate_sample,
)
from pipeline.shards import ZSTD_MAGIC, Codecs, decode_npy, encode_members, encode_npy

T, H, W, LH, LW, P = 3, 8, 8, 4, 4, 2  # frames, frame size, label size, AVA persons


def example_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One valid array for every label member, with NaN / sentinel entries where allowed."""
    depth = rng.uniform(0.5, 9, (T, LH, LW)).astype(np.float16)
    depth[0, 0, 0] = np.nan
    normal = rng.normal(size=(T, LH, LW, 3))
    normal = (normal / np.linalg.norm(normal, axis=-1, keepdims=True)).astype(np.float16)
    pose = rng.normal(size=(T, 25, 3)).astype(np.float32)
    pose[1, 3] = np.nan
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [np.nan] * 4]] * T, dtype=np.float32)
    return {
        "depth.npy": depth,
        "normal.npy": normal,
        "segm.npy": np.where(rng.random((T, LH, LW)) < 0.1, 65535, rng.integers(0, 40, (T, LH, LW))).astype(
            np.uint16
        ),
        "pose3d.npy": pose,
        "boxes.npy": boxes,
        "boxes_cls.npy": np.array([[3, -1]] * T, dtype=np.int16),
        "pnr.npy": np.eye(T, dtype=np.float32)[1],
        "ava_boxes.npy": np.array([[0.1, 0.1, 0.4, 0.9], [0.5, 0.2, 0.9, 0.8]], dtype=np.float32),
        "ava_labels.npy": rng.integers(0, 2, (P, 60)).astype(np.uint8),
    }


def example_meta(tasks: list[str]) -> dict:
    mask = mask_of(tasks)
    return {
        "source": "unit",
        "id": "a/b.c",
        "split": "train",
        "mask": mask,
        "tasks": tasks_of(mask),
        "label": 7 if "action" in tasks else None,
        "label_name": None,
        "fps": 30.0,
        "frame_indices": list(range(T)),
        "orig_hw": [H, W],
        "hw": [H, W],
        "view": 0,
        "view_group": "x",
        "config_hash": "0" * 16,
        **({"oscc": 1} if "oscc" in tasks else {}),
    }


@pytest.mark.parametrize("codec, label_codec", [("npy", "raw"), ("jpeg", "raw"), ("npy", "zstd")])
def test_every_member_round_trips_with_dtype_shape_and_values(codec: str, label_codec: str) -> None:
    rng = np.random.default_rng(0)
    arrays = example_arrays(rng)
    assert set(arrays) == set(MEMBER_SPECS), "the example must cover every member the schema defines"
    video = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    meta = example_meta(list(TASKS))
    validate_sample(meta, arrays, video.shape)
    members = encode_members(meta, video, arrays, Codecs(codec, 95, label_codec))
    compressed = {name for name, data in members.items() if data[:4] == ZSTD_MAGIC}
    assert compressed == (set(DENSE_MEMBERS) if label_codec == "zstd" else set())
    decoded = decode_sample("k", members)
    assert decoded["meta"] == meta
    for name, array in arrays.items():
        assert decoded[name].dtype == array.dtype, name
        np.testing.assert_array_equal(decoded[name], array)  # NaN compare equal here
    if codec == "npy":
        np.testing.assert_array_equal(decoded["video"], video)
    else:
        assert decoded["video"].shape == video.shape and decoded["video"].dtype == np.uint8


def test_sample_key_keeps_only_safe_characters() -> None:
    assert re.fullmatch(r"ssv2-clip_1_5x_a_[0-9a-f]{8}", sample_key("ssv2", "clip 1.5x/a"))
    assert "." not in sample_key("hypersim", "ai_001_001.cam_00")
    assert sample_key("procedural", "train-000001") == "procedural-train-000001"  # safe ids stay plain


@pytest.mark.parametrize(("first", "second"), [("50.1", "50_1"), ("k y", "k_y"), ("a/b", "a.b")])
def test_ids_that_sanitise_alike_get_different_keys(first: str, second: str) -> None:
    assert sample_key("videofolder", first) != sample_key("videofolder", second)


def test_mask_and_tasks_are_inverse_and_bits_fixed() -> None:
    assert TASKS[:6] == ("action", "depth", "normal", "segm", "pose3d", "boxes")
    assert TASK_BIT["boxes"] == 5 and TASK_BIT["oscc"] == 6
    assert mask_of(["depth", "action"]) == 0b11
    assert tasks_of(mask_of(["segm", "pose3d"])) == ["segm", "pose3d"]


def test_kinect_flip_swaps_left_and_right() -> None:
    for joint, partner in enumerate(KINECT_FLIP):
        name, other = KINECT_JOINTS[joint], KINECT_JOINTS[partner]
        assert other == name.replace("left", "tmp").replace("right", "left").replace("tmp", "right")
    assert KINECT_FLIP[KINECT_JOINTS.index("hand_left")] == KINECT_JOINTS.index("hand_right")


@pytest.mark.parametrize(
    "tasks, keep, expect",
    [
        (["depth"], [], r"mask says depth but member\(s\) depth.npy are missing"),
        (["boxes"], ["boxes.npy"], r"mask says boxes but member\(s\) boxes_cls.npy are missing"),
    ],
)
def test_mask_without_member_is_rejected(tasks: list[str], keep: list[str], expect: str) -> None:
    arrays = {name: example_arrays(np.random.default_rng(1))[name] for name in keep}
    with pytest.raises(SampleError, match=expect):
        validate_sample(example_meta(tasks), arrays, (T, H, W, 3))


def test_member_without_mask_bit_is_rejected() -> None:
    arrays = {"segm.npy": example_arrays(np.random.default_rng(2))["segm.npy"]}
    with pytest.raises(SampleError, match="present but the mask lacks segm"):
        validate_sample(example_meta(["action"]), arrays, (T, H, W, 3))


def test_label_field_must_agree_with_action_bit() -> None:
    meta = example_meta([])
    meta["label"] = 3
    with pytest.raises(SampleError, match="label=3 disagrees"):
        validate_sample(meta, {}, (T, H, W, 3))


@pytest.mark.parametrize(
    "name, corrupt, expect",
    [
        ("depth.npy", lambda a: a.astype(np.float32), "dtype float32"),
        ("depth.npy", lambda a: a[:2], r"axis 0 \(T\) is 2"),
        ("depth.npy", lambda a: -np.abs(a), "negative depth"),
        ("boxes.npy", lambda a: a * 3, "outside"),
        ("pose3d.npy", lambda a: a[:, :24], "axis 1 is 24"),
    ],
)
def test_wrong_member_arrays_are_rejected(name: str, corrupt, expect: str) -> None:
    arrays = example_arrays(np.random.default_rng(3))
    arrays[name] = corrupt(arrays[name])
    with pytest.raises(SampleError, match=expect):
        validate_sample(example_meta(list(TASKS)), arrays, (T, H, W, 3))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.float16).reshape(2, 3, 4),
        np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        np.array(7.5, dtype=np.float32),  # zero-dimensional
        np.zeros((0, 4), dtype=np.float32),  # AVA: no person boxes
        np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),  # falls back to np.load
    ],
)
def test_npy_decoder_matches_numpy_and_returns_writable_arrays(array: np.ndarray) -> None:
    decoded = decode_npy(encode_npy(array))
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.writeable

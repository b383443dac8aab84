"""Tiny real-layout fixtures for the real-video adapters, written at test time with ffmpeg.

Frames are "index coded": the top half of frame k is grey level `(k % 16) * 16 + 8` and the bottom
half `(k // 16) * 16 + 8`, so a decoded frame says which source frame it is (`read_index`) even
after lossy coding, a centre crop and a resize. That is how the tests check frame selection.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.video import ffmpeg_exe

CODECS = {
    "vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "0", "-crf", "10"],
    "h264": ["-c:v", "libx264", "-preset", "ultrafast", "-qp", "0"],
}


def index_frames(count: int, height: int, width: int, first: int = 0) -> np.ndarray:
    """`count` index-coded RGB frames for source frames `first .. first+count-1`."""
    index = np.arange(first, first + count)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    frames[:, : height // 2] = ((index % 16) * 16 + 8)[:, None, None, None]
    frames[:, height // 2 :] = ((index // 16 % 16) * 16 + 8)[:, None, None, None]
    return frames


def read_index(frame: np.ndarray) -> int:
    """The source frame number an index-coded frame shows (tolerates coding noise of +-7)."""
    height = frame.shape[0]
    low = float(np.median(frame[height // 8 : height * 3 // 8]))
    high = float(np.median(frame[height * 5 // 8 : height * 7 // 8]))
    return int(round((low - 8) / 16)) % 16 + 16 * (int(round((high - 8) / 16)) % 16)


def encode(
    path: Path,
    frames: np.ndarray,
    fps: float,
    codec: str = "h264",
    extra: Sequence[str] = (),
    vf: str | None = None,
) -> Path:
    """Encode uint8 RGB `frames` `[N,H,W,3]` to `path` (container from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width, _ = frames.shape
    pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        *extra,
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        str(fps),
        "-i",
        "pipe:",
    ]
    if vf:
        cmd += ["-vf", vf, "-fps_mode", "passthrough"]
    cmd += [*CODECS[codec], "-pix_fmt", pix_fmt, str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    return path


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def corrupt(path: Path) -> Path:
    """Overwrite the middle of a file with garbage, keeping its header and its size."""
    data = bytearray(path.read_bytes())
    start = len(data) // 3
    data[start : start + len(data) // 3] = bytes((i * 37 + 11) % 256 for i in range(len(data) // 3))
    path.write_bytes(bytes(data))
    return path


# --- Something-Something V2 -------------------------------------------------------------------

SSV2_TEMPLATES = (
    "Putting [something] on a surface",
    "Approaching [something] with your camera",
    "Holding [something]",
    "Wiping [something] off of [something]",
)


def ssv2_label_map(templates: Sequence[str] = SSV2_TEMPLATES) -> dict[str, str]:
    """labels.json as distributed: bracket-free template -> str(alphabetical position)."""
    clean = sorted(t.replace("[", "").replace("]", "") for t in templates)
    return {name: str(i) for i, name in enumerate(clean)}


def ssv2_entry(video_id: str, template: str) -> dict:
    return {
        "id": video_id,
        "label": template.lower().replace("[", "").replace("]", ""),
        "template": template,
        "placeholders": ["thing"] * template.count("["),
    }


def make_ssv2(root: Path, naming: str = "old", lengths: dict[str, int] | None = None) -> dict:
    """An SSv2 tree: annotations (old `something-something-v2-*` or new `labels.json`... names) and
    VP9 webm videos at 12 fps, 96x72. Returns {split: [entries]} written."""
    lengths = lengths or {"10": 30, "11": 20, "12": 26, "20": 24, "21": 12, "30": 18}
    splits = {
        "train": [
            ssv2_entry("10", SSV2_TEMPLATES[0]),
            ssv2_entry("11", SSV2_TEMPLATES[2]),
            ssv2_entry("12", SSV2_TEMPLATES[3]),
        ],
        "validation": [ssv2_entry("20", SSV2_TEMPLATES[1]), ssv2_entry("21", SSV2_TEMPLATES[3])],
        "test": [{"id": "30"}],
    }
    prefix = "something-something-v2-" if naming == "old" else ""
    ann = root / "annotations"
    write_json(ann / f"{prefix}labels.json", ssv2_label_map())
    for split, entries in splits.items():
        write_json(ann / f"{prefix}{split}.json", entries)
    for video_id, count in lengths.items():
        encode(
            root / "20bn-something-something-v2" / f"{video_id}.webm", index_frames(count, 72, 96), 12, "vp9"
        )
    return splits


def add_rotation(path: Path, degrees: int) -> Path:
    """Copy `path` next to itself with a display-matrix rotation (stream copy, pixels untouched)."""
    out = path.with_name(f"{path.stem}_rot{degrees}{path.suffix}")
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-display_rotation",
        str(degrees),
        "-i",
        str(path),
        "-c",
        "copy",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


# --- Diving48 ----------------------------------------------------------------------------------

DIVING48_VOCAB = [
    ["Back", "15som", "05Twis", "FREE"],
    ["Back", "15som", "15Twis", "FREE"],
    ["Back", "15som", "25Twis", "FREE"],
]  # (first 3 of the real 48)


def make_diving48(root: Path) -> None:
    """Diving48 V2 layout: vocab, V2 train/test JSONs and rgb/<vid_name>.mp4 (30 fps, 64x48)."""
    write_json(root / "Diving48_vocab.json", DIVING48_VOCAB)
    train = [
        {"vid_name": "-mmq0PT-u8k_00155", "label": 2, "start_frame": 0, "end_frame": 39},
        {"vid_name": "_abcdefghij_00001", "label": 1, "start_frame": 8, "end_frame": 23},
    ]
    test = [{"vid_name": "-mmq0PT-u8k_00156", "label": 0, "start_frame": 0, "end_frame": 20}]
    write_json(root / "Diving48_V2_train.json", train)
    write_json(root / "Diving48_V2_test.json", test)
    for name, count in (("-mmq0PT-u8k_00155", 40), ("_abcdefghij_00001", 30), ("-mmq0PT-u8k_00156", 20)):
        encode(root / "rgb" / f"{name}.mp4", index_frames(count, 48, 64), 30)


# --- Ego4D OSCC/PNR ----------------------------------------------------------------------------

EGO_VIDEO_A = "4e3fc1e9-424f-4921-9068-d468c135f347"
EGO_VIDEO_B = "7c0c0057-3bbc-40ef-a91e-4d6e1a637642"


def make_ego4d(root: Path) -> dict:
    """`v2/annotations/fho_oscc-pnr_*.json` + `v2/full_scale/<video_uid>.mp4` (30 fps, 64x48)."""
    positive = {
        "clip_uid": None,
        "clip_id": "1042",
        "unique_id": "c31c-1_15-9_15",
        "video_uid": EGO_VIDEO_A,
        "clip_start_sec": 34 / 30,
        "clip_end_sec": 274 / 30,
        "clip_start_frame": 34,
        "clip_end_frame": 274,
        "clip_pnr_frame": 157,
        "parent_start_sec": 34 / 30,
        "parent_end_sec": 274 / 30,
        "parent_start_frame": 34,
        "parent_end_frame": 274,
        "state_change": True,
        "parent_pnr_frame": 157,
    }
    negative = {
        "clip_uid": "857978a5",
        "clip_id": "622",
        "unique_id": "5f0b-40_0-47_2",
        "video_uid": EGO_VIDEO_B,
        "parent_start_sec": 40 / 30,
        "parent_end_sec": 256 / 30,
        "parent_start_frame": 40,
        "parent_end_frame": 256,
        "state_change": False,
        "pnr_frame": None,
    }
    short_pos = {
        "unique_id": "5f0b-short",
        "video_uid": EGO_VIDEO_B,
        "parent_start_sec": 100 / 30,
        "parent_end_sec": 316 / 30,
        "parent_start_frame": 100,
        "parent_end_frame": 316,
        "state_change": True,
        "parent_pnr_frame": 290,
    }
    test = {
        "clip_id": "1397",
        "unique_id": "1397-3-4-1397",
        "video_uid": EGO_VIDEO_A,
        "parent_start_sec": 3.0,
        "parent_end_sec": 4.0,
        "parent_start_frame": 90,
        "parent_end_frame": 120,
    }
    ann = root / "v2" / "annotations"
    meta = {"version": "v2", "date": "2022-01-01", "description": "FHO OSCC PNR"}
    write_json(ann / "fho_oscc-pnr_train.json", {**meta, "split": "train", "clips": [positive, negative]})
    write_json(ann / "fho_oscc-pnr_val.json", {**meta, "split": "val", "clips": [short_pos]})
    write_json(ann / "fho_oscc-pnr_test_unannotated.json", {**meta, "split": "test", "clips": [test]})
    encode(root / "v2" / "full_scale" / f"{EGO_VIDEO_A}.mp4", index_frames(300, 48, 64), 30)
    encode(root / "v2" / "full_scale" / f"{EGO_VIDEO_B}.mp4", index_frames(330, 48, 64), 30)
    return {"positive": positive, "negative": negative, "short": short_pos, "test": test}


# --- AVA v2.2 ----------------------------------------------------------------------------------

AVA_VIDEOS = ("-5KQ66BBWC4", "_a9SWtcaXWg")
AVA_60 = (
    1,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    17,
    20,
    22,
    24,
    26,
    27,
    28,
    29,
    30,
    34,
    36,
    37,
    38,
    41,
    43,
    45,
    46,
    47,
    48,
    49,
    51,
    52,
    54,
    56,
    57,
    58,
    59,
    60,
    61,
    62,
    63,
    64,
    65,
    66,
    67,
    68,
    69,
    70,
    72,
    73,
    74,
    76,
    77,
    78,
    79,
    80,
)


def ava_pbtxt(style: str = "label") -> str:
    """The 60-class label map, in Google's `label {name / label_id}` style or the `item {name / id}` one."""
    block, key = ("label", "label_id") if style == "label" else ("item", "id")
    return "".join(f'{block} {{\n  name: "action {i}"\n  {key}: {i}\n}}\n' for i in AVA_60)


def make_ava(
    root: Path,
    frames_per_video: int = 160,
    width: int = 64,
    height: int = 36,
    videos: bool = False,
    version: str = "2.2",
) -> None:
    """AVA layout: annotations/ (GT CSVs, pbtxt, exclusions, proposals) and either extracted frames
    (`frame_lists/` + `frames/<vid>/<vid>_%06d.jpg`, 30 fps from t=900) or `videos_15min/<vid>.mp4`.
    `version` names the GT and exclusion files as that release does (`_v2.1` or `_v2.2`)."""
    from PIL import Image

    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    v0, v1 = AVA_VIDEOS
    train = [
        f"{v0},0902,0.250,0.100,0.500,0.900,12,1",
        f"{v0},0902,0.250,0.100,0.500,0.900,80,1",  # 2 actions
        f"{v0},0902,0.000,0.100,0.200,0.500,14,2",  # outside the centre square
        f"{v0},0903,0.400,0.200,0.600,0.800,2,3",  # action 2 is not among the 60
        f"{v1},0904,0.300,0.000,0.700,1.000,11,1",
        f"{v0},0905,0.812,0.300,1.000,0.950,12,5",  # touches the right edge
    ]
    val = [f"{v1},0902,0.300,0.000,0.700,1.000,11,1", f"{v1},0903,0.300,0.000,0.700,1.000,11,1"]
    (ann / f"ava_train_v{version}.csv").write_text("\n".join(train) + "\n")
    (ann / f"ava_val_v{version}.csv").write_text("\n".join(val) + "\n")
    (ann / f"ava_val_excluded_timestamps_v{version}.csv").write_text(f"{v1},0903\n")
    (ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(ava_pbtxt())
    (ann / "ava_val_predicted_boxes.csv").write_text(
        f"{v1},0902,0.300,0.000,0.700,1.000,,0.95\n{v1},0902,0.250,0.000,0.300,0.500,,0.50\n"
    )
    frames = index_frames(frames_per_video, height, width)
    for split, vids in (("train", AVA_VIDEOS), ("val", (v1,))):
        lines = ["original_vido_id video_id frame_id path labels"]
        for n, vid in enumerate(vids):
            lines += [f'{vid} {n} {k} {vid}/{vid}_{k + 1:06d}.jpg ""' for k in range(frames_per_video)]
        (root / "frame_lists").mkdir(exist_ok=True)
        (root / "frame_lists" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    for vid in AVA_VIDEOS:
        if videos:
            encode(root / "videos_15min" / f"{vid}.mp4", frames, 30)
            continue
        (root / "frames" / vid).mkdir(parents=True, exist_ok=True)
        for k, frame in enumerate(frames):
            Image.fromarray(frame).save(root / "frames" / vid / f"{vid}_{k + 1:06d}.jpg", quality=95)


# --- Something-Else ----------------------------------------------------------------------------

SE_LABELS = {
    "Pretending to put something on a surface": 0,
    "Holding something": 2,
    "Approaching something with your camera": 1,
}  # (ints on purpose not alphabetical)


def se_frame(video_id: str, number: int, boxes: list[tuple[str, list[float]]]) -> dict:
    """One frame dict of bounding_box_annotations.json; boxes are (standard_category, [x1,y1,x2,y2])."""
    placeholders = ["cup"]
    labels = [
        {
            "box2d": dict(zip(("x1", "y1", "x2", "y2"), xyxy, strict=True)),
            "gt_annotation": "object hand" if cat == "hand" else f"object {int(cat)}",
            "category": "hand" if cat == "hand" else placeholders[int(cat)],
            "standard_category": cat,
        }
        for cat, xyxy in boxes
    ]
    return {
        "url": f"https://example.invalid/{video_id}/{number:04d}.jpg",
        "split": "20perc_7",
        "gt_placeholders": placeholders,
        "name": f"{video_id}/{number:04d}.jpg",
        "nr_instances": len(labels),
        "task_index": 1,
        "labels": labels,
    }


def make_something_else(root: Path, box_dir: str = ".") -> None:
    """dataset_splits/{compositional,fewshot}/..., the box JSON and SSv2 webm videos (128x72).

    `box_dir`: where `bounding_box_annotations.json` goes, relative to `root` (users put the joined
    file where they put the split files, e.g. `dataset_splits`)."""
    comp = root / "dataset_splits" / "compositional"
    write_json(comp / "labels.json", SE_LABELS)
    write_json(
        comp / "train.json",
        [
            ssv2_entry("40", "Holding [something]"),
            ssv2_entry("41", "Pretending to put [something] on a surface"),
        ],
    )
    write_json(comp / "validation.json", [ssv2_entry("42", "Approaching [something] with your camera")])
    write_json(comp / "objectsA.json", ["cup"])
    write_json(comp / "objectsB.json", ["box"])
    few = root / "dataset_splits" / "fewshot"
    write_json(few / "finetune_labels.json", {"Holding something": 0})
    write_json(few / "finetune_10shot_train.json", [ssv2_entry("40", "Holding [something]")])
    write_json(few / "finetune_10shot_validation.json", [ssv2_entry("42", "Holding [something]")])
    # video 40: 20 frames at 128x72; hand box in every frame, object box from frame 10 on
    frames = [
        se_frame(
            "40",
            k + 1,
            [("hand", [0.0, 0.0, 64.0, 36.0])] + ([("0000", [40.0, 10.0, 100.0, 70.0])] if k >= 10 else []),
        )
        for k in range(20)
    ]
    write_json(root / box_dir / "bounding_box_annotations.json", {"40": frames})
    for video_id, count in (("40", 20), ("41", 16), ("42", 16)):
        encode(
            root / "20bn-something-something-v2" / f"{video_id}.webm", index_frames(count, 72, 128), 12, "vp9"
        )


# --- colour ------------------------------------------------------------------------------------

SATURATED = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 255, 255], [255, 0, 255], [255, 255, 0], [255, 128, 0]]
    + [[128, 0, 255], [0, 0, 0], [255, 255, 255]],
    dtype=np.uint8,
)


def colour_block_frames(count: int, height: int, width: int, block: int = 6, seed: int = 0) -> np.ndarray:
    """Random blocks of saturated colours, offset so block edges fall inside 2x2 chroma cells: the
    worst case for a YUV -> RGB conversion that handles chroma differently from ffmpeg's."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, len(SATURATED), (count, height // block + 1, width // block + 1))
    frames = SATURATED[cells].repeat(block, axis=1).repeat(block, axis=2)
    return np.ascontiguousarray(frames[:, 1 : height + 1, 3 : width + 3])

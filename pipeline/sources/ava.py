"""AVA v2.2 spatio-temporal action detection: one sample per annotated keyframe (video, second).

Reads the v2.2 CSVs (`video_id,sec,x1,y1,x2,y2,action_id,person_id`, boxes normalised), keeps the
keyframes 902..1798, groups rows into persons by the exact box string (SlowFast's rule: a person
with k actions has k rows with byte-identical boxes) and turns each person's actions into a
multi-hot row over the 60 evaluated classes of the label map pbtxt (actions outside it are dropped;
the person is kept). Keyframes listed in the excluded-timestamps file are skipped (logged).

Frames come from the extracted frames (`frame_lists/<split>.csv` + `frames/`, 30 fps from t=900 s)
or straight from the videos (`videos_15min/<vid>.*` cut at 900 s, or the full `videos/<vid>.*`).
Either way keyframe second `sec` is frame index `(sec - 900) * 30` (file `<vid>_{index+1:06d}.jpg`),
and the clip is `frames` indices `range(centre - frames*rate//2, centre + frames*rate//2, rate)`,
clamped to the video like SlowFast's `get_sequence`.

The clip is a fixed-stride window centred on the keyframe, `--frames` x `--sampling-rate` (default 4,
the MViTv2 AVA recipe's 16x4), as SlowFast's AVA loader takes it for training and testing alike:
there is no temporal jitter in that protocol, so the build refuses `--train-views`.

With `--crop none` (the default) the stored frame is the whole frame and the person boxes are kept
exactly as the CSV has them, so frame-mAP is computed against the original ground truth. A frame
wider than `--max-aspect`, or `--crop centre`, keeps only part of it: the boxes are then mapped into
the kept window with the engine's maths (`pipeline.geometry`), persons wholly outside it are
dropped and counted in `meta.json` `persons_cropped_out`, and `meta.json` `crop_box` says where the
window lies, so predictions can be mapped back to the full frame.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.geometry import config_framing, crop_boxes, frame_geometry
from pipeline.safe_pickle import PickleRejected, load_numpy_pickle
from pipeline.schema import NUM_AVA_CLASSES
from pipeline.sources._real_common import DEFAULT_RATE, find_dir, find_file
from pipeline.sources.base import (
    Item,
    Option,
    Quarantine,
    Sample,
    SamplingRule,
    Source,
    SourceError,
    file_fingerprint,
    leaves_root,
    value_fingerprint,
)
from pipeline.video import VideoError, decode_window

log = logging.getLogger(__name__)

ANNOTATION_DIRS = ("annotations", ".", "ava_v2.2")
LABEL_MAPS = (
    "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
    "ava_action_list_v2.1_for_activitynet_2018.pbtxt",
    "ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt",
)
VALID_SECONDS = range(902, 1799)  # AVA_VALID_FRAMES: keyframes 902..1798 inclusive
FPS = 30  # the extraction rate of the official frames (ffmpeg -r 30), and of the index grid
START = 900  # second of frame index 0
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi")


def read_label_map(path: Path) -> list[tuple[int, str]]:
    """(action id, name) pairs of a pbtxt label map, in file order (both `id:` and `label_id:` forms).

    Like the official readers, only lines with exactly two leading spaces count.
    """
    pairs, name = [], None
    for line in path.read_text().splitlines():
        if line.startswith("  name:"):
            name = line.split('"')[1] if '"' in line else line.split(":", 1)[1].strip()
        elif line.startswith(("  id:", "  label_id:")):
            pairs.append((int(line.split(":", 1)[1]), name or ""))
    if not pairs:
        raise SourceError(f"{path}: no `  name:` / `  id:` entries (not an AVA label map)")
    return pairs


def read_excluded(path: Path | None) -> set[tuple[str, int]]:
    if path is None or not path.is_file():
        return set()
    with path.open(newline="") as handle:
        return {(row[0], int(row[1])) for row in csv.reader(handle) if len(row) == 2}


def group_rows(path: Path) -> dict[tuple[str, int], dict]:
    """(video, second) -> {"persons": {box string: [action ids]}, "problem": str | None}."""
    keys: dict[tuple[str, int], dict] = {}
    with path.open(newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), 1):
            if not row:
                continue
            if len(row) < 7:
                raise SourceError(f"{path}:{line_no}: expected 8 columns, got {len(row)}")
            try:
                key = (row[0], int(row[1]))
            except ValueError:
                raise SourceError(
                    f"{path}:{line_no}: timestamp {row[1]!r} is not an integer second"
                ) from None
            slot = keys.setdefault(key, {"persons": defaultdict(list), "problem": None})
            try:
                box = [float(v) for v in row[2:6]]
                action = int(row[6])
            except ValueError:
                slot["problem"] = f"line {line_no}: unparsable box or action {row[2:7]}"
                continue
            if not all(0.0 <= v <= 1.0 for v in box) or box[2] < box[0] or box[3] < box[1]:
                slot["problem"] = f"line {line_no}: box {row[2:6]} is not normalised xyxy"
            elif key[1] not in VALID_SECONDS:
                slot["problem"] = f"timestamp {key[1]} outside the annotated keyframes 902..1798"
            slot["persons"][",".join(row[2:6])].append(action)
    return keys


def read_proposals(path: Path, threshold: float) -> dict[tuple[str, int], list[list[float]]]:
    """Person proposals: SlowFast CSV (`vid,sec,x1,y1,x2,y2,[action],score`) or mmaction2 pickle.

    A malformed file is a `SourceError` naming it (the build refuses it before any work).
    """
    if path.suffix == ".pkl":
        return _pickled_proposals(path, threshold)
    out: dict[tuple[str, int], list[list[float]]] = defaultdict(list)
    with path.open(newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), 1):
            try:
                if len(row) >= 8 and float(row[7]) >= threshold:
                    out[(row[0], int(row[1]))].append([*map(float, row[2:6]), float(row[7])])
            except ValueError:
                raise SourceError(f"{path}:{line_no}: unparsable proposal row {row[:8]}") from None
    return out


def _pickled_proposals(path: Path, threshold: float) -> dict[tuple[str, int], list[list[float]]]:
    """mmaction2's `{"<video_id>,<sec>": float [N, 4|5]}`, read by an unpickler that runs nothing it names
    (the released files are pickles: `pipeline.safe_pickle`)."""
    try:
        data = load_numpy_pickle(path)
    except PickleRejected as error:
        raise SourceError(f"ava proposals: {error}") from None
    if not isinstance(data, dict):
        raise SourceError(f"ava proposals: {path}: not a dict of '<video_id>,<sec>' -> boxes")
    out: dict[tuple[str, int], list[list[float]]] = defaultdict(list)
    for key, boxes in data.items():
        try:
            video, sec = key.rsplit(",", 1)
            rows = np.asarray(boxes, dtype=np.float64).reshape(-1, np.shape(boxes)[-1])
            if rows.shape[1] not in (4, 5):
                raise ValueError(f"{rows.shape[1]} columns")
            out_key = (video, int(sec))
        except (AttributeError, ValueError, TypeError, IndexError):
            raise SourceError(
                f"ava proposals: {path}: entry {key!r} is not '<video_id>,<sec>' -> boxes [N, 4 or 5]"
            ) from None
        for box in rows:
            score = float(box[4]) if len(box) > 4 else 1.0
            if score >= threshold:
                out[out_key].append([*map(float, box[:4]), score])
    return out


def clip_indices(sec: int, frames: int, rate: int) -> list[int]:
    """SlowFast `get_sequence` around the keyframe (unclamped; callers clamp)."""
    centre = (sec - START) * FPS
    half = frames * rate // 2
    return list(range(centre - half, centre + half, rate))[:frames]


def read_frame_lists(path: Path) -> dict[str, list[str]]:
    """PySlowFast frame list: header, then `vid vidx fidx path labels`; row order = frame order."""
    videos: dict[str, list[str]] = defaultdict(list)
    with path.open() as handle:
        handle.readline()
        for row in handle:
            parts = row.split()
            if len(parts) == 5:
                videos[parts[0]].append(parts[3])
    return videos


class AvaSource(Source):
    name = "ava"
    sampling = SamplingRule(  # keyframe-centred clips, as SlowFast trains and tests: no random draw
        f"a --frames x --sampling-rate window (default rate {DEFAULT_RATE}) centred on the keyframe, "
        "SlowFast's AVA rule",
        frozenset({"sampling_rate"}),
    )
    version = "2"
    tasks = ("ava",)
    splits = ("train", "val")
    description = "AVA v2.2: person boxes + multi-label actions (60 classes) on keyframes 902-1798"
    options = (
        Option(
            "frames_from",
            "str",
            "auto",
            "read extracted frames, the videos, or whichever is there",
            ("auto", "frames", "video"),
        ),
        Option("proposals", "str", None, "person-detection CSV or pickle (relative to the annotations)"),
        Option("proposal_score", "float", 0.9, "keep proposals scoring at least this", minimum=0),
    )

    def _annotation(self, root: Path, names: tuple[str, ...], what: str) -> Path:
        return find_file(root, names, ANNOTATION_DIRS, what)

    def _frames_source(self, root: Path, split: str) -> tuple[str, tuple[Any, Any]]:
        mode = self.option("frames_from")
        frame_list = find_dir(root, ("frame_lists",))
        frames_dir = find_dir(root, ("frames",))
        if (
            mode in ("auto", "frames")
            and frame_list
            and frames_dir
            and (frame_list / f"{split}.csv").is_file()
        ):
            return "frames", (frames_dir, read_frame_lists(frame_list / f"{split}.csv"))
        if mode == "frames":
            raise SourceError(
                f"ava: --option frames_from=frames but no frame_lists/{split}.csv and frames/ under {root}"
            )
        for sub, offset in (("videos_15min", 0.0), ("videos", float(START))):
            if (root / sub).is_dir():
                return "video", (root / sub, offset)
        raise SourceError(
            f"ava: no frames (frame_lists/ + frames/) and no videos_15min/ or videos/ under {root}"
        )

    def items(self, split: str) -> Iterator[Item]:
        root = self.root_dir
        gt = self._annotation(
            root, (f"ava_{split}_v2.2.csv", f"ava_{split}_v2.1.csv"), f"ava {split} ground truth"
        )
        label_ids = [i for i, _ in self._label_map(root)]
        version = gt.stem.rsplit("_v", 1)[1]  # the exclusions file is released per version (2.1, 2.2)
        excluded_path = gt.parent / f"ava_{split}_excluded_timestamps_v{version}.csv"
        excluded = read_excluded(excluded_path)
        proposals = self._proposals(gt.parent)
        frames_from = self._frames_source(root, split)
        rate = self.config.sampling_rate or DEFAULT_RATE
        skipped = 0
        for (video, sec), slot in sorted(group_rows(gt).items()):
            if (video, sec) in excluded:
                skipped += 1
                continue
            payload = {
                "video": video,
                "sec": sec,
                "persons": dict(slot["persons"]),
                "problem": slot["problem"],
                "label_ids": list(label_ids),
                "mode": frames_from[0],
                "wanted": clip_indices(sec, self.config.frames, rate),
                "proposals": proposals.get((video, sec), []) if proposals is not None else None,
            }
            yield self._item(root, split, payload, frames_from)
        if skipped:
            log.info("ava %s: skipped %d keyframes listed in %s", split, skipped, excluded_path.name)

    def _label_map(self, root: Path) -> list[tuple[int, str]]:
        label_map = read_label_map(self._annotation(root, LABEL_MAPS, "ava label map"))
        if len(label_map) != NUM_AVA_CLASSES:
            raise SourceError(
                f"ava label map has {len(label_map)} classes, expected the {NUM_AVA_CLASSES}-class subset"
            )
        return label_map

    def _proposals(self, annotations: Path) -> dict | None:
        """`--option proposals=FILE` (relative to the annotations folder) read, or None when not given."""
        proposals_file = self.option("proposals")
        if not proposals_file:
            return None
        path = Path(proposals_file)
        path = path if path.is_absolute() else annotations / path
        if not path.is_file():
            raise SourceError(f"ava: proposals file {path} does not exist")
        return read_proposals(path, self.option("proposal_score"))

    def _item(self, root: Path, split: str, payload: dict, frames_from: tuple[str, tuple[Any, Any]]) -> Item:
        """The keyframe's item: where its frames are read from, and a fingerprint of all it depends on."""
        video, wanted = payload["video"], payload["wanted"]
        mode, where = frames_from
        if mode == "frames":
            frames_dir, lists = where
            paths = lists.get(video, [])
            clamped = [min(max(i, 0), len(paths) - 1) for i in wanted] if paths else []
            payload["frames"] = [str(frames_dir / paths[i]) for i in clamped]
            payload["clamped"] = clamped
            raw = [Path(p) for p in dict.fromkeys(payload["frames"])]
        else:
            video_dir, offset = where
            found = [
                video_dir / f"{video}{s}" for s in VIDEO_SUFFIXES if (video_dir / f"{video}{s}").is_file()
            ]
            payload["path"], payload["offset"] = (found[0] if found else video_dir / f"{video}.mp4"), offset
            raw = [payload["path"]]
        if payload["problem"] is None and any(leaves_root(root, path) for path in raw):
            payload["problem"] = f"video path {raw[0]} leaves --root {root}"
        fingerprint = value_fingerprint(
            file_fingerprint(*raw),
            sorted(payload["persons"].items()),
            payload["problem"],
            payload["proposals"],
            payload["label_ids"],
            wanted,
        )
        return Item(id=f"{video}_{payload['sec']:04d}", split=split, fingerprint=fingerprint, payload=payload)

    def _load_frames(self, payload: dict) -> tuple[np.ndarray, list[int], int, tuple[int, int]]:
        if not payload["frames"]:
            raise Quarantine(f"video {payload['video']} is not in the frame list")
        images = {}
        for path in dict.fromkeys(payload["frames"]):
            try:
                with Image.open(path) as image:
                    images[path] = np.asarray(image.convert("RGB"))
            except (OSError, ValueError) as error:
                raise Quarantine(f"cannot read frame {path} ({error})") from None
        video = np.stack([images[p] for p in payload["frames"]])
        padded = sum(1 for w, c in zip(payload["wanted"], payload["clamped"], strict=True) if w > c)
        return video, payload["clamped"], padded, video.shape[1:3]  # the engine frames it

    def _load_video(self, payload: dict) -> tuple[np.ndarray, list[int], int, tuple[int, int]]:
        if not payload["path"].is_file():
            raise Quarantine(f"video missing: {payload['path']}")
        wanted = [max(i, 0) for i in payload["wanted"]]  # before the segment start: SlowFast clamps to 0
        try:
            framing = config_framing(self.config)
            clip = decode_window(payload["path"], wanted, framing, rate=FPS, start_time=payload["offset"])
        except VideoError as error:
            raise Quarantine(str(error)) from None
        return clip.frames, clip.indices, clip.padded, clip.orig_hw

    def load(self, item: Item) -> Sample:
        payload = item.payload
        if payload["problem"]:
            raise Quarantine(payload["problem"])
        load = self._load_frames if payload["mode"] == "frames" else self._load_video
        video, indices, padded, orig_hw = load(payload)
        column = {action: k for k, action in enumerate(payload["label_ids"])}
        boxes = np.array([[float(v) for v in box.split(",")] for box in payload["persons"]], np.float32)
        labels = np.zeros((len(boxes), NUM_AVA_CLASSES), np.uint8)
        for row, actions in enumerate(payload["persons"].values()):
            for action in actions:
                if action in column:
                    labels[row, column[action]] = 1
        window = frame_geometry(*orig_hw, self.config).window
        cropped, kept = crop_boxes(boxes[None], np.zeros((1, len(boxes)), np.int16), window)
        keep = kept[0] >= 0
        extra = {
            "ava_key": f"{payload['video']},{payload['sec']:04d}",
            "video_id": payload["video"],
            "timestamp": payload["sec"],
            "keyframe_index": (payload["sec"] - START) * FPS,
            "padded_frames": padded,
            "persons_cropped_out": int((~keep).sum()),
            "ava_action_ids": [int(i) for i in payload["label_ids"]],  # the AVA id of each label column
        }
        if payload["proposals"] is not None:
            extra["ava_proposals"] = self._crop_proposals(payload["proposals"], window)
        return Sample(
            video=video,
            fps=float(FPS),
            frame_indices=[int(i) for i in indices],
            labels={"ava_boxes.npy": cropped[0][keep], "ava_labels.npy": labels[keep]},
            orig_hw=(int(orig_hw[0]), int(orig_hw[1])),
            extra=extra,
        )

    def _crop_proposals(self, proposals: list[list[float]], window) -> list[list[float]]:
        """Detector boxes mapped into the stored frame, with their scores, 4 decimals."""
        if not proposals:
            return []
        array = np.array(proposals, np.float32)
        cropped, kept = crop_boxes(array[None, :, :4], np.zeros((1, len(array)), np.int16), window)
        return [
            [*map(lambda v: round(float(v), 4), box), round(float(s), 4)]
            for box, s, k in zip(cropped[0], array[:, 4], kept[0], strict=True)
            if k >= 0
        ]

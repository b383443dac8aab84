"""Ego4D FHO object state change: OSCC (did the object change state?) and PNR (when?).

Reads `fho_oscc-pnr_{train,val}.json` / `fho_oscc-pnr_test_unannotated.json` (`{"clips": [...]}`,
or the pre-release bare list) and cuts each 8 s window out of the canonical video
`full_scale/<video_uid>.mp4` by its `parent_*` frame numbers (0-based, 30 fps; time = frame/30).

Frames follow the official I3D baseline's val/test rule for every split: over the window `[s, e]`,
`n = e - s`, take the first `T` absolute frame numbers in `[s, e)` divisible by `ceil(n/T)`, else by
`floor(n/T)`. The PNR target is one-hot at the sampled
frame nearest `parent_pnr_frame`; negatives get all zeros. Unlabelled test clips carry neither.
The baseline trains on a random 5-8 s sub-window; how it keeps the PNR inside that window is not
confirmed here, so that jitter is not reproduced and the build refuses `--train-views` for Ego4D.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.geometry import config_framing
from pipeline.sources._real_common import find_dir, find_file, load_json
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

ANNOTATION_DIRS = ("v2/annotations", "annotations", "v1/annotations", ".")
VIDEO_DIRS = ("v2/full_scale", "full_scale", "v1/full_scale", "videos")
SPLIT_FILES = {
    "train": ("fho_oscc-pnr_train.json", "train.json"),
    "val": ("fho_oscc-pnr_val.json", "val.json"),
    "test": ("fho_oscc-pnr_test_unannotated.json", "fho_oscc-pnr_test.json", "test.json"),
}
REQUIRED = ("video_uid", "parent_start_frame", "parent_end_frame")


def baseline_frames(start: int, end: int, frames: int) -> list[int]:
    """The official baseline's frame choice over the window `[start, end]` (absolute frame numbers)."""
    length = end - start
    if length < frames:
        return list(range(start, end + 1))  # too short: every frame, the caller pads
    low, high = length // frames, math.ceil(length / frames)
    on_high = [f for f in range(start, end) if f % high == 0]
    if len(on_high) >= frames:
        return on_high[:frames]
    return [f for f in range(start, end) if f % low == 0][:frames]


def pnr_target(indices: list[int], pnr: int | None) -> np.ndarray:
    """One-hot at the sampled frame nearest the PNR frame; zeros when there is none."""
    target = np.zeros(len(indices), dtype=np.float32)
    if pnr is not None:
        target[int(np.argmin([abs(i - pnr) for i in indices]))] = 1.0
    return target


def read_clips(path: Path) -> list[dict]:
    data = load_json(path)
    clips = data.get("clips") if isinstance(data, dict) else data
    if not isinstance(clips, list):
        raise SourceError(f"{path}: expected {{'clips': [...]}} or a JSON array of clips")
    return clips


def check_clip(clip: dict) -> str | None:
    """Why an annotation cannot make a sample, or None when it can."""
    if not isinstance(clip, dict):
        return "annotation is not an object"
    missing = [key for key in REQUIRED if clip.get(key) is None]
    if missing:
        return f"annotation lacks {', '.join(missing)}"
    start, end = clip["parent_start_frame"], clip["parent_end_frame"]
    if not (isinstance(start, int) and isinstance(end, int)) or start < 0 or end < start:
        return f"bad window parent_start_frame={start!r} parent_end_frame={end!r}"
    if clip.get("state_change"):
        pnr = clip.get("parent_pnr_frame", clip.get("pnr_frame"))
        if pnr is None:
            return "positive clip (state_change true) without a PNR frame"
        if not start <= pnr <= end:
            return f"PNR frame {pnr} outside the window [{start}, {end}]"
    return None


class Ego4dSource(Source):
    name = "ego4d"
    # One view: the baseline's random train-time sub-window is not reproduced (see the module doc).
    sampling = SamplingRule(
        "--frames frames over each annotated 8 s window, the I3D baseline's rule", frozenset()
    )
    version = "1"
    tasks = ("oscc", "pnr")
    splits = ("train", "val", "test")
    description = "Ego4D FHO OSCC/PNR: 8 s windows cut from the canonical videos; state change + PNR frame"
    options = (Option("fps", "float", 30.0, "frame grid of the canonical videos (frames/s)", minimum=1),)

    def _video(self, root: Path, video_dir: Path, uid: str) -> Path:
        path = video_dir / f"{uid}.mp4"
        return path if path.is_file() or not (video_dir / uid).is_file() else video_dir / uid

    def items(self, split: str) -> Iterator[Item]:
        root = self.root_dir
        path = find_file(root, SPLIT_FILES[split], ANNOTATION_DIRS, f"ego4d {split} annotations")
        video_dir = find_dir(root, VIDEO_DIRS) or root
        seen: dict[str, int] = {}
        for number, clip in enumerate(read_clips(path)):
            problem = check_clip(clip)
            uid = (
                str(clip.get("unique_id") or f"clip{number:06d}")
                if isinstance(clip, dict)
                else f"clip{number:06d}"
            )
            seen[uid] = seen.get(uid, 0) + 1
            item_id = uid if seen[uid] == 1 else f"{uid}_{seen[uid]}"
            video = self._video(root, video_dir, str(clip.get("video_uid"))) if problem is None else path
            if problem is None and leaves_root(root, video):
                problem, video = f"video path {video} leaves --root {root}", path
            payload = {"clip": clip, "video": video}
            fingerprint = value_fingerprint(
                file_fingerprint(video), sorted(clip.items()) if problem is None else clip
            )
            yield Item(id=item_id, split=split, fingerprint=fingerprint, payload=payload, problem=problem)

    def load(self, item: Item) -> Sample:
        clip, video = item.payload["clip"], item.payload["video"]
        if not video.is_file():
            raise Quarantine(f"video missing: {video}")
        start, end = clip["parent_start_frame"], clip["parent_end_frame"]
        wanted = baseline_frames(start, end, self.config.frames)
        short = self.config.frames - len(wanted)
        wanted += [wanted[-1]] * short
        rate = self.option("fps")
        try:
            cut = decode_window(video, wanted, config_framing(self.config), rate=rate)
        except VideoError as error:
            raise Quarantine(str(error)) from None
        labelled = "state_change" in clip and clip["state_change"] is not None
        state = bool(clip.get("state_change"))
        pnr = clip.get("parent_pnr_frame", clip.get("pnr_frame")) if state else None
        seconds = (clip.get("parent_end_sec") or 0) - (clip.get("parent_start_sec") or 0)
        extra = {
            "video_uid": clip["video_uid"],
            "unique_id": clip.get("unique_id"),
            "parent_start_frame": start,
            "parent_end_frame": end,
            "pnr_frame": pnr,
            "state_change": state if labelled else None,
            "clip_fps": (end - start + 1) / seconds if seconds > 0 else None,
            "padded_frames": short + cut.padded,
        }
        return Sample(
            video=cut.frames,
            fps=rate,
            frame_indices=cut.indices,
            labels={"pnr.npy": pnr_target(cut.indices, pnr)} if labelled else {},
            oscc=int(state) if labelled else None,
            orig_hw=cut.orig_hw,
            extra=extra,
        )

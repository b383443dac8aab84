"""`kist-synadl`: KIST SynADL, rendered with ElderSim (Hwang et al., IEEE Access 2021): 3D pose.

Raw layout under `--root` (as unzipped from OpenPose.zip and RGB.zip):

    RGB/A{action:03d}_P{person:03d}_G{g:03d}_C{camera:03d}.avi
    Openpose/3DJ/<same name>.json      {"data": [{"frame_index": i, "skeleton": [{"pose": [...75],
    Openpose/2DJ/<same name>.json                                                 "score": [...25]}]}]}

The 3D joints are OpenPose BODY_25 in centimetres, per camera, with camera-aligned axes and y up.
They become Kinect V2 joints (pipeline.sources._synthetic_common.BODY25_TO_KINECT: hands, hand tips
and thumbs missing) in metres, OpenCV axes (y negated). A joint with score 0 is missing. The
files carry no camera calibration; the third-party reader that documents the format removes a
translation offset by PnP, so the origin may not be exactly the camera centre (unverified).

Whether `frame_index` counts from 0 or 1 is documented nowhere (the schema is ST-GCN's
Kinetics-skeleton style, which counts from 1), so the base is read off each file: an index equal
to the video's frame count can only be 1-based, an index 0 only 0-based; when both fit, a first
index of 1 reads as 1-based. A few frames without an entry (`kist_missing_frames`, default 5) are tolerated:
their joints are missing (NaN), and `meta.json` records the base and the count.

There is no official split: everything is `train`, except the persons named by
`--option kist_test_persons=P114,P115`, which form `test`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.sources._synthetic_common import (
    FRAME_STRIDE,
    SYNTHETIC_SAMPLING,
    body25_to_kinect,
    decode_sampled,
    require_files,
)
from pipeline.sources.base import Item, Option, Quarantine, Sample, Source, SourceError, file_fingerprint

CM = 0.01
_NAME = re.compile(r"^A(\d{3})_P(\d{3})_G(\d{3})_C(\d{3})$")
POSE_DIRS = ("Openpose", "OpenPose", "openpose")


def read_skeletons(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """frame_index -> (BODY_25 joints `[25,3]`, score `[25]`) of the first skeleton of each frame."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Quarantine(f"{path.name}: unreadable JSON ({type(error).__name__})") from None
    frames = data.get("data") if isinstance(data, dict) else None
    if not frames:
        raise Quarantine(f"{path.name}: no annotations (empty or missing 'data')")
    out = {}
    for entry in frames:
        try:
            index = int(entry["frame_index"])
            skeletons = entry.get("skeleton") or []
            if not skeletons:
                out[index] = (np.full((25, 3), np.nan), np.zeros(25))
                continue
            pose = np.asarray(skeletons[0]["pose"], dtype=np.float64).reshape(25, 3)
            score = np.asarray(skeletons[0].get("score", [1.0] * 25), dtype=np.float64).reshape(25)
        except (KeyError, TypeError, ValueError):
            raise Quarantine(f"{path.name}: malformed skeleton entry") from None
        out[index] = (pose, score)
    return out


def eldersim_to_opencv(pose_cm: np.ndarray) -> np.ndarray:
    """ElderSim camera coordinates (cm, y up) -> metres, OpenCV axes (y down)."""
    return pose_cm * CM * np.array([1.0, -1.0, 1.0])


def frame_index_base(indices: list[int], video_frames: int) -> int:
    """0 or 1: the `frame_index` of the first video frame (module doc); Quarantine if neither fits."""
    low, high = min(indices), max(indices)
    fits = [base for base in (0, 1) if low >= base and high <= video_frames - 1 + base]
    if not fits:
        raise Quarantine(f"frame_index {low}..{high} does not fit a video of {video_frames} frames")
    if len(fits) == 2:  # both fit (entries missing at both ends): a first index of 1 reads as 1-based
        return 1 if low == 1 else 0
    return fits[0]


@dataclass(frozen=True)
class ClipFiles:
    pose: Path  # Openpose/3DJ/<name>.json
    video: Path  # RGB/<name>.avi


class KistSynadlSource(Source):
    name = "kist-synadl"
    version = "2"  # 2: frame_index base read from the file, missing frames tolerated; the shared decode
    tasks = ("pose3d",)
    sampling = SYNTHETIC_SAMPLING
    splits = ("train",)
    description = (
        "KIST SynADL / ElderSim (avi + OpenPose BODY_25 3D JSON): Kinect-25 pose in metres; no official split"
    )
    options = (
        Option("kist_test_persons", "str", None, "persons held out as the test split, e.g. P114,P115"),
        Option("kist_missing_frames", "int", 5, "video frames that may lack a 3DJ entry", minimum=0),
        FRAME_STRIDE,
    )

    def _pose_dir(self) -> Path:
        for name in POSE_DIRS:
            if (self.root_dir / name / "3DJ").is_dir():
                return self.root_dir / name / "3DJ"
        raise SourceError(f"kist-synadl: no Openpose/3DJ/ folder under {self.root}")

    def items(self, split: str) -> Iterator[Item]:
        held_out = {p.strip() for p in (self.option("kist_test_persons") or "").split(",") if p.strip()}
        for path in sorted(self._pose_dir().glob("*.json")):
            match = _NAME.match(path.stem)
            person = f"P{match[2]}" if match else None
            if ("test" if person in held_out else "train") != split:
                continue
            files = ClipFiles(path, self.root_dir / "RGB" / f"{path.stem}.avi")
            fingerprint = file_fingerprint(path, files.video)
            yield Item(id=path.stem, split=split, fingerprint=fingerprint, payload=files)

    def load(self, item: Item) -> Sample:
        files: ClipFiles = item.payload
        pose_path = files.pose
        require_files(pose_path, files.video)
        skeletons = read_skeletons(pose_path)
        clip, padded = decode_sampled(files.video, self.config, item=item, stride=self.option("frame_stride"))
        video, fps, chosen = clip.frames, clip.info.fps, clip.indices
        base = frame_index_base(list(skeletons), clip.decoded)
        absent = clip.decoded - len(set(skeletons) & set(range(base, base + clip.decoded)))
        if absent > self.option("kist_missing_frames"):
            raise Quarantine(
                f"{pose_path.name}: {absent} of {clip.decoded} video frames have no 3DJ entry "
                f"(frame_index {min(skeletons)}..{max(skeletons)}; kist_missing_frames allows "
                f"{self.option('kist_missing_frames')})"
            )
        missing = (np.full((25, 3), np.nan), np.zeros(25))
        joints = np.stack([skeletons.get(t + base, missing)[0] for t in chosen])
        scores = np.stack([skeletons.get(t + base, missing)[1] for t in chosen])
        valid = (scores > 0) & np.isfinite(joints).all(axis=-1)
        pose = body25_to_kinect(eldersim_to_opencv(joints), valid)
        if np.isnan(pose).all():
            raise Quarantine(f"{pose_path.name}: no valid joint in any sampled frame")
        match = _NAME.match(item.id)
        extra = {"padded_frames": padded, "frame_index_base": base, "pose_missing_frames": absent}
        if match:
            extra.update(
                action=int(match[1]), person=int(match[2]), group=int(match[3]), camera=int(match[4])
            )
        return Sample(video=video, fps=fps, frame_indices=chosen, labels={"pose3d.npy": pose}, extra=extra)

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

There is no official split: everything is `train`, except the persons named by
`--option kist_test_persons=P114,P115`, which form `test`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.sources._synthetic_common import (
    body25_to_kinect,
    count_frames,
    decode_frames,
    require_files,
    sample_frames,
)
from pipeline.sources.base import Item, Quarantine, Sample, Source, SourceError, file_fingerprint

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


class KistSynadlSource(Source):
    name = "kist-synadl"
    version = "1"
    tasks = ("pose3d",)
    splits = ("train",)
    description = (
        "KIST SynADL / ElderSim (avi + OpenPose BODY_25 3D JSON): Kinect-25 pose in metres; no official split"
    )

    def _pose_dir(self) -> Path:
        if self.root is None:
            raise SourceError("kist-synadl needs --root (the folder holding RGB/ and Openpose/)")
        for name in POSE_DIRS:
            if (Path(self.root) / name / "3DJ").is_dir():
                return Path(self.root) / name / "3DJ"
        raise SourceError(f"kist-synadl: no Openpose/3DJ/ folder under {self.root}")

    def items(self, split: str) -> Iterator[Item]:
        held_out = {
            p.strip() for p in (self.config.option("kist_test_persons", "") or "").split(",") if p.strip()
        }
        for path in sorted(self._pose_dir().glob("*.json")):
            match = _NAME.match(path.stem)
            person = f"P{match[2]}" if match else None
            if ("test" if person in held_out else "train") != split:
                continue
            video = Path(self.root) / "RGB" / f"{path.stem}.avi"
            yield Item(
                id=path.stem,
                split=split,
                fingerprint=file_fingerprint(path, video),
                payload={"pose": str(path), "video": str(video)},
            )

    def load(self, item: Item) -> Sample:
        pose_path, video_path = Path(item.payload["pose"]), Path(item.payload["video"])
        require_files(pose_path, video_path)
        skeletons = read_skeletons(pose_path)
        pose_frames = max(skeletons) + 1
        video_frames = count_frames(video_path)
        if video_frames != pose_frames:
            raise Quarantine(f"frame counts disagree: video {video_frames}, 3DJ {pose_frames}")
        chosen, padded = sample_frames(video_frames, self.config)
        video, fps = decode_frames(video_path, chosen)
        missing = (np.full((25, 3), np.nan), np.zeros(25))
        joints = np.stack([skeletons.get(t, missing)[0] for t in chosen])
        scores = np.stack([skeletons.get(t, missing)[1] for t in chosen])
        valid = (scores > 0) & np.isfinite(joints).all(axis=-1)
        pose = body25_to_kinect(eldersim_to_opencv(joints), valid)
        if np.isnan(pose).all():
            raise Quarantine(f"{pose_path.name}: no valid joint in any sampled frame")
        match = _NAME.match(item.id)
        extra = {"padded_frames": padded}
        if match:
            extra.update(
                action=int(match[1]), person=int(match[2]), group=int(match[3]), camera=int(match[4])
            )
        return Sample(video=video, fps=fps, frame_indices=chosen, labels={"pose3d.npy": pose}, extra=extra)

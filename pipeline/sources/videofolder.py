"""Your own videos: `<root>/<class>/<video>` folders, or CSV lists of `path,label`.

Per split, the first of these that exists is used:
1. `<root>/<split>.csv`: rows `path,label` (a header row `path,label` is allowed); `path` relative to
   `<root>`, `label` a class name or an integer id (empty = unlabelled);
2. `<root>/<split>/<class>/<video>`;
3. for `train` only, `<root>/<class>/<video>` (every class folder directly under the root).

Class ids: the lines of `<root>/classes.txt` when present, else the sorted class names seen in
every split (so train and val agree). A label not in `classes.txt` is quarantined.

Frames: `--option sampling=segment` (the default) takes one frame in each of `--frames` equal segments
of the whole video (PySlowFast's SSv2 rule); `sampling=stride` takes a `--frames x --sampling-rate`
window (PySlowFast's Kinetics rule: a random start for each train view, centred for one test view).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from pipeline.sources._real_common import (
    SEGMENT_SAMPLING,
    STRIDE_SAMPLING,
    VideoEntry,
    clip_sample,
    confine,
    decode_classification_clip,
    view_items,
    views_option,
)
from pipeline.sources.base import Item, Option, Sample, SamplingRule, Source, SourceError

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif"}
SPLITS = ("train", "val", "test")


def read_csv_rows(path: Path) -> list[tuple[str, str]]:
    """`path,label` rows of a split CSV (header optional, label may be empty)."""
    rows = []
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle)):
            if not row or row[0].startswith("#"):
                continue
            if number == 0 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            rows.append((row[0].strip(), row[1].strip() if len(row) > 1 else ""))
    return rows


def folder_rows(folder: Path) -> list[tuple[str, str]]:
    """(path relative to the root's parent of `folder`'s classes, class) for every video in class folders."""
    rows = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for video in sorted(class_dir.rglob("*")):
            if video.is_file() and video.suffix.lower() in VIDEO_SUFFIXES:
                rows.append((str(video), class_dir.name))
    return rows


class VideoFolderSource(Source):
    name = "videofolder"
    version = "1"
    tasks = ("action",)
    splits = SPLITS
    description = (
        "Your own videos: <root>/<class>/<video>, <root>/<split>/<class>/<video> or <root>/<split>.csv"
    )
    sampling = SEGMENT_SAMPLING
    options = (
        views_option(1),
        Option(
            "sampling",
            "str",
            "segment",
            "segment: one frame per equal segment of the video; stride: a --frames x --sampling-rate window",
            ("segment", "stride"),
        ),
    )

    def sampling_rule(self) -> SamplingRule:
        if self.option("sampling") == "stride":
            return STRIDE_SAMPLING
        hint = "; --option sampling=stride takes a --frames x --sampling-rate window"
        return replace(SEGMENT_SAMPLING, text=SEGMENT_SAMPLING.text + hint)

    def _split_rows(self, root: Path, split: str) -> list[tuple[str, str]] | None:
        if (root / f"{split}.csv").is_file():
            return [(str(root / path), label) for path, label in read_csv_rows(root / f"{split}.csv")]
        if (root / split).is_dir():
            return folder_rows(root / split)
        if split == "train" and not any((root / s).exists() or (root / f"{s}.csv").exists() for s in SPLITS):
            return folder_rows(root)
        return None

    def _classes(self, root: Path) -> tuple[list[str], bool]:
        """The class list, and whether it is closed (from classes.txt) rather than inferred."""
        listed = root / "classes.txt"
        if listed.is_file():
            return [line.strip() for line in listed.read_text().splitlines() if line.strip()], True
        names = set()
        for split in SPLITS:
            for _, label in self._split_rows(root, split) or []:
                if label and not label.lstrip("-").isdigit():
                    names.add(label)
        return sorted(names), False

    def items(self, split: str) -> Iterator[Item]:
        root = self.root_dir
        rows = self._split_rows(root, split)
        if not rows:
            if split == "train":
                raise SourceError(f"videofolder: no train.csv, train/ or class folders under {root}")
            return
        classes, closed = self._classes(root)
        index = {name: i for i, name in enumerate(classes)}
        entries = []
        for path, label in rows:
            video = Path(path)
            video_id = (
                str(video.relative_to(root).with_suffix("")) if video.is_relative_to(root) else video.stem
            )
            class_id, name, error = None, None, None
            if label.lstrip("-").isdigit():
                class_id = int(label)
                name = classes[class_id] if 0 <= class_id < len(classes) else None
                if closed and name is None:
                    error, class_id = f"unknown class id {class_id} (classes.txt has {len(classes)})", None
            elif label:
                class_id, name = index.get(label), label
                if class_id is None:
                    error = f"unknown class {label!r} (not in classes.txt)"
            entries.append(VideoEntry(video_id, video, class_id, name, error))
        views = 1 if split == "train" else self.option("views")
        yield from view_items(confine(root, entries), split, views)

    def load(self, item: Item) -> Sample:
        clip, entry = decode_classification_clip(item, self.config, self.option("sampling"))
        return clip_sample(item, clip, entry)

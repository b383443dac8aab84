"""Something-Something V2: `<id>.webm` videos plus the label JSON files (both naming schemes).

Class id rule (SlowFast, PyTorchVideo and mmaction2 agree): strip `[`/`]` from an entry's
`template` and look it up in the labels file, whose values are the ids as strings. The test split
has labels only when `test-answers.csv` (`<id>;<template>`) is present. See docs/sources_real.md.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from pipeline.sources._real_common import (
    SEGMENT_SAMPLING,
    VideoEntry,
    clip_sample,
    confine,
    decode_classification_clip,
    find_dir,
    find_file,
    load_json,
    view_items,
    views_option,
)
from pipeline.sources.base import Item, Sample, Source, SourceError

ANNOTATION_DIRS = (".", "annotations", "labels", "label", "something-something-v2")
VIDEO_DIRS = ("20bn-something-something-v2", "videos/20bn-something-something-v2", "videos", "webm", ".")
# split -> (20BN-era name, current Qualcomm name)
SPLIT_FILES = {
    "train": ("something-something-v2-train.json", "train.json"),
    "val": ("something-something-v2-validation.json", "validation.json"),
    "test": ("something-something-v2-test.json", "test.json"),
}
LABEL_FILES = ("something-something-v2-labels.json", "labels.json")


def clean_template(template: str) -> str:
    """`[Something] falling like ...` -> `Something falling like ...` (the labels-file key)."""
    return template.replace("[", "").replace("]", "")


def read_label_map(path: Path) -> dict[str, int]:
    """labels.json: bracket-free template -> class id (stored as a string; ints are accepted too)."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise SourceError(f"{path}: expected a JSON object template -> id")
    try:
        return {template: int(index) for template, index in data.items()}
    except (TypeError, ValueError):
        raise SourceError(f"{path}: class ids must be integers") from None


def read_test_answers(path: Path) -> dict[str, str]:
    """test-answers.csv: `<id>;<bracket-free template>` per line, no header."""
    with path.open(newline="") as handle:
        return {row[0].strip(): row[1].strip() for row in csv.reader(handle, delimiter=";") if len(row) >= 2}


def video_entries(
    entries: list, label_map: dict[str, int], video_dir: Path, answers: dict[str, str] | None, where: Path
) -> Iterator[VideoEntry]:
    """SSv2-schema entries (`id`, `template`, ...) -> `VideoEntry`s; bad classes become quarantine reasons."""
    if not isinstance(entries, list):
        raise SourceError(f"{where}: expected a JSON array of videos")
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry:
            raise SourceError(f"{where}: an entry has no 'id' ({str(entry)[:60]})")
        video_id = str(entry["id"])
        template = entry.get("template")
        name = clean_template(template) if isinstance(template, str) else (answers or {}).get(video_id)
        label, error = None, None
        if template is not None and not isinstance(template, str):
            error, name = f"template is a {type(template).__name__}, not a string (in {where.name})", None
        elif name is not None:
            label = label_map.get(name)
            if label is None:
                error = f"unknown class {name!r} (not in the labels file)"
        extra = {"placeholders": list(entry.get("placeholders", []))} if "placeholders" in entry else {}
        yield VideoEntry(video_id, video_dir / f"{video_id}.webm", label, name, error, extra=extra)


class Ssv2Source(Source):
    name = "ssv2"
    version = "1"
    sampling = SEGMENT_SAMPLING
    tasks = ("action",)
    splits = ("train", "val", "test")
    description = (
        "Something-Something V2 (webm + label JSONs, 174 classes); views=K temporal views for val/test"
    )
    options = (views_option(2),)

    def _files(self) -> tuple[Path, Path]:
        root = self.root_dir
        labels = find_file(root, LABEL_FILES, ANNOTATION_DIRS, "ssv2 labels file")
        video_dir = find_dir(root, VIDEO_DIRS) or root
        return labels, video_dir

    def items(self, split: str) -> Iterator[Item]:
        labels_path, video_dir = self._files()
        label_map = read_label_map(labels_path)
        split_path = find_file(self.root_dir, SPLIT_FILES[split], ANNOTATION_DIRS, f"ssv2 {split} split file")
        answers = None
        if split == "test":
            answers_path = labels_path.parent / "test-answers.csv"
            answers = read_test_answers(answers_path) if answers_path.is_file() else None
        entries = video_entries(load_json(split_path), label_map, video_dir, answers, split_path)
        views = 1 if split == "train" else self.option("views")
        yield from view_items(confine(self.root_dir, entries), split, views)

    def load(self, item: Item) -> Sample:
        clip, entry = decode_classification_clip(item, self.config)
        return clip_sample(item, clip, entry)

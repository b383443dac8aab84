"""Something-Else (Materzynska et al., CVPR 2020): compositional / few-shot splits over the SSv2
videos, with optional hand and object boxes from `bounding_box_annotations.json`.

Class ids: the official code (`data_parser.py`) ignores the ints in `labels.json` and numbers the
*sorted* bracket-free templates (`--option class_ids=official`, the default); ORViT uses the ints
(`class_ids=orvit`). The two are different permutations: pick one per experiment.

Boxes (`boxes.npy` [T,N,4] + `boxes_cls.npy` [T,N], class 0 = hand, 1 = object, box space
`something-else-hand-object`): box-frame `i` of a video (`name` `<id>/%04d.jpg`, 1-based) is
decoded frame `i` (0-based), as in the official loader. Boxes are absolute pixels of the
240-px-high source frame; they are normalised by the decoded frame size and mapped into the centre
square the clip keeps (the video leaves the adapter already cropped). Per frame, hands come first,
then objects in `standard_category` order. Videos with no box entry get no `boxes` label.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sources._real_common import (
    SEGMENT_SAMPLING,
    VideoEntry,
    clip_sample,
    confine,
    decode_classification_clip,
    find_dir,
    load_json,
    view_items,
    views_option,
)
from pipeline.sources.base import Item, Option, Quarantine, Sample, Source, SourceError, value_fingerprint
from pipeline.sources.ssv2 import VIDEO_DIRS, clean_template

log = logging.getLogger(__name__)

SPLIT_ROOTS = ("dataset_splits", "code/dataset_splits", "splits", ".")
# split set -> (folder, labels file, train file(s), validation file)
SPLIT_SETS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "compositional": ("compositional", "labels.json", ("train.json",), "validation.json"),
    "compositional_shuffled": ("compositional_shuffled", "labels.json", ("train.json",), "validation.json"),
    "compositional_oneobject": ("compositional_oneobject", "labels.json", ("train.json",), "validation.json"),
    "fewshot-base": ("fewshot", "base_labels.json", ("base_training_set.json",), "base_validation_set.json"),
    "fewshot-5shot": (
        "fewshot",
        "finetune_labels.json",
        ("finetune_5shot_training.json",),
        "finetune_5shot_validation.json",
    ),
    # the repo names it _train.json; ORViT expects _training.json: accept both
    "fewshot-10shot": (
        "fewshot",
        "finetune_labels.json",
        ("finetune_10shot_train.json", "finetune_10shot_training.json"),
        "finetune_10shot_validation.json",
    ),
}
BOX_FILES = ("bounding_box_annotations.json", "annotations.json")
HAND, OBJECT = 0, 1
BOX_SPACE = "something-else-hand-object"


def class_index(labels: dict[str, Any], rule: str, where: Path) -> dict[str, int]:
    """Template -> class id: sorted keys (official code) or the file's int values (ORViT)."""
    if not isinstance(labels, dict):
        raise SourceError(f"{where}: expected a JSON object template -> id")
    if rule == "official":
        return {template: i for i, template in enumerate(sorted(labels))}
    try:
        return {template: int(value) for template, value in labels.items()}
    except (TypeError, ValueError):
        raise SourceError(f"{where}: class ids must be integers for class_ids=orvit") from None


def frame_boxes(frame: dict) -> list[tuple[int, list[float]]]:
    """(class, [x1,y1,x2,y2] pixels) of one box-frame dict: hands first, then objects by category."""
    out = []
    for box in frame.get("labels", []):
        corners = box["box2d"]
        cls = HAND if box.get("standard_category") == "hand" or box.get("category") == "hand" else OBJECT
        order = (cls, str(box.get("standard_category", "")))
        out.append((order, [float(corners[k]) for k in ("x1", "y1", "x2", "y2")]))
    return [(order[0], xyxy) for order, xyxy in sorted(out, key=lambda pair: pair[0])]


def boxes_for(frames: list, indices: list[int], orig_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """`[T,N,4]` boxes normalised to the source frame and `[T,N]` classes for the sampled frames.

    The engine maps them into the stored frame (`pipeline.geometry`), so with `--crop none` a box at
    the frame's edge is kept whole.
    """
    per_frame = []
    for index in indices:
        frame = frames[index] if 0 <= index < len(frames) and isinstance(frames[index], dict) else {}
        per_frame.append(frame_boxes(frame))
    slots = max(1, max(len(f) for f in per_frame))
    boxes = np.full((len(indices), slots, 4), np.nan, np.float32)
    classes = np.full((len(indices), slots), -1, np.int16)
    height, width = orig_hw
    for t, found in enumerate(per_frame):
        for n, (cls, (x1, y1, x2, y2)) in enumerate(found):
            boxes[t, n] = [x1 / width, y1 / height, x2 / width, y2 / height]
            classes[t, n] = cls
    boxes = np.clip(boxes, 0.0, 1.0)  # annotations are clipped to the frame; guard rounding
    return boxes, classes


class SomethingElseSource(Source):
    name = "something-else"
    version = "2"
    sampling = SEGMENT_SAMPLING
    tasks = ("action", "boxes")
    splits = ("train", "val")
    description = "Something-Else compositional/few-shot splits of SSv2, optional hand/object boxes"
    options = (
        Option("split_set", "str", "compositional", "which official split files", tuple(SPLIT_SETS)),
        Option(
            "class_ids",
            "str",
            "official",
            "official: sorted labels.json keys; orvit: its values",
            ("official", "orvit"),
        ),
        Option(
            "boxes",
            "str",
            "auto",
            "hand/object boxes: auto (if found), 0 off, 1 required",
            ("auto", "0", "1"),
        ),
        views_option(2),
    )

    def __init__(self, root: Path | None, config) -> None:
        super().__init__(root, config)
        self._box_cache: dict | None = None
        self._warned = False

    def _box_folders(self, root: Path) -> list[Path]:
        """Where the box file is looked for: `--root` and wherever the split files are looked for."""
        folder = SPLIT_SETS[self.option("split_set")][0]
        candidates = [root] + [root / r for r in SPLIT_ROOTS] + [root / r / folder for r in SPLIT_ROOTS]
        return [path for path in dict.fromkeys(candidates) if path.is_dir()]  # pathlib drops "/."

    def _box_table(self, root: Path) -> dict | None:
        """The whole box file (video id -> frame list), read once; None when boxes are off/absent."""
        if self.option("boxes") == "0":
            return None
        if self._box_cache is None:
            folders = self._box_folders(root)
            found = (folder / name for folder in folders for name in BOX_FILES)
            path = next((candidate for candidate in found if candidate.is_file()), None)
            if path is None:
                where = ", ".join(str(folder.relative_to(root)) for folder in folders)
                if self.option("boxes") == "1":
                    raise SourceError(
                        f"something-else: --option boxes=1 but no {BOX_FILES[0]} under {root} "
                        f"(looked in {where})"
                    )
                if not self._warned:
                    log.warning(
                        "something-else: no %s under %s (looked in %s): building without boxes "
                        "(--option boxes=0 to say so, boxes=1 to require them)",
                        BOX_FILES[0],
                        root,
                        where,
                    )
                    self._warned = True
                return None
            table = load_json(path)
            if not isinstance(table, dict):
                raise SourceError(f"{path}: expected a JSON object video id -> frame list")
            self._box_cache = table
        return self._box_cache

    def items(self, split: str) -> Iterator[Item]:
        root = self.root_dir
        split_set = self.option("split_set")
        rule = self.option("class_ids")
        folder, labels_name, train_names, val_name = SPLIT_SETS[split_set]
        base = find_dir(root, [f"{r}/{folder}" for r in SPLIT_ROOTS])
        if base is None:
            raise SourceError(f"something-else: no dataset_splits/{folder}/ under {root}")
        names = train_names if split == "train" else (val_name,)
        split_path = next((base / n for n in names if (base / n).is_file()), None)
        if not (base / labels_name).is_file():
            raise SourceError(f"something-else {split_set}: {labels_name} missing in {base}")
        if split_path is None:
            raise SourceError(f"something-else {split_set} {split}: {' or '.join(names)} missing in {base}")
        index = class_index(load_json(base / labels_name), rule, base / labels_name)
        video_dir = find_dir(root, VIDEO_DIRS) or root
        table = self._box_table(root)
        rows = load_json(split_path)
        if not isinstance(rows, list):
            raise SourceError(f"{split_path}: expected a JSON array of videos")
        entries = []
        for row in rows:
            video_id = str(row["id"])
            name = clean_template(row.get("template", ""))
            label = index.get(name)
            error = None if label is not None else f"unknown class {name!r} (not in {labels_name})"
            extra: dict[str, object] = {
                "split_set": split_set,
                "class_ids": rule,
                "placeholders": list(row.get("placeholders", [])),
            }
            if table is not None and str(int(video_id)) in table:
                frames = table[str(int(video_id))]
                extra["box_frames"] = len(frames) if isinstance(frames, list) else 0
                extra["box_fingerprint"] = value_fingerprint(frames)  # re-build when the boxes change
            entries.append(
                VideoEntry(video_id, video_dir / f"{video_id}.webm", label, name, error, extra=extra)
            )
        views = 1 if split == "train" else self.option("views")
        yield from view_items(confine(root, entries), split, views)

    def load(self, item: Item) -> Sample:
        clip, entry = decode_classification_clip(item, self.config)
        sample = clip_sample(item, clip, entry)
        sample.extra.pop("box_fingerprint", None)
        table = self._box_table(self.root_dir) if "box_frames" in entry.extra else None
        if table is not None:
            try:
                boxes, classes = boxes_for(table[str(int(entry.video_id))], clip.indices, clip.orig_hw)
            except (KeyError, TypeError, ValueError) as error:
                raise Quarantine(f"malformed box annotation for video {entry.video_id} ({error!r})") from None
            sample.labels = {"boxes.npy": boxes, "boxes_cls.npy": classes}
            sample.extra["box_space"] = BOX_SPACE
        return sample

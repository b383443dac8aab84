"""Diving48 (V2 labels): `Diving48_V2_{train,test}.json` + `rgb/<vid_name>.mp4` + the vocabulary.

By default frames are sampled over the whole video, as the common loaders (mmaction2 and others)
do: what an entry's `start_frame`/`end_frame` mean is published nowhere (inclusive? on which frame
grid?). `--option frame_range=1` samples over `[start_frame, end_frame]` instead, `end_frame` taken
as inclusive and clipped to the decoded frame count (right under either reading when the range
covers the whole clip); both fields are kept in `meta.json` either way. There is no official
validation split: `test` is the evaluation split. See docs/sources_real.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline.sources._real_common import (
    STRIDE_SAMPLING,
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
from pipeline.sources.base import Item, Option, Sample, Source, SourceError

ANNOTATION_DIRS = (".", "annotations", "Diving48")
VIDEO_DIRS = ("rgb", "videos", "Diving48_rgb/rgb", ".")


def read_vocab(path: Path) -> list[str]:
    """Diving48_vocab.json: 48 x [takeoff, somersault, twist, flight] -> names joined with '+'."""
    vocab = load_json(path)
    if not isinstance(vocab, list) or not all(isinstance(v, list) for v in vocab):
        raise SourceError(f"{path}: expected a JSON array of [takeoff, somersault, twist, flight] arrays")
    return ["+".join(str(part) for part in parts) for parts in vocab]


def frame_bounds(row: dict, where: Path) -> tuple[int, int | None, str | None]:
    """`(start, end, problem)` of a clip's `start_frame`/`end_frame`; a bad range is a quarantine reason."""
    try:
        start = int(row.get("start_frame") or 0)
        end = int(row["end_frame"]) if row.get("end_frame") is not None else None
    except (TypeError, ValueError):
        fields = f"start_frame {row.get('start_frame')!r}, end_frame {row.get('end_frame')!r}"
        return 0, None, f"{fields}: not whole numbers (in {where.name})"
    if end is not None and end < start:
        return 0, None, f"end_frame {end} is before start_frame {start} (in {where.name})"
    return start, end, None


def diving_entries(
    rows: list, vocab: list[str], video_dir: Path, frame_range: bool, where: Path
) -> Iterator[VideoEntry]:
    if not isinstance(rows, list):
        raise SourceError(f"{where}: expected a JSON array of clips")
    for row in rows:
        if not isinstance(row, dict) or "vid_name" not in row:
            raise SourceError(f"{where}: an entry has no 'vid_name' ({str(row)[:60]})")
        name, label, error = str(row["vid_name"]), row.get("label"), None
        if label is not None and not (isinstance(label, int) and 0 <= label < len(vocab)):
            error, label = f"unknown class {label!r} (vocabulary has {len(vocab)} classes)", None
        start, end = 0, None
        if frame_range and error is None:
            start, end, error = frame_bounds(row, where)
        extra = {"start_frame": row.get("start_frame"), "end_frame": row.get("end_frame")}
        label_name = vocab[label] if label is not None else None
        yield VideoEntry(name, video_dir / f"{name}.mp4", label, label_name, error, start, end, extra)


class Diving48Source(Source):
    name = "diving48"
    version = "2"  # 2: the whole video by default, not the unpublished start/end frame window
    sampling = STRIDE_SAMPLING
    tasks = ("action",)
    splits = ("train", "test")
    description = "Diving48 V2 (mp4 + V2 JSONs, 48 classes, whole videos); views=K for test"
    options = (
        Option(
            "frame_range",
            "str",
            "0",
            "1: sample within each entry's start_frame..end_frame (their meaning is unpublished)",
            ("0", "1"),
        ),
        views_option(2),
    )

    def items(self, split: str) -> Iterator[Item]:
        root = self.root_dir
        vocab = read_vocab(find_file(root, ("Diving48_vocab.json",), ANNOTATION_DIRS, "diving48 vocabulary"))
        if split not in ("train", "test"):
            raise SourceError(
                f"diving48 has splits train and test (no official validation split), not {split!r}"
            )
        path = find_file(
            root, (f"Diving48_V2_{split}.json",), ANNOTATION_DIRS, f"diving48 {split} annotations"
        )
        frame_range = self.option("frame_range") == "1"
        video_dir = find_dir(root, VIDEO_DIRS) or root
        entries = diving_entries(load_json(path), vocab, video_dir, frame_range, path)
        views = 1 if split == "train" else self.option("views")
        yield from view_items(confine(root, entries), split, views)

    def load(self, item: Item) -> Sample:
        clip, entry = decode_classification_clip(item, self.config, sampling="stride")
        return clip_sample(item, clip, entry)

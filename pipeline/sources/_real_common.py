"""Shared plumbing of the real-video adapters: finding annotation files, temporal sampling, views.

Two temporal rules, PySlowFast's, chosen per dataset (`SEGMENT_SAMPLING`, `STRIDE_SAMPLING`; videofolder
lets `--option sampling` choose):

- `segment` (PySlowFast's `get_seq_frames`, SSv2): split `[0, L-1]` into `T` segments of length
  `(L-1)/T` with rounded ends `s, e`, one frame per segment. Training takes a uniformly random frame
  in each segment; evaluation takes the middle `(s+e)//2`, and with `K` temporal views view `k`
  takes the point `(2k+1)/(2K)` of the way through every segment (`K=1` is exactly SlowFast's
  middle). A clip shorter than `T` frames is not stretched: it takes every frame and the decoder
  pads by repeating the last one, which `meta.json` records as `padded_frames`.
- `stride` (PySlowFast's `get_start_end_idx` + `temporal_sampling`, Kinetics-style): a window of
  `T x R` frames (`--sampling-rate R`), `T` frames spread over it by `linspace` and truncated,
  clamped to the video. Training starts the window uniformly at random in `[0, max(L - T*R, 0)]`;
  evaluation view `k` of `K` starts at `delta * k / (K - 1)` (`delta / 2` for one view), the
  `use_offset` variant, so a single test view is the centred window.

Training views draw from `base.sampling_rng` (seeded by `--seed`, video and view), so
`--train-views K` stores K independent train-mode samplings and a rebuild picks the same frames.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import BuildConfig
from pipeline.sources.base import (
    Item,
    Option,
    Quarantine,
    Sample,
    SamplingRule,
    SourceError,
    file_fingerprint,
    leaves_root,
    sampling_rng,
    value_fingerprint,
)
from pipeline.video import Clip, VideoError, sample_clip

DEFAULT_RATE = 4  # --sampling-rate when unset: the paper's (and MViTv2-S's) 16x4 clips
SEGMENT_SAMPLING = SamplingRule(
    "one frame in each of --frames equal segments of the whole video, PySlowFast's SSv2 rule"
)
STRIDE_SAMPLING = SamplingRule(
    f"a --frames x --sampling-rate window (default rate {DEFAULT_RATE}), PySlowFast's Kinetics rule",
    frozenset({"sampling_rate", "train_views"}),
)


def find_file(root: Path, names: Sequence[str], subdirs: Sequence[str], what: str) -> Path:
    """The first of `subdirs x names` under `root` that exists; `SourceError` (one line) otherwise."""
    for sub in subdirs:
        for name in names:
            path = root / sub / name
            if path.is_file():
                return path
    raise SourceError(
        f"{what}: none of {', '.join(names)} found under {root} (looked in {', '.join(subdirs)})"
    )


def find_dir(root: Path, subdirs: Sequence[str]) -> Path | None:
    """The first of `subdirs` under `root` that is a directory, or None."""
    for sub in subdirs:
        if (root / sub).is_dir():
            return root / sub
    return None


def load_json(path: Path) -> Any:
    """Parse an annotation JSON file; an unreadable one is a `SourceError` naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceError(f"{path}: cannot read annotation file ({error})") from None


@dataclass(frozen=True)
class Draw:
    """Which sampling of a video a clip is: evaluation view `view` of `views`, or (with `rng`) a
    train-mode random draw."""

    view: int = 0
    views: int = 1
    rng: np.random.Generator | None = None


def segment_indices(length: int, frames: int, draw: Draw = Draw()) -> list[int]:
    """`frames` indices into `[0, length)` by the SlowFast segment rule (see the module doc).

    `draw.rng` given: one uniformly random frame per segment (SlowFast's training rule) instead of a view.
    """
    if length < frames:
        return list(range(frames))  # past the end on purpose: the decoder pads with the last frame
    size = (length - 1) / frames
    out = []
    for i in range(frames):
        start, end = int(np.round(size * i)), int(np.round(size * (i + 1)))
        if draw.rng is not None:
            out.append(int(draw.rng.integers(start, end + 1)))
        else:
            out.append(start + (end - start) * (2 * draw.view + 1) // (2 * draw.views))
    return out


def stride_indices(length: int, frames: int, rate: int, draw: Draw = Draw()) -> list[int]:
    """`frames` indices of a `frames x rate` window of a `length`-frame video (the `stride` rule)."""
    span = frames * rate
    delta = max(length - span, 0)
    if draw.rng is not None:
        start = draw.rng.uniform(0, delta)
    elif draw.views == 1:
        start = delta / 2
    else:
        start = delta * draw.view / (draw.views - 1)
    positions = np.linspace(start, start + span - 1, frames)
    return [int(i) for i in np.clip(positions, 0, max(length - 1, 0)).astype(np.int64)]


@dataclass
class VideoEntry:
    """One annotated video of a classification dataset, as an adapter lists it."""

    video_id: str
    path: Path
    label: int | None
    label_name: str | None
    error: str | None = None  # set when the annotation itself is bad (unknown class): quarantined on load
    start: int = 0  # first usable source frame
    end: int | None = None  # last usable source frame (inclusive), None = the end of the video
    extra: dict[str, Any] = field(default_factory=dict)


def confine(root: Path, entries: Iterable[VideoEntry]) -> Iterator[VideoEntry]:
    """Quarantine every entry whose annotation-named video lies outside `root`: it is never read."""
    for entry in entries:
        if leaves_root(root, entry.path):
            entry.error = f"video path {entry.path} leaves --root {root}"
        yield entry


def view_items(entries: Iterable[VideoEntry], split: str, num_views: int) -> Iterator[Item]:
    """One item per (entry, temporal view). Evaluation ids carry `_v<k>`; training ids are bare
    (the engine makes `--train-views` of them)."""
    for entry in entries:
        views = range(num_views) if num_views > 1 or split != "train" else [0]
        for view in views:
            item_id = entry.video_id if split == "train" else f"{entry.video_id}_v{view}"
            payload = {"entry": entry, "view": view, "num_views": num_views}
            fingerprint = value_fingerprint(
                file_fingerprint(entry.path),
                entry.label,
                entry.label_name,
                entry.error,
                entry.start,
                entry.end,
                sorted(entry.extra.items()),
                view,
                num_views,
            )
            yield Item(
                id=item_id,
                split=split,
                fingerprint=fingerprint,
                payload=payload,
                view=view,
                view_group=entry.video_id,
            )


def clip_indices(item: Item, config: BuildConfig, length: int, sampling: str) -> list[int]:
    """The item's frames among `length` by `sampling` (`segment` or `stride`, see the module doc)."""
    draw = Draw(item.payload["view"], item.payload["num_views"], sampling_rng(config, item))
    if sampling == "stride":
        return stride_indices(length, config.frames, config.sampling_rate or DEFAULT_RATE, draw)
    return segment_indices(length, config.frames, draw)


def decode_classification_clip(
    item: Item, config: BuildConfig, sampling: str = "segment"
) -> tuple[Clip, VideoEntry]:
    """Cut the item's clip: `config.frames` frames over the entry's frame range, framed by `config`."""
    entry: VideoEntry = item.payload["entry"]
    if entry.error:
        raise Quarantine(entry.error)
    if not entry.path.is_file():
        raise Quarantine(f"video missing: {entry.path}")

    def pick(decoded: int) -> list[int]:
        # `sample_clip` may ask twice (container count, then decoder count); `clip_indices` draws
        # from a fresh generator each time, so the answer for a given count never depends on an
        # earlier call.
        last = decoded - 1 if entry.end is None else min(entry.end, decoded - 1)
        if entry.start > last:
            raise Quarantine(f"start frame {entry.start} is past the video's last frame {decoded - 1}")
        chosen = clip_indices(item, config, last - entry.start + 1, sampling)
        return [entry.start + i for i in chosen]

    try:
        clip = sample_clip(entry.path, config.size, pick, crop=config.crop, max_aspect=config.max_aspect)
    except VideoError as error:
        raise Quarantine(str(error)) from None
    return clip, entry


def clip_sample(item: Item, clip: Clip, entry: VideoEntry) -> Sample:
    """The `Sample` of a classification clip, with the view bookkeeping the trainer averages over."""
    extra = {
        "video_id": entry.video_id,
        "view": item.payload["view"],
        "num_views": item.payload["num_views"],
        "padded_frames": clip.padded,
        "source_frames": clip.decoded,
        **entry.extra,
    }
    return Sample(
        video=clip.frames,
        fps=clip.info.fps,
        frame_indices=clip.indices,
        label=entry.label,
        label_name=entry.label_name,
        orig_hw=clip.orig_hw,
        extra=extra,
    )


# --- options the classification adapters declare (pipeline.sources.base.Option) ----------------


def views_option(default: int) -> Option:
    """`views=K`: temporal views per evaluation video (training takes one)."""
    return Option("views", "int", default, "temporal views per val/test video", minimum=1)

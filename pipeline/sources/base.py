"""What a source adapter is: it lists work items cheaply, and loads one item into a `Sample`.

An adapter reads one dataset's real on-disk layout. It never resizes to the build geometry or
writes anything: the engine does that for every source alike (`pipeline.build`). An adapter
signals a bad raw input by raising `Quarantine(reason)`; the engine records the reason and goes
on. A problem with the dataset as a whole (a missing annotation file, a wrong `--root`) is a
`SourceError`, which the CLI prints as one line.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline.config import BuildConfig


class SourceError(Exception):
    """The dataset cannot be read at all (wrong root, missing annotation file). One line."""


class Quarantine(Exception):
    """One raw input is bad; the message is the one-line reason recorded in the manifest."""


@dataclass(frozen=True)
class Item:
    """One future sample, as listed by `Source.items()`: small, picklable, cheap to make."""

    id: str  # unique within the source and split
    split: str
    fingerprint: str  # changes whenever the raw inputs of this item change
    payload: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)  # what load() needs


@dataclass
class Sample:
    """One decoded clip with whatever labels the adapter found, before the build geometry.

    Dense label maps (`depth.npy`, `normal.npy`, `segm.npy`) may have any spatial size; they are
    taken to cover the same field of view as `video`. Boxes (`boxes.npy` `[T,N,4]`, `boxes_cls.npy`
    `[T,N]`, any N) are normalised to `video`'s frame. The engine crops and resizes both, pads
    boxes to the configured slot count, and checks the result against the schema.
    """

    video: np.ndarray  # uint8 [T, H, W, 3]
    fps: float
    frame_indices: list[int]  # source frame numbers used, one per frame of `video`
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # member name -> array
    label: int | None = None  # downstream class id (the `action` task)
    label_name: str | None = None
    oscc: int | None = None  # Ego4D state change (the `oscc` task)
    orig_hw: tuple[int, int] | None = None  # source frame size when `video` was already resized
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific meta.json fields


class Source(ABC):
    """A dataset adapter. Subclasses set the class attributes and implement two methods."""

    name: ClassVar[str]
    version: ClassVar[str]  # bump when the adapter's output bytes change; part of the config hash
    tasks: ClassVar[tuple[str, ...]]  # tasks this source can provide
    splits: ClassVar[tuple[str, ...]]  # splits built when --split is not given
    description: ClassVar[str]
    needs_root: ClassVar[bool] = True

    def __init__(self, root: Path | None, config: BuildConfig) -> None:
        self.root = root
        self.config = config

    @abstractmethod
    def items(self, split: str) -> Iterator[Item]:
        """List the split's items. Raise `SourceError` when the dataset itself is unreadable."""

    @abstractmethod
    def load(self, item: Item) -> Sample:
        """Decode one item. Raise `Quarantine(reason)` when its raw input is bad."""


def file_fingerprint(*paths: Path | str) -> str:
    """A cheap fingerprint of raw files: path, size and modification time of each.

    Missing files are part of the fingerprint too, so an item whose file appears later is rebuilt.
    """
    digest = hashlib.sha1()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()[:16]


def value_fingerprint(*values: object) -> str:
    """A fingerprint of plain values (annotation rows, generator parameters)."""
    return hashlib.sha1(repr(values).encode()).hexdigest()[:16]

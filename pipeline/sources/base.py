"""What a source adapter is: it lists work items cheaply, and loads one item into a `Sample`.

An adapter reads one dataset's real on-disk layout. It never resizes to the build geometry or
writes anything: the engine does that for every source alike (`pipeline.build`). A bad raw input
is deferred one way: an input found bad while listing is an `Item` with `problem` set (the engine
quarantines it without calling `load()`); one found bad while loading raises `Quarantine(reason)`.
A problem with the dataset as a whole (a missing annotation file, a wrong `--root`, a bad
`--option`) is a `SourceError`, which the CLI prints as one line.

Every `--option` an adapter reads is declared in its `options` (`Option`: name, type, choices,
default, help) and read through `Source.option` only. `Source.resolve_options` checks them before any
work and writes each in one canonical form, so the config hash covers declared options only. An option
given is kept even when it equals today's default: the build says what was asked for, and a later
change of the default cannot silently change it. An option not given stays out of the config (and so
out of the hash), so builds that give none keep their hash.

`--root` is checked in one place, `Source.check_root`; an adapter reads it as `self.root_dir`.

Each adapter declares how it picks a clip's frames (`SamplingRule`): one line saying the rule, and
which of the build's sampling settings (`--sampling-rate`, `--train-views`) the rule reads. A build
that sets one the rule does not read is refused before any work (`Source.check_sampling`): a setting
that would be silently ignored gives the user a different clip than the one asked for.
"""

from __future__ import annotations

import hashlib
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline.config import BuildConfig, config_flag


class SourceError(Exception):
    """The dataset cannot be read at all (wrong root, missing annotation file). One line."""


class Quarantine(Exception):
    """One raw input is bad; the message is the one-line reason recorded in the manifest."""


@dataclass(frozen=True)
class Item:
    """One future sample, as listed by `Source.items()`: small, picklable, cheap to make.

    `payload` is what `load()` needs, best a small frozen dataclass of the adapter's own. `problem`,
    when set, is the one-line reason this input is bad, found while listing: the engine quarantines
    the item without calling `load()`. The fingerprint must change when the problem does.
    """

    id: str  # unique within the source and split
    split: str
    fingerprint: str  # changes whenever the raw inputs of this item change
    payload: Any = field(default_factory=dict, hash=False, compare=False)  # what load() needs
    problem: str | None = field(default=None, compare=False)
    view: int = 0  # temporal view: an evaluation view of a video, or a train view (`--train-views`)
    view_group: str = ""  # the id every view of one video shares; "" = this item's own id

    @property
    def group(self) -> str:
        """The id of the video this item is a view of."""
        return self.view_group or self.id


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
    orig_hw: tuple[int, int] | None = None  # source frame size when `video` was already framed (decoder)
    dense_on_label_grid: bool = False  # dense maps already sampled with `geometry.label_pixels`
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific meta.json fields


OPTION_TYPES = {"int": int, "float": float, "str": str}

# The BuildConfig settings that only some sampling rules read (every rule reads --frames).
SAMPLING_SETTINGS = ("sampling_rate", "train_views")


@dataclass(frozen=True)
class SamplingRule:
    """How an adapter picks a clip's frames, and which of `SAMPLING_SETTINGS` that reads."""

    text: str  # one line for messages: "one frame in each of --frames equal segments ..."
    reads: frozenset[str] = frozenset({"train_views"})  # train views: independent draws of the rule


@dataclass(frozen=True)
class Option:
    """One `--option NAME=VALUE` an adapter reads: its type, allowed values, default and help."""

    name: str
    type: str  # "int", "float" or "str"
    default: int | float | str | None  # None: unset unless given (e.g. an optional file path)
    help: str  # one line, shown by `pvit-pipeline sources NAME`
    choices: tuple[str, ...] = ()  # allowed values of a "str" option; empty = any
    minimum: float | None = None  # smallest allowed value of a number

    def parse(self, text: str) -> int | float | str:
        """The typed value of `text`; `SourceError` (one line) when it is not allowed."""
        try:
            value = OPTION_TYPES[self.type](text)
        except ValueError:
            raise SourceError(f"--option {self.name} must be {_article(self.type)}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise SourceError(f"--option {self.name} must be a finite number, got {text!r}")
        if self.choices and str(value) not in self.choices:
            raise SourceError(f"--option {self.name} must be one of {', '.join(self.choices)}, got {text!r}")
        if self.minimum is not None and value < self.minimum:
            raise SourceError(f"--option {self.name} must be at least {self.minimum:g}, got {text!r}")
        return value

    def describe(self) -> str:
        """`name=<int>  (default 2)  help`, one line for the CLI listing."""
        values = "|".join(self.choices) if self.choices else f"<{self.type}>"
        default = "unset" if self.default is None else f"default {self.default}"
        return f"{self.name}={values}  ({default})  {self.help}"


def _article(type_name: str) -> str:
    return {"int": "an integer", "float": "a number", "str": "a string"}[type_name]


class Source(ABC):
    """A dataset adapter. Subclasses set the class attributes and implement two methods."""

    name: ClassVar[str]
    version: ClassVar[str]  # bump when the adapter's output bytes change; part of the config hash
    tasks: ClassVar[tuple[str, ...]]  # tasks this source can provide
    splits: ClassVar[tuple[str, ...]]  # splits built when --split is not given
    description: ClassVar[str]
    needs_root: ClassVar[bool] = True
    # How this adapter picks frames. It reads --train-views when its training protocol draws frames at
    # random (PySlowFast's train mode), so K views are K different samplings; not for keyframe-centred
    # clips (AVA) or still images.
    sampling: ClassVar[SamplingRule] = SamplingRule("frames of the adapter's own choosing")
    options: ClassVar[tuple[Option, ...]] = ()  # every --option this adapter reads

    def __init__(self, root: Path | None, config: BuildConfig) -> None:
        self.root = root
        # Checked here too, so an adapter made outside `build_source` never reads an undeclared option.
        self.config = replace(config, options=self.resolve_options(config.options))

    @classmethod
    def resolve_options(cls, pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        """Check `--option` pairs against `options`; return them sorted, each in its canonical form.

        An unknown name or a bad value is a `SourceError` (one line). Values are written back in one
        canonical form (`views=02` -> `2`), so two spellings of one value have one config hash; a
        value equal to the default is kept as given (see the module doc).
        """
        declared = {option.name: option for option in cls.options}
        out = []
        for name, text in pairs:
            option = declared.get(name)
            if option is None:
                known = ", ".join(sorted(declared)) or "none"
                raise SourceError(f"source {cls.name} has no option {name!r} (its options: {known})")
            value = option.parse(text)
            out.append((name, repr(value) if isinstance(value, float) else str(value)))
        return tuple(sorted(out))

    def option(self, name: str) -> Any:
        """The typed value of declared option `name`: as given on the command line, else its default."""
        option = next((o for o in self.options if o.name == name), None)
        if option is None:
            raise KeyError(f"{type(self).__name__} reads undeclared option {name!r}")  # an adapter bug
        text = self.config.option(name)
        if text is None:
            return option.default
        return option.parse(text)

    def sampling_rule(self) -> SamplingRule:
        """The rule this build samples by: `sampling`, unless an option chooses another (videofolder)."""
        return self.sampling

    def check_sampling(self) -> None:
        """Refuse a sampling setting the rule does not read: one-line `SourceError` naming the rule."""
        rule, unset = self.sampling_rule(), BuildConfig()
        for name in SAMPLING_SETTINGS:
            if name not in rule.reads and getattr(self.config, name) != getattr(unset, name):
                raise SourceError(
                    f"source {self.name} does not use {config_flag(name)} (its frames: {rule.text})"
                )

    @classmethod
    def check_root(cls, root: Path | None, required: bool | None = None) -> Path | None:
        """`--root` checked: a directory, or None when this source reads no dataset (`needs_root` False).

        The one check of `--root`: the build runs it before any work, and `root_dir` runs it again
        for an adapter made outside the build. `SourceError` (one line) otherwise.
        """
        if root is None:
            if cls.needs_root if required is None else required:
                raise SourceError(f"source {cls.name} reads a dataset from disk: pass --root DIR")
            return None
        if not Path(root).is_dir():
            raise SourceError(f"--root {root}: no such directory")
        return Path(root)

    @property
    def root_dir(self) -> Path:
        """`--root`, checked (`check_root`): the dataset directory an adapter reads."""
        root = self.check_root(self.root, required=True)
        assert root is not None  # required: check_root raised instead
        return root

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


def leaves_root(root: Path | str, path: Path | str) -> bool:
    """Whether `path`, its `..` collapsed, lies outside `root` (an annotation naming `../x` or `/x`).

    Lexical on purpose: a symlink the user placed inside the root (videos on another disk) is theirs to
    make; a path an annotation spells to climb out of the dataset is not read.
    """
    base = os.path.normpath(Path(root).absolute())
    return os.path.commonpath([base, os.path.normpath(Path(path).absolute())]) != base


def value_fingerprint(*values: object) -> str:
    """A fingerprint of plain values (annotation rows, generator parameters)."""
    return hashlib.sha1(repr(values).encode()).hexdigest()[:16]


def sampling_rng(config: BuildConfig, item: Item) -> np.random.Generator | None:
    """The generator of a training item's train-mode temporal sampling; None for evaluation items.

    Seeded by (`--seed`, video, view) through sha256, so a view's frames are the same on every
    machine and run, and the K train views of one video are independent draws.
    """
    if item.split != "train":
        return None
    digest = hashlib.sha256(repr((config.seed, item.group, item.view)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))

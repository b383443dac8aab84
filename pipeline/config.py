"""The build configuration, its stable hash, and the help text of its fields.

The hash covers every field that changes the bytes of a sample, plus the adapter's name and
version and the shard format version, so a changed `--size` or a new adapter release produces a
new hash and the engine regenerates what it affects. Fields that only decide *how* the build runs
(workers, the Ray address, how many procedural samples exist) stay out of it.

Each field's trailing comment is its documentation: `pvit-pipeline build --help` shows it
(`field_comments`), so the CLI flag `--frames` and the field `frames` are one setting with one text.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import io
import json
import textwrap
import tokenize
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Bump when the shard layout or build.json changes (2: full frames, label stride, views; 3: build.json
# records the label spaces). A bump changes every config hash, so `pvit-pipeline build` regenerates.
FORMAT_VERSION = 3
CODECS = ("npy", "jpeg")
LABEL_CODECS = ("raw", "zstd")
# Every build made before --label-codec existed is raw: the config hash leaves raw out, so theirs stay valid.
RAW_LABELS = "raw"
LABEL_SPACES = ("segm_space", "box_space")  # the meta.json fields build.json records once per source
_NOT_FIELDS = ("format", "adapter", "adapter_version")  # keys `hashed_fields` adds to the config's own
CROPS = ("none", "centre")


@dataclass(frozen=True)
class BuildConfig:
    """What one `pvit-pipeline build` produces. Validated on construction."""

    frames: int = 16  # frames T per clip
    sampling_rate: int | None = None  # source frames between clip frames, fixed-stride sources (unset: 4)
    size: int = 256  # stored short side S, in pixels
    crop: str = "none"  # none: the whole frame at its aspect ratio; centre: the centre S x S square only
    max_aspect: float = 2.0  # crop none: a long side beyond this many short sides is centre-cropped to it
    label_stride: int = 4  # dense label maps are [T, H/k, W/k] of the stored [H, W] frame
    train_views: int = 1  # independent train-mode temporal samplings stored per training video
    codec: str = "npy"  # npy: video.npy (raw uint8, fastest to read); jpeg: one JPEG per frame (smaller)
    jpeg_quality: int = 90  # JPEG quality, used by the jpeg codec only
    label_codec: str = "zstd"  # dense labels (depth, normal, segm): zstd (lossless, ~15x smaller) | raw .npy
    max_objects: int = 8  # O, the box slots per frame in boxes.npy
    seed: int = 0  # seeds every random choice an adapter makes (procedural scenes, view sampling)
    options: tuple[tuple[str, str], ...] = ()  # adapter setting, repeatable (`sources NAME` lists them)
    # Not hashed: they change how the work is scheduled, never a sample's bytes.
    samples_per_shard: int = field(default=32, compare=False)  # mean samples per shard (= per work unit)
    num_samples: int | None = field(default=None, compare=False)  # procedural: clips to render per split

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"--frames must be at least 1, got {self.frames}")
        if self.size < 8:
            raise ValueError(f"--size must be at least 8, got {self.size}")
        if not 1 <= self.label_stride <= self.size:
            raise ValueError(
                f"--label-stride must be between 1 and --size ({self.size}), got {self.label_stride}"
            )
        if self.crop not in CROPS:
            raise ValueError(f"--crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        if not self.max_aspect >= 1.0:
            raise ValueError(f"--max-aspect must be at least 1, got {self.max_aspect}")
        if self.train_views < 1:
            raise ValueError(f"--train-views must be at least 1, got {self.train_views}")
        if self.sampling_rate is not None and self.sampling_rate < 1:
            raise ValueError(f"--sampling-rate must be at least 1, got {self.sampling_rate}")
        if self.codec not in CODECS:
            raise ValueError(f"--codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.label_codec not in LABEL_CODECS:
            raise ValueError(
                f"--label-codec must be one of {', '.join(LABEL_CODECS)}, got {self.label_codec!r}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg-quality must be between 1 and 100, got {self.jpeg_quality}")
        if self.max_objects < 1:
            raise ValueError(f"--max-objects must be at least 1, got {self.max_objects}")
        if self.samples_per_shard < 1:
            raise ValueError(f"--samples-per-shard must be at least 1, got {self.samples_per_shard}")
        if self.num_samples is not None and self.num_samples < 0:
            raise ValueError(f"--num-samples must not be negative, got {self.num_samples}")

    def option(self, name: str) -> str | None:
        """The value of adapter option `name` as given (`--option name=value`); None when not given.

        Adapters read their options typed, with their declared defaults, through `Source.option`.
        """
        return dict(self.options).get(name)

    def hashed_fields(self, adapter: str, adapter_version: str) -> dict:
        """Everything that decides the output bytes, as a JSON-able dict."""
        hashed = {f.name for f in fields(self) if f.compare}
        values = {k: v for k, v in asdict(self).items() if k in hashed}
        values["options"] = [list(pair) for pair in self.options]
        if values["label_codec"] == RAW_LABELS:  # builds from before the setting keep their hash
            del values["label_codec"]
        return {"format": FORMAT_VERSION, "adapter": adapter, "adapter_version": adapter_version, **values}

    @classmethod
    def from_json(cls, hashed: Mapping[str, Any]) -> BuildConfig:
        """The config back from `hashed_fields` (build.json "config"); scheduling fields at their defaults.

        One-line ValueError when it was written for another shard format (read on, it would be misread).
        """
        written = hashed.get("format")
        if written != FORMAT_VERSION:
            raise ValueError(
                f"written for shard format {written}, this pvit-pipeline reads format {FORMAT_VERSION}: "
                f"rebuild the source with `pvit-pipeline build`"
            )
        names = {f.name for f in fields(cls) if f.compare}  # the hashed fields
        given = {key: value for key, value in hashed.items() if key not in _NOT_FIELDS}
        given.setdefault("label_codec", RAW_LABELS)  # `hashed_fields` leaves raw out
        if set(given) != names:
            odd = sorted(names.symmetric_difference(given))
            raise ValueError(
                f"config fields differ from this pvit-pipeline's ({', '.join(odd)}): rebuild the source"
            )
        given["options"] = tuple((str(name), str(value)) for name, value in given["options"])
        return cls(**given)

    def stable_hash(self, adapter: str, adapter_version: str) -> str:
        """A 16-hex-digit hash that is the same on every machine and Python run."""
        canonical = json.dumps(
            self.hashed_fields(adapter, adapter_version), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_options(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    """Turn `["a=1", "b=x"]` into the sorted tuple `BuildConfig.options` holds."""
    parsed = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--option expects NAME=VALUE, got {pair!r}")
        parsed[name] = value
    return tuple(sorted(parsed.items()))


def config_flag(name: str) -> str:
    """The `pvit-pipeline build` flag of `BuildConfig` field `name` (`options`: `--option`, one at a time)."""
    return "--option" if name == "options" else "--" + name.replace("_", "-")


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each field of dataclass `cls`, by field name: the field's help text.

    A comment must end the field's (last) line; a comment line above a field documents a group.
    """
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {
        token.start[0]: token.string[1:].strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    return {
        statement.target.id: comments[statement.end_lineno or statement.lineno]
        for statement in node.body
        if isinstance(statement, ast.AnnAssign)
        and isinstance(statement.target, ast.Name)
        and (statement.end_lineno or statement.lineno) in comments
    }

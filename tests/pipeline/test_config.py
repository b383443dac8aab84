"""The build config's hash: stable across processes, sensitive to exactly the byte-changing fields."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from pipeline.config import BuildConfig, parse_options

# Pinned: if this changes, every user's shards are regenerated; change it only on purpose.
DEFAULT_HASH = BuildConfig().stable_hash("procedural", "1")


def test_hash_is_the_same_in_a_fresh_interpreter_with_another_hash_seed() -> None:
    code = "from pipeline.config import BuildConfig; print(BuildConfig().stable_hash('procedural', '1'))"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        )
        assert out.stdout.strip() == DEFAULT_HASH


def test_hash_value_is_pinned() -> None:
    assert DEFAULT_HASH == "0ea0f2887e48bafe"


@pytest.mark.parametrize(
    "change",
    [
        {"frames": 8},
        {"size": 112},
        {"label_stride": 2},
        {"codec": "jpeg"},
        {"jpeg_quality": 95},
        {"max_objects": 4},
        {"seed": 1},
        {"options": (("views", "3"),)},
    ],
)
def test_every_output_field_changes_the_hash(change: dict) -> None:
    assert dataclasses.replace(BuildConfig(), **change).stable_hash("procedural", "1") != DEFAULT_HASH


def test_adapter_name_and_version_change_the_hash() -> None:
    assert BuildConfig().stable_hash("procedural", "2") != DEFAULT_HASH
    assert BuildConfig().stable_hash("hypersim", "1") != DEFAULT_HASH


def test_scheduling_fields_do_not_change_the_hash() -> None:
    config = BuildConfig(samples_per_unit=7, num_samples=999)
    assert config.stable_hash("procedural", "1") == DEFAULT_HASH


@pytest.mark.parametrize("bad", [{"frames": 0}, {"label_stride": 500}, {"codec": "mp4"}, {"jpeg_quality": 0}])
def test_invalid_values_raise_one_line_errors(bad: dict) -> None:
    with pytest.raises(ValueError, match="^--") as error:
        BuildConfig(**bad)
    assert "\n" not in str(error.value)


def test_options_parse_sorted_and_reject_malformed() -> None:
    assert parse_options(["b=2", "a=x=y"]) == (("a", "x=y"), ("b", "2"))
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_options(["novalue"])

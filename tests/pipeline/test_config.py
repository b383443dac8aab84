"""The build config's hash: stable across processes, sensitive to exactly the byte-changing fields."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from pipeline.config import FORMAT_VERSION, BuildConfig, parse_options
from pipeline.manifest import BuildInfo

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
    assert DEFAULT_HASH == "e0244da83f718b12"  # format 3, --label-codec zstd (the default since issue 24)
    # Raw labels, as every build before --label-codec: the hash those builds recorded, unchanged.
    assert BuildConfig(label_codec="raw").stable_hash("procedural", "1") == "3357cafe840bc1c5"


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
        {"label_codec": "raw"},
    ],
)
def test_every_output_field_changes_the_hash(change: dict) -> None:
    assert dataclasses.replace(BuildConfig(), **change).stable_hash("procedural", "1") != DEFAULT_HASH


def test_adapter_name_and_version_change_the_hash() -> None:
    assert BuildConfig().stable_hash("procedural", "2") != DEFAULT_HASH
    assert BuildConfig().stable_hash("hypersim", "1") != DEFAULT_HASH


def test_scheduling_fields_do_not_change_the_hash() -> None:
    config = BuildConfig(samples_per_shard=7, num_samples=999)
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


def _as_written(config: BuildConfig) -> dict:
    """build.json's "config", through JSON as a reader sees it."""
    return json.loads(json.dumps(config.hashed_fields("procedural", "1")))


def test_from_json_gives_back_the_config_that_was_hashed() -> None:
    config = BuildConfig(
        frames=8,
        sampling_rate=3,
        size=64,
        crop="centre",
        max_aspect=1.5,
        label_stride=2,
        train_views=2,
        codec="jpeg",
        jpeg_quality=80,
        max_objects=5,
        seed=7,
        options=(("a", "1"), ("views", "3")),
    )
    again = BuildConfig.from_json(_as_written(config))
    assert again == config and again.options == (("a", "1"), ("views", "3"))
    assert again.stable_hash("procedural", "1") == config.stable_hash("procedural", "1")


def test_from_json_refuses_another_format_in_one_line() -> None:
    written = {**_as_written(BuildConfig()), "format": FORMAT_VERSION - 1}
    with pytest.raises(ValueError, match=rf"format {FORMAT_VERSION - 1}.*rebuild the source") as error:
        BuildConfig.from_json(written)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("edit", [{"drop": "max_objects"}, {"add": "resolution"}])
def test_from_json_refuses_fields_this_version_does_not_write(edit: dict) -> None:
    written = _as_written(BuildConfig())
    written.pop(edit.get("drop", ""), None)
    if "add" in edit:
        written[edit["add"]] = 1
    with pytest.raises(
        ValueError, match=f"config fields differ.*{edit.get('drop', edit.get('add'))}.*rebuild"
    ):
        BuildConfig.from_json(written)


def _build_json(**overrides: object) -> dict:
    return {
        "source": "procedural",
        "config": _as_written(BuildConfig(frames=4, max_objects=3)),
        "config_hash": "0123456789abcdef",
        "tasks": ["segm", "boxes"],
        "segm_space": "procedural",
        "box_space": None,
        "shards": [{"name": "train-000000.tar", "split": "train", "samples": 2, "bytes": 10, "sha256": "x"}],
        **overrides,
    }


def test_build_info_types_what_build_json_records() -> None:
    info = BuildInfo.from_json(_build_json())
    assert info.config == BuildConfig(frames=4, max_objects=3) and info.config.max_objects == 3
    assert (info.segm_space, info.box_space) == ("procedural", None)
    assert info.tasks == ("segm", "boxes") and info.shards[0]["name"] == "train-000000.tar"


@pytest.mark.parametrize("key", ["segm_space", "box_space", "tasks"])
def test_build_info_of_an_older_build_json_says_to_rebuild(key: str) -> None:
    build = _build_json()
    del build[key]
    with pytest.raises(ValueError, match=f"lacks '{key}'.*rebuild the source"):
        BuildInfo.from_json(build)

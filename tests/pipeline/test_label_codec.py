"""`--label-codec zstd` (issue 24): lossless (the same arrays back, in every reader), recorded in build.json,
in the config hash only when it is not the default, so builds made before the setting keep their hash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.build import BuildRequest, build_source
from pipeline.config import BuildConfig
from pipeline.manifest import BuildInfo, read_build
from pipeline.reader import iter_samples, verify
from pipeline.schema import DENSE_MEMBERS
from pipeline.shards import ZSTD_MAGIC, read_shard
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def raw_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    return Path(
        build_source(BuildRequest("procedural", out, tiny_config(label_codec="raw"), workers=0)).out_dir
    )


@pytest.fixture(scope="module")
def zstd_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zstd")
    return Path(
        build_source(BuildRequest("procedural", out, tiny_config(label_codec="zstd"), workers=0)).out_dir
    )


def test_raw_stays_out_of_the_hash_and_zstd_is_the_default_in_it() -> None:
    assert BuildConfig().label_codec == "zstd"
    raw = BuildConfig(label_codec="raw")
    assert "label_codec" not in raw.hashed_fields("a", "1")
    zstd = BuildConfig(label_codec="zstd")
    assert zstd.hashed_fields("a", "1")["label_codec"] == "zstd"
    assert zstd.stable_hash("a", "1") != raw.stable_hash("a", "1")
    assert BuildConfig.from_json(zstd.hashed_fields("a", "1")) == zstd
    assert BuildConfig.from_json(raw.hashed_fields("a", "1")) == raw


def test_zstd_labels_decode_to_the_same_arrays(zstd_build: Path, raw_build: Path) -> None:
    raw = {sample["__key__"]: sample for sample in iter_samples(raw_build)}
    packed = {sample["__key__"]: sample for sample in iter_samples(zstd_build)}
    assert raw.keys() == packed.keys()
    for key, sample in raw.items():
        for name in sample:
            if name.endswith(".npy"):
                assert packed[key][name].dtype == sample[name].dtype, name
                np.testing.assert_array_equal(packed[key][name], sample[name])  # NaN equal here
        np.testing.assert_array_equal(packed[key]["video"], sample["video"])


def test_a_zstd_build_records_its_codec_verifies_and_is_smaller(zstd_build: Path, raw_build: Path) -> None:
    build = read_build(zstd_build)
    assert build["config"]["label_codec"] == "zstd"
    assert BuildInfo.from_json(build).config.label_codec == "zstd"
    assert verify(zstd_build) == []
    first = next(read_shard(zstd_build / build["shards"][0]["name"]))[1]
    assert {name for name, data in first.items() if data[:4] == ZSTD_MAGIC} == set(DENSE_MEMBERS) & set(first)
    size = sum(s["bytes"] for s in build["shards"])
    assert size < sum(s["bytes"] for s in read_build(raw_build)["shards"])

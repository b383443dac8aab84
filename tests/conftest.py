"""Shared test fixtures: tiny procedural builds (CPU, deterministic, seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.build import BuildRequest, build_source
from pipeline.config import BuildConfig

TINY = {"frames": 4, "size": 32, "label_stride": 4}


def tiny_config(**overrides) -> BuildConfig:
    """A procedural config small enough to render dozens of clips per second."""
    fields = {**TINY, "num_samples": 20, "samples_per_shard": 4, **overrides}
    return BuildConfig(**fields)


@pytest.fixture(scope="session")
def procedural_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny procedural build shared by read-only tests; returns the source directory."""
    out = tmp_path_factory.mktemp("shards")
    return build_source(BuildRequest("procedural", out, tiny_config(), workers=0)).out_dir

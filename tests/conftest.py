"""Shared test fixtures: tiny procedural builds (CPU, deterministic, seconds)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.build import BuildRequest, build_source
from pipeline.config import BuildConfig
from tests.s3server import CREDENTIALS, S3Server

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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One local S3 server for the session, its endpoint and test credentials in the environment."""
    saved = {name: os.environ.get(name) for name in (*CREDENTIALS, "AWS_ENDPOINT_URL")}
    os.environ.update(CREDENTIALS)
    server = S3Server()
    os.environ["AWS_ENDPOINT_URL"] = server.start()
    yield server
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the session's S3 server: `s3://<name>`."""
    return f"s3://{s3_server.new_bucket()}"

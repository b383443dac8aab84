"""Fixtures for the trainer tests: the session's tiny procedural build (4 x 32 x 32 clips, uneven shards)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shards_dir(procedural_build: Path) -> Path:
    """The `--shards` directory holding `procedural/` (20 train + 10 val samples)."""
    return procedural_build.parent


def train_args(shards: Path, out: Path, *extra: str) -> list[str]:
    """Flags for a seconds-long CPU run of the tiny model on real + synthetic procedural data."""
    return [
        "--shards", str(shards), "--real", "procedural", "--synthetic", "procedural", "--out", str(out),
        "--batch-size", "4", "--synthetic-batch-size", "4", "--workers", "0", "--log-every", "2",
        "--eval-batch-size", "8", "--no-tensorboard", "--crop-size", "32", "--train-scale", "32", "40",
        *extra,
    ]  # fmt: skip

"""`python -m train.bench` as a bench-marked test (deselected by default; run with -m bench -s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.bench import main


@pytest.mark.bench
def test_loader_benchmark_prints_both_rates(procedural_build: Path) -> None:
    lines = main(
        [
            "--shards",
            str(procedural_build.parent),
            "--workers",
            "0",
            "2",
            "--steps",
            "12",
            "--batch-size",
            "4",
            "--crop-size",
            "32",
            "--train-scale",
            "32",
            "40",
        ]
    )
    assert "MB/s" in lines[0] and all("clips/s" in line for line in lines[1:])

"""Throughput switches of the trainer: --compile, the sync-free finite check, `train.bench --device`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.train.conftest import train_args
from train.bench import main as bench_main
from train.config import parse_config
from train.main import FiniteGuard
from train.main import main as train_main


def test_compile_flag_parses_and_defaults_off() -> None:
    assert parse_config(["--real", "procedural", "--compile"]).compile is True
    assert parse_config(["--real", "procedural"]).compile is False


def test_finite_guard_reports_the_first_bad_step_only_when_checked() -> None:
    guard = FiniteGuard(torch.device("cpu"))
    guard.update(torch.tensor(1.0), torch.tensor(2.0), 1)
    guard.check()
    guard.update(torch.tensor(float("inf")), torch.tensor(3.0), 2)  # no raise: nothing is read back yet
    guard.update(torch.tensor(float("nan")), torch.tensor(4.0), 3)
    with pytest.raises(FloatingPointError, match=r"step 2 \(loss 3"):
        guard.check()


def test_eager_guard_raises_at_the_bad_step() -> None:
    guard = FiniteGuard(torch.device("cpu"), eager=True)
    with pytest.raises(FloatingPointError, match="step 7"):
        guard.update(torch.tensor(float("nan")), torch.tensor(1.0), 7)


def test_diverging_run_stops_with_a_non_finite_gradient(shards_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match="non-finite gradient norm"):
        train_main(train_args(shards_dir, tmp_path, "--steps", "4", "--lr", "1e30", "--clip-grad", "0"))


@pytest.mark.slow  # multi-process or several runs: the second CI step runs it
def test_training_step_bench_runs_on_cpu(shards_dir: Path) -> None:
    flags = [
        "--shards",
        str(shards_dir),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--steps",
        "2",
        "--warmup",
        "1",
    ]
    (line,) = bench_main([*flags, "--batch-size", "2"])
    assert "tiny pvit on cpu" in line and "clips/s" in line and "data-wait share" in line


@pytest.mark.slow
def test_compiled_training_runs_on_cpu(shards_dir: Path, tmp_path: Path) -> None:
    out = train_main(train_args(shards_dir, tmp_path, "--steps", "2", "--compile"))
    assert out["steps"] == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_step_bench_runs_on_cuda(shards_dir: Path) -> None:
    flags = [
        "--shards",
        str(shards_dir),
        "--device",
        "cuda",
        "--workers",
        "2",
        "--steps",
        "4",
        "--warmup",
        "2",
    ]
    (line,) = bench_main([*flags, "--batch-size", "4"])
    assert "clips/s" in line

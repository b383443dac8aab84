"""A training process killed with SIGKILL resumes with `--resume latest` to an uninterrupted run's weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train.conftest import train_args
from train.main import main

REPO = Path(__file__).resolve().parents[2]
STEPS = ["--steps", "10", "--save-every", "2", "--warmup-steps", "2", "--eval-every", "0"]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"training exited early: {process.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout}s")
        time.sleep(0.02)


@pytest.mark.slow  # multi-process or several runs: the second CI step runs it
@pytest.mark.timeout(300)
def test_sigkilled_training_resumes_to_the_uninterrupted_weights(shards_dir: Path, tmp_path: Path) -> None:
    killed_out = tmp_path / "killed"
    command = [sys.executable, str(REPO / "train" / "main.py"), *train_args(shards_dir, killed_out, *STEPS)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    wait_for(killed_out / "checkpoints" / "step_00000004.pt", process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed_out / "checkpoints" / "step_00000010.pt").exists(), "the kill must land mid-run"

    main(train_args(shards_dir, killed_out, *STEPS, "--resume", "latest"))
    main(train_args(shards_dir, tmp_path / "straight", *STEPS))
    resumed = torch.load(killed_out / "checkpoints" / "step_00000010.pt", weights_only=True)["model"]
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "step_00000010.pt", weights_only=True)[
        "model"
    ]
    worst = max((straight[k].double() - resumed[k].double()).abs().max().item() for k in straight)
    assert worst <= 1e-6, f"resumed weights differ by {worst}"

"""Two gloo ranks over deliberately uneven shards must finish (a hang fails the test via the timeout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.conftest import train_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # multi-process or several runs: the second CI step runs it
def test_two_ranks_over_uneven_shards_finish(shards_dir: Path, tmp_path: Path) -> None:
    build = json.loads((shards_dir / "procedural" / "build.json").read_text())
    counts = [shard["samples"] for shard in build["shards"] if shard["split"] == "train"]
    assert len(set(counts)) > 1, f"fixture shards should be uneven, got {counts}"
    # 8 steps > one epoch (20 samples / 2 ranks / 2 per rank = 5 batches); val has 10 samples in 4 odd shards.
    args = train_args(shards_dir, tmp_path, "--steps", "8", "--eval-every", "4", "--workers", "1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(ROOT / "train" / "main.py"),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"2-rank run did not finish in 180 s (DDP hang?):\n{(error.stdout or b'')[-2000:]!r}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "step 000008/000008" in done.stdout
    assert "final val top-1 procedural" in done.stdout

"""End-to-end runs of `train.main.main` in-process (tiny model, CPU, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.train.conftest import train_args
from train.checkpoint import list_checkpoints
from train.main import main


def test_smoke_run_trains_evaluates_logs_and_saves(shards_dir: Path, tmp_path: Path) -> None:
    out = main(train_args(shards_dir, tmp_path, "--steps", "3", "--test-crops", "3"))
    assert out["steps"] == 3
    assert 0.0 <= out["eval"]["real/procedural/top1"] <= 100.0
    assert out["eval"]["real/procedural/views_per_video"] == 3  # 3 crops x the 1 stored temporal view
    assert {"depth_absrel", "normal_angle_deg", "segm_miou", "pose_mpjpe_mm", "box_iou"} <= {
        key.rsplit("/", 1)[1] for key in out["eval"] if key.startswith("synthetic/")
    }
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {row["kind"] for row in rows} == {"train", "eval", "summary"}
    train_rows = [row for row in rows if row["kind"] == "train"]
    assert train_rows[-1]["step"] == 3 and {"loss", "action", "depth", "lr", "data_wait_share"} <= set(
        train_rows[-1]
    )
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003.pt"]


def _weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)["model"]


@pytest.mark.slow  # multi-process or several runs: the second CI step runs it
def test_killed_then_resumed_run_ends_with_the_same_weights(shards_dir: Path, tmp_path: Path) -> None:
    # 6 steps over a 5-batch epoch, so the resumed part also crosses an epoch boundary.
    common = ["--steps", "6", "--save-every", "3", "--warmup-steps", "2"]
    main(train_args(shards_dir, tmp_path / "straight", *common, "--workers", "2"))
    interrupted = main(train_args(shards_dir, tmp_path / "resumed", *common, "--stop-after", "4"))
    assert interrupted["stopped"] and [p.name for p in list_checkpoints(tmp_path / "resumed")] == [
        "step_00000003.pt"
    ]
    main(train_args(shards_dir, tmp_path / "resumed", *common, "--resume", "latest"))
    straight, resumed = _weights(tmp_path / "straight", 6), _weights(tmp_path / "resumed", 6)
    assert straight.keys() == resumed.keys()
    worst = max((straight[k].double() - resumed[k].double()).abs().max().item() for k in straight)
    assert worst <= 1e-6, f"resumed weights differ by {worst}"

"""`--loss-weights paper|equal|TASK=VALUE`: the paper's lambdas, the equal-scale calibration (the paper's own
rule, measured on the data at hand), or overrides; recorded in the checkpoint and restored on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.train.conftest import train_args
from train.assemble import prepare
from train.config import parse_config, parse_loss_weights
from train.data import MixedBatches, merge, to_device
from train.distributed import setup
from train.loss_weights import calibrate, equal_scale_weights
from train.main import main

EQUAL = ["--loss-weights", "equal", "--calibration-batches", "2"]


def test_the_rule_scales_every_loss_to_the_action_loss() -> None:
    weights = equal_scale_weights({"action": 2.0, "depth": 80.0, "normal": 0.5, "boxes": 0.0})
    assert weights == {"action": 1.0, "depth": 0.025, "normal": 4.0, "boxes": 1.0}  # nothing to scale: 1
    assert equal_scale_weights({"depth": 4.0, "segm": 0.5}) == {"depth": 0.25, "segm": 2.0}  # no action: to 1


def test_the_flag_parses_into_a_rule_and_overrides() -> None:
    assert parse_loss_weights("paper") == ("paper", {})
    assert parse_loss_weights("equal") == ("equal", {})
    assert parse_loss_weights("depth=0.05,boxes=2") == ("paper", {"depth": 0.05, "boxes": 2.0})
    with pytest.raises(ValueError, match="expected paper | equal"):
        parse_loss_weights("equals")


def test_a_calibration_on_a_fixed_batch_gives_the_expected_lambdas(shards_dir: Path, tmp_path: Path) -> None:
    run = prepare(parse_config(train_args(shards_dir, tmp_path, *EQUAL)), setup("cpu"))
    # By hand: the initial model (eval mode) on the run's first batch, every loss unweighted.
    batch = MixedBatches(run.streams, 0, 1, run.geometry, run.cfg.seed).batch(0)
    video, targets = to_device(merge([batch[s.role] for s in run.streams]), torch.device("cpu"))
    run.model.eval()
    with torch.no_grad():
        _, losses = run.loss_fn(run.model(video), targets)
    expected = {task: float(losses["action"] / value) for task, value in losses.items()}
    weights = calibrate(run, batches=1)
    assert set(weights) == {"action", "depth", "normal", "segm", "pose3d", "boxes"}
    assert weights == pytest.approx(expected, rel=1e-6)
    assert weights["action"] == 1.0 and weights["depth"] < 0.2  # depth (metres squared) is the largest loss
    assert run.loss_fn.weights["depth"] == weights["depth"] and run.model.training


def test_calibrating_draws_nothing_from_the_runs_random_state(shards_dir: Path, tmp_path: Path) -> None:
    """Dropout and stochastic depth (the mvit_v2_s preset has both) draw from torch's global generator: a
    calibration that drew from it too would change the training that follows."""
    run = prepare(parse_config(train_args(shards_dir, tmp_path, *EQUAL, "--workers", "1")), setup("cpu"))
    state = torch.get_rng_state()
    calibrate(run, batches=2)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.slow  # multi-process or several runs: the second CI step runs it
def test_equal_weights_are_recorded_and_restored_on_resume(shards_dir: Path, tmp_path: Path, capsys) -> None:
    steps = ["--steps", "4", "--save-every", "2"]
    straight = main(train_args(shards_dir, tmp_path / "straight", *steps, *EQUAL))
    assert "loss weights (equal scales, from the first 2 batches): action 1, depth" in capsys.readouterr().out
    main(train_args(shards_dir, tmp_path / "resumed", *steps, *EQUAL, "--stop-after", "3"))  # saved at 2
    sidecar = json.loads((tmp_path / "resumed" / "checkpoints" / "step_00000002.json").read_text())
    trained = straight["loss_weights"]
    assert {task: sidecar["loss_weights"][task] for task in trained} == pytest.approx(trained)
    resumed = main(train_args(shards_dir, tmp_path / "resumed", *steps, *EQUAL, "--resume", "latest"))
    assert resumed["loss_weights"] == straight["loss_weights"]  # restored, not calibrated on the step-2 model
    weights = [
        torch.load(tmp_path / run / "checkpoints" / "step_00000004.pt", weights_only=True)["model"]
        for run in ("straight", "resumed")
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_paper_rule_keeps_the_papers_lambdas(shards_dir: Path, tmp_path: Path) -> None:
    out = main(train_args(shards_dir, tmp_path, "--steps", "1", "--loss-weights", "depth=0.05"))
    assert out["loss_weights"]["depth"] == 0.05 and out["loss_weights"]["pose3d"] == 3.0  # paper §C otherwise
    trained = {"action", "depth", "normal", "segm", "pose3d", "boxes"}
    assert set(out["loss_weights"]) == trained  # only the losses the run trains are recorded


def test_the_record_names_the_losses_a_run_trains(shards_dir: Path, tmp_path: Path) -> None:
    plain = main(train_args(shards_dir, tmp_path / "plain", "--steps", "1", "--mode", "plain"))
    assert plain["loss_weights"] == {"action": 1.0}
    real = main(train_args(shards_dir, tmp_path / "real", "--steps", "1", "--real-tasks", "boxes"))
    weights = real["loss_weights"]
    assert weights["real_boxes"] == weights["boxes"] == 0.1  # §A.2: a real head takes its task's lambda


def test_calibrating_leaves_the_training_trajectory_alone(shards_dir: Path, tmp_path: Path) -> None:
    """The calibration reads its own batches with the model in eval mode: the run's stream and model are
    as they were (its random state: the test above). With only the action loss (lambda 1 under both rules)
    the weights come out equal bit for bit, so an `equal` table row differs from its `paper` twin by the
    lambdas alone."""
    plain = ["--mode", "plain", "--steps", "2"]
    for rule in (["--loss-weights", "paper"], EQUAL):
        main(train_args(shards_dir, tmp_path / rule[1], *plain, *rule))
    weights = [
        torch.load(tmp_path / rule / "checkpoints" / "step_00000002.pt", weights_only=True)["model"]
        for rule in ("paper", "equal")
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

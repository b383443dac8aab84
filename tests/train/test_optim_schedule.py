"""The optimiser (timm's create_optimizer_v2 and weight-decay groups) and the lr schedule (timm's cosine)."""

from __future__ import annotations

import io
import math

import pvit
import pytest
import torch

from train import checkpoint
from train.config import OptimConfig
from train.optim import WarmupCosine, make_optimizer

CPU = torch.device("cpu")


def _config(**fields) -> OptimConfig:
    return OptimConfig(**fields)


def _tiny_model() -> pvit.PViT:
    torch.manual_seed(0)
    return pvit.build_model("tiny", "pvit", num_classes=3, num_seg_classes=4, num_box_classes=4)


def test_no_decay_for_1d_tensors_and_the_models_no_weight_decay_names() -> None:
    model = _tiny_model()
    optimizer = make_optimizer(_config(weight_decay=0.05), model, CPU)
    assert isinstance(optimizer, torch.optim.AdamW)
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    exempt = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    names = model.no_weight_decay()
    assert names and len(decay) + len(exempt) == sum(1 for _ in model.parameters())
    for name, param in model.named_parameters():
        expected = exempt if param.ndim <= 1 or name in names else decay
        assert id(param) in expected, name


def test_frozen_parameters_are_not_optimised() -> None:
    model = _tiny_model()
    frozen = next(iter(model.parameters()))
    frozen.requires_grad_(False)
    optimizer = make_optimizer(_config(), model, CPU)
    assert all(p is not frozen for g in optimizer.param_groups for p in g["params"])


@pytest.mark.parametrize(
    ("fields", "kind", "options"),
    [
        ({"optimizer": "adam", "betas": (0.8, 0.9)}, torch.optim.Adam, {"betas": (0.8, 0.9)}),
        ({"optimizer": "adamw", "lr": 3e-4}, torch.optim.AdamW, {"lr": 3e-4, "betas": (0.9, 0.999)}),
        ({"optimizer": "sgd", "momentum": 0.9}, torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
        ({"optimizer": "sgd", "momentum": 0.0}, torch.optim.SGD, {"momentum": 0.0, "nesterov": False}),
    ],
    ids=["adam", "adamw", "sgd-nesterov", "sgd-plain"],
)
def test_each_optimizer_gets_its_settings(fields: dict, kind: type, options: dict) -> None:
    optimizer = make_optimizer(_config(**fields), torch.nn.Linear(3, 2), CPU)
    assert type(optimizer) is kind
    for group in optimizer.param_groups:
        assert {key: group[key] for key in options} == options
        assert not group.get("fused")  # fused kernels only on CUDA


def _lrs(scheduler: WarmupCosine, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """The lr each of the next `steps` optimiser steps trains with (read before each step, as the loop)."""
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    return out


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=lr)


def test_warmup_rises_linearly_from_zero_then_the_cosine_falls_towards_lr_min() -> None:
    optimizer = _optimizer()
    got = _lrs(WarmupCosine(optimizer, total=6, warmup=2, lr_min=0.01), optimizer, 6)

    def cosine(progress: float) -> float:
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    assert got == pytest.approx([0.0, 0.5, 1.0, cosine(1 / 4), cosine(2 / 4), cosine(3 / 4)], abs=1e-12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # after the last step: lr_min


def test_without_warmup_the_cosine_starts_at_the_peak() -> None:
    optimizer = _optimizer(lr=2e-3)
    got = _lrs(WarmupCosine(optimizer, total=4, warmup=0, lr_min=2e-5), optimizer, 4)
    expected = [2e-5 + (2e-3 - 2e-5) * 0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_a_restored_schedule_continues_exactly() -> None:
    straight_optimizer = _optimizer()
    straight = _lrs(WarmupCosine(straight_optimizer, 10, 3, 0.0), straight_optimizer, 10)
    first_optimizer = _optimizer()
    first = WarmupCosine(first_optimizer, 10, 3, 0.0)
    head = _lrs(first, first_optimizer, 4)
    buffer = io.BytesIO()
    torch.save({"optimizer": first_optimizer.state_dict(), "scheduler": first.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # as train.checkpoint.load reads it: nothing but data
    optimizer = _optimizer()
    scheduler = WarmupCosine(optimizer, 10, 3, 0.0)  # a fresh process: lr back at the warmup start
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    assert scheduler.steps == 4
    assert head + _lrs(scheduler, optimizer, 6) == straight  # bit-exact, not approximately


def test_a_checkpoint_of_another_format_is_refused_in_one_line(tmp_path) -> None:
    """Checkpoints of the trainer before this format (format 1 held numpy RNG states, a LambdaLR schedule)."""
    optimizer = _optimizer()
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = dict.fromkeys(checkpoint.REQUIRED, 0) | {"scheduler": lambda_lr.state_dict(), "format": 1}
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(checkpoint.CheckpointError, match="another version of this trainer; start afresh"):
        checkpoint.load(tmp_path / "old.pt")

"""The optimiser, its learning-rate schedule, and the check that every step's gradients are finite."""

from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from train.config import OptimConfig


def make_optimizer(cfg: OptimConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, Adam (the paper's SSv2/Ego4D recipes: L2 weight decay) or SGD with momentum (AVA, SlowFast).

    timm's `create_optimizer_v2` builds the torch optimiser and its weight-decay groups
    (`param_groups_weight_decay`): no decay for 1-d tensors (biases, norms) and for the names the model's
    `no_weight_decay()` lists (prompts, CLS, relative positions); frozen parameters are left out.
    """
    # timm passes extra keywords to the torch class: fused=True is one kernel for all parameters on CUDA.
    fused = True if device.type == "cuda" else None
    if cfg.optimizer == "sgd":
        # timm's "sgd" is Nesterov momentum; "momentum" is classical, i.e. plain SGD at momentum 0 (torch
        # refuses Nesterov without momentum).
        name = "sgd" if cfg.momentum > 0 else "momentum"
        return create_optimizer_v2(
            model, name, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, fused=fused
        )
    return create_optimizer_v2(
        model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas, fused=fused
    )


class WarmupCosine:
    """timm's `CosineLRScheduler` stepped once per optimiser step (`t_in_epochs=False`).

    Linear warmup from 0: step i (0-based) trains at lr x i / warmup; then a cosine from lr at step `warmup`
    down towards `lr_min`, reached at step `total`. timm's scheduler keeps no step count (`step_update`
    takes one), so this class keeps it: the count is what a checkpoint stores, and loading it sets the
    optimiser's lr to exactly what an uninterrupted run would use next.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, warmup: int, lr_min: float) -> None:
        self.timm = CosineLRScheduler(
            optimizer,
            t_initial=max(1, total - warmup),  # the cosine's length, after the warmup (warmup_prefix)
            lr_min=lr_min,
            warmup_t=warmup,
            warmup_lr_init=0.0,
            warmup_prefix=True,
            t_in_epochs=False,
        )
        self.optimizer = optimizer
        self.steps = 0  # optimiser steps taken

    @classmethod
    def for_run(cls, optimizer: torch.optim.Optimizer, cfg: OptimConfig, total: int) -> WarmupCosine:
        return cls(optimizer, total, cfg.warmup_steps, cfg.lr * cfg.min_lr_ratio)

    def step(self) -> None:
        """Call after each optimiser step: sets the lr of the next one."""
        self.steps += 1
        self.timm.step_update(self.steps)

    def get_last_lr(self) -> list[float]:
        """The lr the next step uses, per parameter group (torch's LRScheduler name)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"steps": self.steps, "timm": self.timm.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.timm.load_state_dict(state["timm"])
        self.steps = int(state["steps"])
        self.timm.step_update(self.steps)


class FiniteGuard:
    """Raises on a non-finite gradient norm without a host sync per step.

    ``update`` folds the step's norm into device tensors (the first bad step and its loss); ``check`` reads
    them, which syncs, so on CUDA the loop calls it only where it syncs anyway (progress lines) and before a
    checkpoint or an evaluation, which thus never see weights from a non-finite step. ``eager`` (on CPU,
    where nothing runs ahead) checks every step at once.
    """

    def __init__(self, device: torch.device, eager: bool = False) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), device=device)
        self.eager = eager

    def update(self, norm: torch.Tensor, loss: torch.Tensor, step: int) -> None:
        new = ~torch.isfinite(norm) & (self.first_bad < 0)
        self.first_bad = torch.where(new, step, self.first_bad)
        self.bad_loss = torch.where(new, loss.detach().float(), self.bad_loss)
        if self.eager:
            self.check()

    def check(self) -> None:
        step = int(self.first_bad)
        if step >= 0:
            raise FloatingPointError(
                f"non-finite gradient norm at step {step} (loss {float(self.bad_loss):.4g}); "
                "lower --lr or check data"
            )

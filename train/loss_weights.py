"""`--loss-weights equal`: the paper's rule for its lambdas (§C, "such that all loss components have the same
scale") applied to the data at hand, by a calibration fixed before training.

With the initial model (eval mode: no dropout, so the result is a function of the seed alone), the mean of
every unweighted loss over the first N training batches (the ones the run starts with) is measured; then
lambda_task = mean(action loss) / mean(task loss), so every weighted loss starts at the action loss's scale
(lambda_action = 1). A run with no action loss (`--synthetic-only`) scales every loss to 1. The means are
averaged over ranks, so every rank uses the same lambdas.
"""

from __future__ import annotations

import torch

from train.assemble import Run, classifies
from train.data import MixedBatches, make_loader, merge, to_device
from train.distributed import mean_over_ranks

REFERENCE = "action"


@torch.no_grad()
def mean_losses(run: Run, batches: int) -> dict[str, float]:
    """Each scored loss's mean over the first `batches` training batches, unweighted, initial model."""
    dataset = MixedBatches(run.streams, 0, batches, run.geometry, run.cfg.seed)
    sums: dict[str, torch.Tensor] = {}
    run.model.eval()
    for batch in make_loader(dataset, min(run.cfg.data.workers, batches)):
        video, targets = to_device(merge([batch[s.role] for s in run.streams]), run.dist.device)
        with run.autocast():
            preds = run.model(video, boxes=targets.get("ava_boxes"))
        _, per_task = run.loss_fn({k: v.float() for k, v in preds.items()}, targets)
        for name, value in per_task.items():
            sums[name] = sums.get(name, 0.0) + value.float()
    run.model.train()
    names = list(sums)  # the task table's order (the loss's), the same on every rank
    means = mean_over_ranks(torch.stack([sums[n] for n in names]) / batches).tolist() if names else []
    return dict(zip(names, means, strict=True))


def equal_scale_weights(means: dict[str, float]) -> dict[str, float]:
    """lambda_task = mean(action) / mean(task); 1 for the action loss. A loss whose mean is 0 (nothing to
    learn in the calibration batches) keeps weight 1."""
    reference = means.get(REFERENCE, 1.0)
    return {name: reference / mean if mean > 0 else 1.0 for name, mean in means.items()}


def calibrate(run: Run, batches: int) -> dict[str, float]:
    """Set `run.loss_fn.weights` to the equal-scale lambdas of the first `batches` batches; return them."""
    # The calibration's loader draws its base seed from torch's generator, which dropout and stochastic
    # depth use in training: fork it, so the run trains as it would have without the calibration.
    devices = [run.dist.device.index or 0] if run.dist.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        weights = equal_scale_weights(mean_losses(run, batches))
    run.loss_fn.weights = {**run.loss_fn.weights, **weights}
    return weights


def trained_weights(run: Run) -> dict[str, float]:
    """The lambdas of the losses this run trains (the CLS action loss when a real source classifies, each
    head's), for the record: the loss's table holds a default for every task, trained or not."""
    action = [REFERENCE] if classifies(run.sources.get("real", [])) else []
    heads = [*run.model.heads, *run.model.real_heads, *run.model.downstream]
    return {name: run.loss_fn.weight(name) for name in action + heads}

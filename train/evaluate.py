"""Evaluation at the end of a run (and every `--eval-every` steps): every source's val split, each scored its
own way, logged, and the task heads' predictions drawn.

A real source is scored by its benchmark's official metric: the task table (`train.tasks.TRAIN_TASKS`) names
the scorer of each task (`train.scorers`), and a source gets the one its tasks name (action top-1/top-5, Ego4D
OSCC/PNR, AVA frame-mAP). A synthetic source is scored per task (`evaluate_tasks`): depth AbsRel, normal angle
error, segmentation mIoU, pose MPJPE, box IoU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.distributed as dist

from train.assemble import Run
from train.data import EvalBatches, make_loader, to_device
from train.logger import MetricLogger, NullLogger, print0
from train.scorers import SCORERS, ScoreContext, Scorer
from train.sources import SourceData
from train.tasks import TRAIN_TASKS
from train.visualize import figure_at_eval


def scorer_of(source: SourceData) -> Scorer:
    """The scorer the source's tasks name in the task table; they must agree on one."""
    names = {TRAIN_TASKS[t].scorer for t in source.tasks if t in TRAIN_TASKS and TRAIN_TASKS[t].scorer}
    if len(names) != 1:
        have = ", ".join(sorted(names)) or "none"
        raise ValueError(
            f"source {source.name}: its tasks name {have} scorers; a real source needs exactly one"
        )
    return SCORERS[names.pop()]


def evaluate(run: Run, steps_done: int, logger: MetricLogger | NullLogger) -> dict[str, float]:
    """Every source's val split, scored; logged under `<role>/<source>/<metric>` and returned."""
    if run.guard:
        run.guard.check()
    results: dict[str, float] = {}
    for role, group in run.sources.items():
        for source in group:
            if "val" in source.splits:
                metrics = evaluate_source(run, role, source, steps_done)
                results.update({f"{role}/{source.name}/{k}": v for k, v in metrics.items()})
    if run.dist.main:  # the task heads' predictions on real val clips (the paper's Fig. 3/5)
        figure = figure_at_eval(run, steps_done, getattr(logger, "writer", None))
        if figure is not None:
            print0(run.dist.rank, f"predictions: {figure}")
    run.model.train()
    logger.log(steps_done, "eval", results)
    shown = " | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in results.items())
    print0(run.dist.rank, f"eval step {steps_done:06d} | {shown}")
    return results


def evaluate_source(run: Run, role: str, source: SourceData, steps_done: int) -> dict[str, float]:
    """One source's val split: per-task metrics for a synthetic source, the benchmark's for a real one."""
    cfg, d = run.cfg, run.dist
    detection = role == "real" and "ava" in source.tasks  # AVA: whole frames, every person
    batches = EvalBatches(source, "val", role, d.rank, d.world, cfg.eval.eval_batch_size, run.geometry,
                          views=cfg.eval.test_crops if role == "real" else 1, full_frame=detection,
                          label_tasks=cfg.model.real_tasks if role == "real" else ())  # fmt: skip
    loader = make_loader(batches, min(cfg.data.workers, len(batches)))
    if role == "synthetic":
        return evaluate_tasks(run.model, loader, d.device, run.autocast, run.num_seg)
    files = Path(cfg.out) / "eval" / f"step_{steps_done:08d}" / source.name
    context = ScoreContext(d.device, run.autocast, files, cfg.eval.ava_annotations)
    return scorer_of(source)(run.model, loader, context)


@torch.no_grad()
def evaluate_tasks(
    model: torch.nn.Module,
    batches: Iterable[dict],
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    num_seg: int,
) -> dict[str, float]:
    """Each task's metric of the task table (`train.tasks.TRAIN_TASKS`): depth AbsRel, normal angle error
    (deg), segm mIoU (%), pose MPJPE (mm), box IoU (slot i vs row i)."""
    model.eval()
    scored = [(name, t.bit, t.keys[0].name, t.metric) for name, t in TRAIN_TASKS.items() if t.metric]
    sums = {name: metric.start(num_seg) for name, _, _, metric in scored}
    for batch in batches:
        video, targets = to_device(batch, device)
        with autocast():
            preds = {k: v.float() for k, v in model(video).items()}
        keep = batch["valid"].to(device)
        for name, bit, key, metric in scored:
            if key in preds and key in targets:
                metric.update(preds, targets, keep & targets["mask"][:, bit], sums[name])
    _all_reduce(sums)
    out: dict[str, float] = {}
    for name, _, _, metric in scored:
        out.update(metric.result(sums[name]))
    return out


def _all_reduce(sums: dict[str, dict]) -> None:
    """Sum every task's sums over ranks, in place: the float ones in one float64 tensor, tensors each."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    floats = [(task, key) for task, part in sums.items() for key, v in part.items() if isinstance(v, float)]
    totals = torch.tensor([sums[task][key] for task, key in floats], dtype=torch.float64)
    dist.all_reduce(totals)
    for (task, key), value in zip(floats, totals.tolist(), strict=True):
        sums[task][key] = value
    for part in sums.values():
        for value in part.values():
            if isinstance(value, torch.Tensor):
                dist.all_reduce(value)

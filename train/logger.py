"""Rank-0 logging: one fixed-format progress line, `metrics.jsonl`, and TensorBoard scalars; `Meter` sums a
run's losses between progress lines."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from train.distributed import mean_over_ranks


def print0(rank: int, *args: object) -> None:
    if rank == 0:
        print(*args, flush=True)


class NullLogger:
    """What ranks other than 0 get: the same methods, doing nothing."""

    def log(self, step: int, kind: str, values: dict) -> None:
        pass

    def close(self) -> None:
        pass


class MetricLogger(NullLogger):
    """Appends `{"step", "kind", "time", ...}` rows to `out/metrics.jsonl` and mirrors them to TensorBoard."""

    def __init__(self, out: str | Path, tensorboard: bool = True) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.out / "metrics.jsonl", "a")  # noqa: SIM115 - open for the whole run
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tb"))
            except ImportError:  # tensorboard is optional: metrics.jsonl has everything
                self.writer = None

    def log(self, step: int, kind: str, values: dict) -> None:
        row = {"step": step, "kind": kind, "time": round(time.time(), 3), **values}
        self.jsonl.write(json.dumps(row, sort_keys=True) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()


def progress_line(
    step: int,
    total: int,
    losses: dict[str, float],
    lr: float,
    clips_per_s: float,
    wait_share: float,
    dt_ms: float,
) -> str:
    parts = " ".join(f"{task} {value:.3f}" for task, value in losses.items())
    return (
        f"step {step:06d}/{total:06d} | {parts} | lr {lr:.2e} | {dt_ms:.0f} ms/step | "
        f"clips/s {clips_per_s:.1f} | data wait {100 * wait_share:.0f}%"
    )


@dataclass(frozen=True)
class Progress:
    """Where a run stands when a progress line is due."""

    step: int  # optimiser steps done
    total: int
    lr: float
    clips_per_step: int  # clips of one optimiser step, all ranks together


class Meter:
    """Running sums between progress lines (losses on the device: no sync per step); `wait` is the time spent
    blocked on the loader. `totals` keep the whole run's wait and time."""

    def __init__(self) -> None:
        self.totals = {"wait": 0.0, "time": 0.0}
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps, self.wait, self.started = 0, 0.0, time.perf_counter()

    def add(self, metrics: dict[str, torch.Tensor], wait: float) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.float()
        self.steps, self.wait = self.steps + 1, self.wait + wait

    def report(self, progress: Progress, logger: NullLogger, rank: int, task_order: tuple[str, ...]) -> None:
        """The means since the last report (over ranks too), logged as a `train` row and printed as a line."""
        names = sorted(self.sums)
        means = mean_over_ranks(torch.stack([self.sums[k] for k in names]) / self.steps).tolist()
        values = dict(zip(names, means, strict=True))
        elapsed = time.perf_counter() - self.started
        clips_per_s = self.steps * progress.clips_per_step / elapsed
        share = self.wait / max(elapsed, 1e-9)
        self.totals["wait"] += self.wait
        self.totals["time"] += elapsed
        values.update({"lr": progress.lr, "clips_per_s": clips_per_s, "data_wait_share": share})
        logger.log(progress.step, "train", values)
        losses = {"loss": values["loss"], **{k: values[k] for k in task_order if k in values}}
        print0(rank, progress_line(progress.step, progress.total, losses, progress.lr, clips_per_s, share,
                                   1000 * elapsed / self.steps))  # fmt: skip
        self.reset()

    @property
    def wait_share(self) -> float:
        """The whole run's share of training time spent waiting for data."""
        return self.totals["wait"] / max(self.totals["time"], 1e-9)

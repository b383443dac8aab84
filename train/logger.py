"""Rank-0 logging: one fixed-format progress line, `metrics.jsonl`, and TensorBoard scalars."""

from __future__ import annotations

import json
import time
from pathlib import Path


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

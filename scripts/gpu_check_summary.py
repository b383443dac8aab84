"""The closing tables of ``scripts/gpu_check.sh``: bench rows, the kernel profile, the gpu tests' result and
the training run, read from the step logs and JSON in OUT. Standard library only.

    python scripts/gpu_check_summary.py OUT CLIPS_PER_STEP
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def bench_rows(out: Path) -> None:
    columns = f"{'clips/s':>8} {'TFLOP/s':>8} {'MFU':>6} {'vs plain':>8} {'peak GiB':>8} {'warm s':>7}"
    print(f"  {'case':<58} {columns}")
    for tag in ("eager", "compiled"):
        path = out / f"bench_{tag}.json"
        if not path.exists():
            continue
        saved = json.loads(path.read_text())
        for row in saved["rows"]:
            mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] else "-"
            peak = f"{row['peak_gib']:.2f}" if row.get("peak_gib") is not None else "-"
            print(
                f"  {tag + ': ' + row['name']:<58} {row['clips_per_s']:8.1f} {row['tflops']:8.1f} {mfu:>6} "
                f"{row['ratio_to_plain']:8.3f} {peak:>8} {row['warmup_s']:7.1f}"
            )
        for name, why in saved.get("failed", {}).items():
            print(f"  {tag + ': ' + name:<58} {why[:120]}")


def profile(out: Path) -> None:
    path = out / "bench_eager.json"
    report = json.loads(path.read_text()).get("profile") if path.exists() else None
    if not report:
        return
    print(f"  profile of eager {report['case']!r}: {report['ms_per_step']:.1f} ms a step in {report['what']}")
    for row in report["top"]:
        name = row["name"] if len(row["name"]) <= 100 else row["name"][:97] + "..."
        print(f"    {row['ms_per_step']:8.2f} ms {100 * row['share']:5.1f}%  {name}")


def gpu_tests(out: Path) -> None:
    log = out / "gpu_tests.log"
    lines = [line for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    if lines:
        print(f"  gpu tests: {lines[-1].strip('= ')}")


def training(out: Path, clips_per_step: int) -> None:
    bench_log = out / "train_bench.log"
    for line in bench_log.read_text().splitlines() if bench_log.exists() else []:
        if line.startswith("training step"):
            print("  train.bench: " + line.split(": ", 1)[-1])
    metrics = out / "train" / "metrics.jsonl"
    if not metrics.exists():
        return
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["kind"] == "train"]
    if len(train) < 2:
        return
    steady = train[1:]  # the first interval compiles
    steps = [b["step"] - a["step"] for a, b in zip(train, steady, strict=False)]
    seconds = [n * clips_per_step / r["clips_per_s"] for n, r in zip(steps, steady, strict=True)]
    clips = sum(n * clips_per_step for n in steps) / sum(seconds)
    wait = sum(r["data_wait_share"] * t for r, t in zip(steady, seconds, strict=True)) / sum(seconds)
    print(
        f"  training run: {train[-1]['step']} steps, loss {train[0]['loss']:.3f} -> {train[-1]['loss']:.3f}, "
        f"{clips:.1f} clips/s after the first interval, data-wait share {100 * wait:.1f}%"
    )


def main() -> None:
    out, clips_per_step = Path(sys.argv[1]), int(sys.argv[2])
    bench_rows(out)
    profile(out)
    gpu_tests(out)
    training(out, clips_per_step)


if __name__ == "__main__":
    main()

"""Training curves of several runs side by side, read from their `metrics.jsonl` (`train.logger`).

    python -m train.plot runs/pvit runs/mt runs/plain --out curves.png

One panel per train loss (the total and each task's) and one per eval metric; each run is one line of
its own colour in every panel it has data for, labelled by its directory name. A resumed run appends
rows for steps it had already logged: the last row of each step wins. Counts (`videos`, `clips`) and
throughput figures are left out; they are not curves anyone compares.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.fileio import FlagError, OneLineParser, first_line

METRICS = "metrics.jsonl"
SKIP = {"step", "kind", "time", "lr", "clips_per_s", "data_wait_share", "grad_norm", "videos", "clips"}
Series = dict[str, list[tuple[int, float]]]  # metric name -> [(step, value)] sorted by step


class PlotError(Exception):
    """A run directory without readable metrics: one line, exit 2."""


def read_run(run_dir: Path | str) -> dict[str, Series]:
    """`{"train": {name: [(step, value)]}, "eval": {...}}` of one run (last row per step wins)."""
    path = Path(run_dir) / METRICS
    if not Path(run_dir).is_dir():
        raise PlotError(f"{run_dir}: no such directory")
    if not path.is_file():
        raise PlotError(f"{run_dir}: no {METRICS} (is it a training run's --out directory?)")
    latest: dict[str, dict[str, dict[int, float]]] = {"train": {}, "eval": {}}
    rows = 0
    for row in _rows(path):
        if row.get("kind") not in latest or not isinstance(row.get("step"), int):
            continue  # not a metrics row, or a line cut short (a killed run) that parsed as something else
        rows += 1
        for name, value in row.items():
            if name.rsplit("/", 1)[-1] in SKIP or isinstance(value, bool):
                continue  # eval names are <role>/<source>/<metric>
            if isinstance(value, (int, float)) and math.isfinite(value):
                latest[row["kind"]].setdefault(name, {})[row["step"]] = float(value)
    if rows == 0:
        raise PlotError(f"{path}: no train or eval rows")
    return {
        kind: {name: sorted(steps.items()) for name, steps in series.items()}
        for kind, series in latest.items()
    }


def _rows(path: Path) -> list[dict]:
    """The JSON objects of a metrics file, one per line; a line that is not one (cut short by a killed run,
    bytes that are not UTF-8) is skipped, so one bad line never loses a run's curves."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PlotError(f"{path}: cannot read it ({error.strerror or error})") from None
    rows = []
    for line in data.splitlines():
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Directory names, with the parent prepended where two runs share a name."""
    names = [Path(d).resolve().name for d in run_dirs]
    return [
        f"{Path(d).resolve().parent.name}/{n}" if names.count(n) > 1 else n
        for d, n in zip(run_dirs, names, strict=True)
    ]


def panels(runs: list[dict[str, Series]]) -> list[tuple[str, str]]:
    """(kind, metric) of every panel: train `loss` first, then task losses, then eval metrics, sorted."""
    out = []
    for kind in ("train", "eval"):
        names = sorted({name for run in runs for name in run[kind]}, key=lambda n: (n != "loss", n))
        out += [(kind, name) for name in names]
    return out


def plot_runs(run_dirs: list[Path | str], columns: int = 4) -> Figure:
    """The figure: one axes per panel, one line per run that has the metric."""
    runs = [read_run(d) for d in run_dirs]
    labels = run_labels([Path(d) for d in run_dirs])
    chosen = panels(runs)
    if not chosen:
        raise PlotError("no metric to plot in " + ", ".join(str(d) for d in run_dirs))
    columns = min(columns, len(chosen))
    rows = -(-len(chosen) // columns)
    figure = Figure(figsize=(3.4 * columns, 2.6 * rows + 0.5), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for index, (kind, name) in enumerate(chosen):
        axes = figure.add_subplot(rows, columns, index + 1)
        values: list[float] = []
        for run, label, colour in zip(runs, labels, colours, strict=True):
            series = run[kind].get(name)
            if series:
                steps, ys = zip(*series, strict=True)
                axes.plot(
                    steps,
                    ys,
                    label=label,
                    color=colour,
                    marker="o" if len(steps) < 12 else None,
                    markersize=3,
                    linewidth=1.4,
                )
                values += ys
        if kind == "train" and values and min(values) > 0 and max(values) / min(values) > 20:
            axes.set_yscale("log")
        axes.set_title(f"{kind}: {name}", fontsize=9)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
    handles, names = [], []
    for axes in figure.axes:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            if label not in names:
                handles.append(handle)
                names.append(label)
    figure.legend(handles, names, loc="outside upper center", ncols=min(len(names), 6), fontsize=9)
    return figure


def main(argv: list[str] | None = None) -> Path:
    parser = OneLineParser(prog="python -m train.plot", description="Overlay the curves of runs.")
    parser.add_argument("runs", nargs="+", type=Path, help="training --out directories (with metrics.jsonl)")
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="PNG path (default curves.png)")
    parser.add_argument("--columns", type=int, default=4, help="panels per row (default 4)")
    args = parser.parse_args(argv)
    if args.columns < 1:
        raise PlotError(f"--columns must be at least 1, got {args.columns}")
    figure = plot_runs(args.runs, args.columns)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.out)
    except OSError as error:
        raise PlotError(f"--out {args.out}: cannot write it ({error.strerror or error})") from None
    print(args.out)
    return args.out


def cli() -> None:
    try:
        main()
    except (PlotError, FlagError) as error:
        print(f"train.plot: error: {first_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    cli()

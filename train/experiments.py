"""Run the rows of one of the paper's tables over seeds and write the table in the paper's layout.

    python -m train.experiments table1 --shards shards --scale toy --seeds 3
    python -m train.experiments table4a --shards /data/shards --scale paper --seeds 3 -- --workers 16

A table is a list of rows; a row is a name plus trainer flags laid over the scale's base recipe
(`--scale toy`: train/recipes/toy_procedural.yaml; `--scale paper`: the dataset's recipe, by default
something_else_pvit.yaml, where the paper ran every table this runner knows). Each (row, seed) trains
in-process (`train.main.main`) into `OUT/<row>/seed<k>` and leaves `final.json` there; a run whose
`final.json` exists is not run again, so an interrupted table picks up where it stopped. Then
`OUT/results.md` gets the table (top-1 and top-5 as mean ± std over seeds, the paper's number beside
each row), the command that made it, the date and the training curves of each row's first seed.

Trainer flags after `--` go to every run (device, workers, a smaller batch...); a row's own switches are
laid last, so they win. The paper's numbers quoted here are Something-Else compositional top-1 from
the ICCV'23 submission PDF (ofir1080/PromptonomyViT : docs/_ICCV_23____PromptonomyViT.pdf).
"""

from __future__ import annotations

import datetime
import json
import math
import shlex
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.fileio import OneLineParser, atomic_write_text, first_line
from pipeline.schema import TASKS
from pipeline.storage import is_url

RECIPES = Path(__file__).resolve().parent / "recipes"
TOY_RECIPE = RECIPES / "toy_procedural.yaml"
PAPER_REAL = "something-else"  # the paper's ablations (Tables 1, 4, 6) are all on Something-Else
FINAL = "final.json"  # a finished run's metrics and the argv that made it
PRETRAIN = "pretrain"  # the stage-1 subdirectory of a two-stage row's run
SCALES = ("toy", "paper")
RUNNER_FLAGS = ("--recipe", "--shards", "--out", "--seed", "--resume")  # per run: not for the flags after --
# --loss-weights is the runner's own flag (it names the default --out), so not after -- either.
# The paper's synthetic sources (its Table 7) by our adapter names; ElderSim is kist-synadl.
PAPER_SYNTHETIC = (
    ("phav", "PHAV"),
    ("surreact", "SURREACT"),
    ("kist-synadl", "ElderSim"),
    ("hypersim", "HyperSim"),
    ("ehoi", "EHOI"),
)


@dataclass(frozen=True)
class Row:
    """One line of a table: trainer flags over the base recipe, and the paper's number for it."""

    name: str  # also the run directory's name
    label: str  # what the paper calls it
    flags: tuple[str, ...] = ()
    paper: str = ""  # the paper's Something-Else top-1 for this row ("" = not reported)
    pretrain: tuple[str, ...] | None = None  # stage-1 flags; the row then starts --init-from its checkpoint


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    rows: tuple[Row, ...]
    note: str = ""


class ExperimentError(ValueError):
    """A bad table, scale, flag or output directory: one line on stderr, exit 2."""


# ----------------------------------------------------------------------------- the tables


def table1(scale: str) -> Table:
    """Paper Table 1 (compositional): the baselines against PViT."""
    rows = (
        Row("plain", "MViTv2", ("--mode", "plain"), "63.3"),
        Row("mt", "MViTv2 MT", ("--mode", "mt"), "63.0"),
        Row("vpt", "MViTv2 VPT", ("--mode", "vpt"), "53.0"),
        Row("pvit", "PViT", ("--mode", "pvit"), "65.5"),
    )
    return Table("table1", "Table 1: PViT and the baselines (Something-Else compositional)", rows)


def table4a(scale: str) -> Table:
    """Paper Table 4a, the role of prompts and tuning (its MViTv2 and VPT rows are table1's)."""
    rows = (
        Row("mt", "MViTv2 MT", ("--mode", "mt"), "62.7"),
        Row("op", "MViTv2 OP (one prompt)", ("--mode", "pvit", "--one-prompt"), "63.5"),
        Row("np", "MViTv2 NP (neutral prompts)", ("--mode", "np"), "63.4"),
        Row("pvit_vpt", "PViT VPT (frozen backbone)", ("--mode", "pvit", "--freeze-backbone"), "53.9"),
        Row("pvit", "PViT", ("--mode", "pvit"), "65.5"),
    )
    note = "The paper's MViTv2 (63.3) and MViTv2 VPT (53.0) rows of Table 4a are table1's plain and vpt."
    return Table("table4a", "Table 4a: the role of prompts and tuning", rows, note)


def table4c(scale: str) -> Table:
    """Paper Table 4c, one auxiliary task at a time, S1, S2 and all of them."""
    single = [
        ("depth", "Depth", "64.8"),
        ("segm", "Segmentation", "65.0"),
        ("normal", "Normals", "63.9"),
        ("pose3d", "3D poses", "64.1"),
        ("boxes", "2D boxes", "64.7"),
    ]
    rows = (
        Row("none", "no auxiliary task (MViTv2)", ("--mode", "plain"), "63.3"),
        *(Row(task, label, ("--mode", "pvit", "--tasks", task), paper) for task, label, paper in single),
        Row(
            "S1",
            "S1 = boxes, segm, depth (the paper's best combination)",
            ("--mode", "pvit", "--tasks", "S1"),
            "65.5",
        ),
        Row("S2", "S2 = pose3d, normal, segm (Fig. 4)", ("--mode", "pvit", "--tasks", "S2")),
        Row("all", "all tasks", ("--mode", "pvit"), "65.1"),
    )
    note = (
        "Rows as the paper's Table 4c: each task alone, its 'best combination' (depth + segm + boxes, which "
        "is Fig. 4's S1) and all five; S2 (Fig. 4) has no number in the paper. A task the synthetic sources "
        "do not provide has nothing to train its prompt."
    )
    return Table("table4c", "Table 4c: contribution of the auxiliary tasks", rows, note)


def table6(scale: str) -> Table:
    """Paper Table 6 (top): one synthetic dataset at a time, then all of them."""
    paper = {"phav": "64.2", "surreact": "63.9", "kist-synadl": "63.9", "hypersim": "64.1", "ehoi": "65.0"}
    sources = [("procedural", "procedural")] if scale == "toy" else list(PAPER_SYNTHETIC)
    rows = [Row("none", "no synthetic data (MViTv2)", ("--mode", "plain"), "63.3")]
    rows += [
        Row(name, label, ("--mode", "pvit", "--synthetic", name), paper.get(name, ""))
        for name, label in sources
    ]
    if len(sources) > 1:
        every = ",".join(name for name, _ in sources)
        rows.append(Row("all", "all synthetic datasets", ("--mode", "pvit", "--synthetic", every), "65.1"))
    note = "Table 6's bottom half (one task at a time) is table4c. " + (
        "At toy scale there is only one synthetic source, the procedural one, so this table is its one "
        "row against no synthetic data; the paper's per-dataset rows need --scale paper."
        if scale == "toy"
        else "ElderSim is the kist-synadl adapter; every source must be built under --shards."
    )
    return Table("table6", "Table 6: contribution of each synthetic dataset", tuple(rows), note)


def ablations(scale: str) -> Table:
    """The supplementary §A.2 ablations and Fig. 4b's synthetic fraction."""
    rows = (
        Row("plain", "MViTv2 (reference)", ("--mode", "plain"), "63.3"),
        Row("pvit", "PViT (synthetic fraction 1.0)", ("--mode", "pvit"), "65.5"),
        Row(
            "shuffled", "shuffled synthetic labels", ("--mode", "pvit", "--shuffle-synthetic-labels"), "63.4"
        ),
        Row("prompts20", "20 prompts per task", ("--mode", "pvit", "--prompts-per-task", "20"), "65.4"),
        Row(
            "fraction0.25",
            "synthetic fraction 0.25 (Fig. 4b)",
            ("--mode", "pvit", "--synthetic-fraction", "0.25"),
        ),
        Row(
            "fraction0.5",
            "synthetic fraction 0.5 (Fig. 4b)",
            ("--mode", "pvit", "--synthetic-fraction", "0.5"),
        ),
        Row(
            "pretrain_finetune",
            "pretrain on synthetic (MT heads), then fine-tune plain",
            ("--mode", "plain"),
            "61.9",
            pretrain=("--mode", "mt", "--synthetic-only"),
        ),
        Row(
            "pvit_pretrain_finetune",
            "pretrain PViT on synthetic, then fine-tune PViT",
            ("--mode", "pvit"),
            pretrain=("--mode", "pvit", "--synthetic-only"),
        ),
        Row("real_prompts", "PViT + real boxes prompt", ("--mode", "pvit", "--real-tasks", "boxes"), "66.7"),
    )
    note = (
        "pretrain_finetune runs twice per seed: stage 1 trains MT heads on the synthetic stream only "
        f"(<row>/seed<k>/{PRETRAIN}), stage 2 starts a plain model from its backbone (--init-from). "
        "pvit_pretrain_finetune does the same with PViT in both stages (prompts and task heads start fresh "
        "in stage 2, which trains on both streams); the paper reports no number for it. "
        "The paper reports real_prompts as +1.2 over PViT (65.5 + 1.2) and Fig. 4b's fractions as a "
        "curve only."
    )
    return Table("ablations", "Ablations (supplementary §A.2, Fig. 4b)", rows, note)


TABLES: dict[str, Callable[[str], Table]] = {
    "table1": table1,
    "table4a": table4a,
    "table4c": table4c,
    "table6": table6,
    "ablations": ablations,
}


# ----------------------------------------------------------------------------- the command line


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m train.experiments",
        description="Run a paper table's rows over seeds; write OUT/results.md. "
        "Trainer flags after `--` go to every run.",
    )
    parser.add_argument("table", help=f"one of {', '.join(TABLES)}")
    parser.add_argument("--shards", default="shards", help="the trainer's --shards (default shards)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per row (default 3)")
    parser.add_argument("--scale", default="toy", help="toy (procedural, CPU) or paper (default toy)")
    parser.add_argument(
        "--recipe", help="base recipe (default: toy_procedural.yaml, or the --real dataset's)"
    )
    parser.add_argument("--real", help=f"--scale paper: the dataset whose recipe is the base ({PAPER_REAL})")
    parser.add_argument(
        "--out", help="where the runs and results.md go (default runs/experiments/TABLE-SCALE)"
    )
    parser.add_argument(
        "--steps", type=int, help="optimiser steps of every run (default: the recipe's epochs)"
    )
    parser.add_argument(
        "--loss-weights",
        help="the trainer's --loss-weights for every run (paper | equal | TASK=VALUE,...; default: the "
        "recipe's); "
        "a rule other than the recipe's gets its own default --out",
    )
    parser.add_argument("--rows", help="run only these rows of the table (comma-separated names)")
    parser.add_argument("--dry-run", action="store_true", help="print the trainer commands, run nothing")
    return parser


@dataclass
class Plan:
    """A parsed invocation: which table, on what base, with which extra trainer flags."""

    table: Table
    seeds: int
    scale: str
    recipe: Path
    shards: str
    out: Path
    steps: int | None
    extra: tuple[str, ...]
    dry_run: bool
    command: str


def parse_args(argv: list[str]) -> Plan:
    own, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    if args.table not in TABLES:
        raise ExperimentError(f"unknown table {args.table!r}; choose from {', '.join(TABLES)}")
    if args.scale not in SCALES:
        raise ExperimentError(f"--scale must be one of {', '.join(SCALES)}, got {args.scale!r}")
    if args.seeds < 1:
        raise ExperimentError(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        raise ExperimentError(f"--steps must be >= 1, got {args.steps}")
    managed = sorted({flag.partition("=")[0] for flag in extra} & {*RUNNER_FLAGS, "--loss-weights"})
    if managed:
        raise ExperimentError(f"{', '.join(managed)} after `--`: the runner sets these per run (see --help)")
    recipe = Path(args.recipe) if args.recipe else shown(base_recipe(args.scale, args.real))
    if not recipe.is_file():
        raise ExperimentError(f"--recipe {recipe}: no such file")
    # A URL is checked by the first run's trainer (it needs that run's --storage-option flags, after `--`).
    if not args.dry_run and not is_url(args.shards) and not Path(args.shards).is_dir():
        raise ExperimentError(f"--shards {args.shards}: no such directory (build the shards first)")
    suffix = f"-{args.loss_weights}" if args.loss_weights else ""  # another rule, another directory
    out = Path(args.out) if args.out else Path("runs") / "experiments" / f"{args.table}-{args.scale}{suffix}"
    if args.loss_weights:
        extra = [*extra, "--loss-weights", args.loss_weights]
    command = "python -m train.experiments " + shlex.join(argv)
    table = only_rows(TABLES[args.table](args.scale), args.rows)
    return Plan(table, args.seeds, args.scale, recipe, args.shards, out, args.steps, tuple(extra),
                args.dry_run, command)  # fmt: skip


def only_rows(table: Table, rows: str | None) -> Table:
    """The table with only the named rows (`--rows a,b`), in the table's order; all rows without `--rows`."""
    if not rows:
        return table
    wanted = [name.strip() for name in rows.split(",") if name.strip()]
    unknown = sorted(set(wanted) - {row.name for row in table.rows})
    if unknown:
        have = ", ".join(row.name for row in table.rows)
        raise ExperimentError(f"--rows {','.join(unknown)}: not rows of {table.name} (its rows: {have})")
    return replace(table, rows=tuple(row for row in table.rows if row.name in wanted))


def shown(path: Path) -> Path:
    """Relative to the working directory when inside it: shorter commands, the same file."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def base_recipe(scale: str, real: str | None) -> Path:
    """toy: toy_procedural.yaml; paper: `<real>_pvit.yaml` (Something-Else unless --real names another)."""
    if scale == "toy":
        if real:
            raise ExperimentError("--real picks a paper-scale recipe; with --scale toy give --recipe instead")
        return TOY_RECIPE
    name = (real or PAPER_REAL).replace("-", "_")
    path = RECIPES / f"{name}_pvit.yaml"
    if not path.is_file():
        have = ", ".join(sorted(p.stem.removesuffix("_pvit") for p in RECIPES.glob("*_pvit.yaml")))
        raise ExperimentError(f"--real {real}: no recipe {path.name} (recipes: {have})")
    return path


# ----------------------------------------------------------------------------- runs


def run_dir(plan: Plan, row: Row, seed: int) -> Path:
    return plan.out / row.name / f"seed{seed}"


def trainer_argv(plan: Plan, row_flags: tuple[str, ...], out: Path, seed: int) -> list[str]:
    """Recipe, then the runner's bookkeeping and the user's flags, then the row's switches (last wins)."""
    steps = ["--steps", str(plan.steps)] if plan.steps else []
    return [
        "--recipe", str(plan.recipe), "--shards", plan.shards, "--out", str(out), "--seed", str(seed),
        "--resume", "latest", *plan.extra, *steps, *row_flags,
    ]  # fmt: skip


def stage_argvs(plan: Plan, row: Row, seed: int, init_from: str) -> list[tuple[Path, list[str]]]:
    """(out, argv) of each stage of one run: the pretraining stage first, when the row has one."""
    final = run_dir(plan, row, seed)
    if row.pretrain is None:
        return [(final, trainer_argv(plan, row.flags, final, seed))]
    stage1 = final / PRETRAIN
    return [
        (stage1, trainer_argv(plan, row.pretrain, stage1, seed)),
        (final, trainer_argv(plan, (*row.flags, "--init-from", init_from), final, seed)),
    ]


def check_rows(plan: Plan) -> None:
    """Every stage of every row parses into a TrainConfig, before anything trains (a typo fails at once)."""
    from train.config import parse_config

    for row in plan.table.rows:
        for _, argv in stage_argvs(plan, row, 0, "stage1.pt"):
            try:
                parse_config(argv)
            except ValueError as error:
                raise ExperimentError(f"row {row.name}: {error}") from None


def read_final(out: Path) -> dict | None:
    path = out / FINAL
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a torn write: run it again (resumes from its last checkpoint)


def write_final(out: Path, data: dict) -> None:
    """Atomically, so a killed runner never leaves a half-written marker that reads as finished."""
    atomic_write_text(out / FINAL, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def train_once(out: Path, argv: list[str]) -> dict:
    """One trainer run, unless its final.json exists; refuses a directory another command made."""
    done = read_final(out)
    made_with = done.get("argv") if done is not None else started_with(out)
    if made_with is not None and made_with != argv:
        state = "holds a run" if done is not None else "holds a half-finished run"
        raise ExperimentError(
            f"{out} {state} made with other flags ({shlex.join(map(str, made_with))}); "
            "give another --out or delete it"
        )
    if done is not None:
        print(f"[experiments] {out}: finished before, skipped", flush=True)
        return done
    from train import main as trainer  # torch loads only when something trains

    print(f"[experiments] {out}: pvit-train {shlex.join(argv)}", flush=True)
    result = trainer.main(argv)
    if result.get("stopped"):
        raise ExperimentError(f"{out}: the run stopped early (--stop-after?); its metrics are not final")
    out.mkdir(parents=True, exist_ok=True)
    data = {"argv": argv, **summary_of(result, argv)}
    write_final(out, data)
    return data


def started_with(out: Path) -> list | None:
    """The trainer argv of the newest checkpoint in `out` (a run that stopped half-way), else None."""
    from train.checkpoint import list_checkpoints, read_sidecar

    found = list_checkpoints(out)
    sidecar = read_sidecar(found[-1]) if found else None
    argv = sidecar.get("argv") if sidecar else None
    return argv if isinstance(argv, list) else None


def summary_of(result: dict, argv: list[str]) -> dict:
    """top-1/top-5 of the first real source, and the rest of the trainer's final dict."""
    from train.config import parse_config

    cfg = parse_config(argv)
    evals = result.get("eval", {})
    data = cfg.data
    real = data.real[0].partition(":")[0] if data.real and not data.synthetic_only else ""
    return {
        "top1": evals.get(f"real/{real}/top1"),
        "top5": evals.get(f"real/{real}/top5"),
        "steps": result.get("steps"),
        "eval": evals,
        "train_seconds": result.get("train_seconds"),
        "wall_seconds": result.get("wall_seconds"),
        "loss_weights": result.get("loss_weights"),  # the lambdas the run trained with (calibrated: equal)
    }


def last_checkpoint(out: Path) -> Path:
    from train.checkpoint import list_checkpoints

    found = list_checkpoints(out)
    if not found:
        raise ExperimentError(f"{out}: stage 1 finished but left no checkpoint to fine-tune from")
    return found[-1]


def run_row(plan: Plan, row: Row, seed: int) -> dict:
    """Every stage of one (row, seed); a finished stage is skipped, the next starts from its checkpoint."""
    stages = stage_argvs(plan, row, seed, init_from="")
    if len(stages) == 1:
        return train_once(*stages[0])
    stage1 = stages[0][0]
    train_once(stage1, stages[0][1])
    return train_once(*stage_argvs(plan, row, seed, str(last_checkpoint(stage1)))[1])


def dry_run(plan: Plan) -> None:
    for row in plan.table.rows:
        for seed in range(plan.seeds):
            stage1 = run_dir(plan, row, seed) / PRETRAIN
            init = f"$(ls {shlex.quote(str(stage1))}/checkpoints/step_*.pt | tail -n 1)"
            for _, argv in stage_argvs(plan, row, seed, "INIT_FROM"):
                line = "pvit-train " + shlex.join(argv)
                print(line.replace("INIT_FROM", f'"{init}"'))


# ----------------------------------------------------------------------------- results.md


def mean_std(values: list[float]) -> str:
    """`mean ± sample std` in percent with one decimal; one value has no spread to show."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def finite(results: list[dict], key: str) -> list[float]:
    values = (r.get(key) for r in results)
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def results_markdown(plan: Plan, results: dict[str, list[dict]], curves: str) -> str:
    table = plan.table
    steps = sorted({int(r["steps"]) for runs in results.values() for r in runs if r.get("steps") is not None})
    lines = [
        f"# {table.title}",
        "",
        f"Scale **{plan.scale}**: base recipe `{plan.recipe.as_posix()}`, shards `{plan.shards}`, "
        f"seeds 0..{plan.seeds - 1}, steps per run {', '.join(str(s) for s in steps) or 'n/a'}.",
        "",
        "| row | what | top-1 (%) | top-5 (%) | seeds | paper top-1 (Something-Else) |",
        "|---|---|---|---|---|---|",
    ]
    for row in table.rows:
        runs = results.get(row.name, [])
        top1, top5 = finite(runs, "top1"), finite(runs, "top5")
        cells = [row.name, row.label, mean_std(top1), mean_std(top5), str(len(top1)), row.paper or "–"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Top-1 and top-5 are the final evaluation's, mean ± sample standard deviation over seeds. The paper "
        "column is Something-Else compositional top-1 from the paper (ICCV'23 submission), one run each; at "
        "toy scale compare orderings, not values.",
    ]
    if table.note:
        lines += ["", table.note]
    lines += loss_weight_lines(table.rows, results)
    lines += [
        "",
        f"Command: `{plan.command}`",
        "",
        f"Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        "",
    ]
    lines += [f"![training curves, seed 0 of each row]({curves})", ""] if curves else []
    return "\n".join(lines)


def loss_weight_lines(rows: tuple[Row, ...], results: dict[str, list[dict]]) -> list[str]:
    """The lambdas each row trained with, mean over its seeds (`--loss-weights equal` calibrates them per
    run, so they differ a little from seed to seed); a task a row does not train is blank."""
    named = {task for runs in results.values() for run in runs for task in run.get("loss_weights") or {}}
    if not named:
        return []
    # The schema's task order (real_boxes beside boxes), whatever order a final.json kept them in.
    order = {task: i for i, task in enumerate(TASKS)}
    tasks = sorted(named, key=lambda task: (order.get(task.removeprefix("real_"), len(order)), task))
    lines = ["", "Loss weights (λ) each row trained with, mean over its seeds:", ""]
    lines += ["| row | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for row in rows:
        weights = [run["loss_weights"] for run in results.get(row.name, []) if run.get("loss_weights")]
        if weights:
            cells = [_mean_weight([w[task] for w in weights if task in w]) for task in tasks]
            lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines


def _mean_weight(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3g}" if values else ""


def draw_curves(plan: Plan) -> tuple[str, str]:
    """curves.png of each row's first seed via train.plot; ('', reason) when it cannot be drawn."""
    try:
        from train.plot import PlotError, plot_runs
    except ImportError as error:  # matplotlib is optional for the runner
        return "", f"no curves: {error}"
    dirs = [
        run_dir(plan, row, 0)
        for row in plan.table.rows
        if (run_dir(plan, row, 0) / "metrics.jsonl").is_file()
    ]
    if not dirs:
        return "", "no curves: no run wrote metrics.jsonl"
    try:
        figure = plot_runs(list(dirs))
    except PlotError as error:
        return "", f"no curves: {error}"
    path = plan.out / "curves.png"
    figure.savefig(path)
    return path.name, ""


def run_table(plan: Plan) -> Path:
    """Every (row, seed) not finished yet, then results.md, then curves.png (results.md is written first,
    so a run whose curves cannot be drawn still leaves its table); returns results.md's path."""
    results: dict[str, list[dict]] = {}
    for row in plan.table.rows:
        results[row.name] = [run_row(plan, row, seed) for seed in range(plan.seeds)]
    path = plan.out / "results.md"
    atomic_write_text(path, results_markdown(plan, results, ""))
    curves, why = draw_curves(plan)
    text = results_markdown(plan, results, curves) + (f"\n({why})\n" if why else "")
    atomic_write_text(path, text)
    print(text)
    print(f"[experiments] wrote {path}")
    return path


def main(argv: list[str] | None = None) -> Path | None:
    """Parse, check every row's config, then run the table (or print its commands with --dry-run)."""
    plan = parse_args(list(sys.argv[1:] if argv is None else argv))
    check_rows(plan)
    if plan.dry_run:
        dry_run(plan)
        return None
    plan.out.mkdir(parents=True, exist_ok=True)
    return run_table(plan)


def cli() -> None:
    """A bad table, flag or shard directory is one line on stderr and exit code 2, as train/main.py."""
    try:
        main()
    except (ValueError, FileNotFoundError) as error:  # ExperimentError, the trainer's refusals
        print(f"train.experiments: error: {first_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    cli()

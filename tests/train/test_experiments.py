"""`python -m train.experiments`: every table's rows are valid trainer configs, and the runner trains each
(row, seed) once, writes results.md with mean ± std over seeds, and chains a two-stage row's checkpoint."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

import train.main
from train import experiments
from train.config import parse_config
from train.experiments import PRETRAIN, TABLES, Row, Table

# The fixture's clips are 4 x 32 x 32 (tests/conftest.py): the toy recipe's 56-pixel crops need smaller flags.
SMALL = [
    "--batch-size", "4", "--synthetic-batch-size", "4", "--workers", "0", "--log-every", "2",
    "--eval-batch-size", "8", "--crop-size", "32", "--train-scale", "32", "40", "--test-crops", "1",
]  # fmt: skip


def runner_args(table: str, shards: Path, out: Path, *extra: str) -> list[str]:
    return [table, "--shards", str(shards), "--out", str(out), "--steps", "2", *extra, "--", *SMALL]


def use_table(monkeypatch: pytest.MonkeyPatch, *rows: Row) -> None:
    monkeypatch.setitem(TABLES, "tiny", lambda scale: Table("tiny", "A tiny table", rows))


def count_trainer_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record every in-process trainer run (the runner looks train.main.main up at call time)."""
    calls: list[list[str]] = []
    real_main = train.main.main

    def counting(argv: list[str] | None = None) -> dict:
        calls.append(list(argv or []))
        return real_main(argv)

    monkeypatch.setattr(train.main, "main", counting)
    return calls


def table_lines(text: str) -> dict[str, list[str]]:
    """Row name -> the cells of its line in results.md's first markdown table (the results; λ follow)."""
    first_table = text.split("\n\n| row |")[1].split("\n\n")[0]
    rows = [
        line.strip("|").split("|") for line in ("| row |" + first_table).splitlines() if line.startswith("| ")
    ]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows[1:]}  # rows[0] is the header


@pytest.mark.parametrize("scale", experiments.SCALES)
@pytest.mark.parametrize("name", list(TABLES))
def test_every_row_of_every_table_is_a_valid_train_config(name: str, scale: str, tmp_path: Path) -> None:
    plan = experiments.parse_args([name, "--shards", str(tmp_path), "--scale", scale, "--seeds", "1"])
    assert plan.table.rows and len({row.name for row in plan.table.rows}) == len(plan.table.rows)
    for row in plan.table.rows:
        for out, argv in experiments.stage_argvs(plan, row, 0, "stage1.pt"):
            config = parse_config(argv)
            assert config.recipe == str(plan.recipe) and config.out == str(out)
            # the row's switches come last, so they are what the config holds
            assert argv[-len(row.flags) :] == list(row.flags) or row.pretrain is not None
            modes = [argv[i + 1] for i, flag in enumerate(argv) if flag == "--mode"]
            assert modes and config.model.mode == modes[-1], (row.name, argv)


def test_table_rows_switch_what_they_name(tmp_path: Path) -> None:
    def config(table: str, row_name: str, scale: str = "toy", stage: int = -1):
        plan = experiments.parse_args([table, "--shards", str(tmp_path), "--scale", scale])
        row = next(r for r in plan.table.rows if r.name == row_name)
        return parse_config(experiments.stage_argvs(plan, row, 0, "stage1.pt")[stage][1]).flat()

    assert [r.name for r in TABLES["table1"]("toy").rows] == ["plain", "mt", "vpt", "pvit"]
    assert config("table4a", "op")["model.one_prompt"] and config("table4a", "np")["model.mode"] == "np"
    pvit_vpt = config("table4a", "pvit_vpt")
    assert pvit_vpt["model.freeze_backbone"] and pvit_vpt["model.mode"] == "pvit"
    assert set(config("table4c", "S1")["model.tasks"]) == {"boxes", "segm", "depth"}
    assert set(config("table4c", "S2")["model.tasks"]) == {"pose3d", "normal", "segm"}
    assert config("table4c", "depth")["model.tasks"] == ("depth",)
    assert config("ablations", "shuffled")["data.shuffle_synthetic_labels"]
    assert config("ablations", "prompts20")["model.prompts_per_task"] == 20
    assert config("ablations", "fraction0.25")["data.synthetic_fraction"] == 0.25
    assert config("ablations", "real_prompts", "paper")["model.real_tasks"] == ("boxes",)
    stage1 = config("ablations", "pretrain_finetune", stage=0)
    stage2 = config("ablations", "pretrain_finetune", stage=1)
    assert stage1["data.synthetic_only"] and stage1["model.mode"] == "mt"
    assert stage2["model.mode"] == "plain" and stage2["model.init_from"] == "stage1.pt"
    stage1 = config("ablations", "pvit_pretrain_finetune", stage=0)
    stage2 = config("ablations", "pvit_pretrain_finetune", stage=1)
    assert stage1["data.synthetic_only"] and stage1["model.mode"] == "pvit"
    assert stage2["model.mode"] == "pvit" and stage2["model.init_from"] == "stage1.pt"
    assert not stage2["data.synthetic_only"]  # stage 2 trains on both streams
    paper6 = [r.name for r in TABLES["table6"]("paper").rows]
    assert paper6 == ["none", "phav", "surreact", "kist-synadl", "hypersim", "ehoi", "all"]
    assert [r.name for r in TABLES["table6"]("toy").rows] == ["none", "procedural"]
    assert "only one synthetic source" in TABLES["table6"]("toy").note


def test_results_show_the_lambdas_each_row_trained_with() -> None:
    rows = (Row("plain", "MViTv2", ("--mode", "plain")), Row("pvit", "PViT", ("--mode", "pvit")))
    results = {
        "plain": [{"loss_weights": {"action": 1.0}}] * 2,
        "pvit": [
            {"loss_weights": {"depth": 0.04, "action": 1.0}},  # final.json keeps its keys sorted
            {"loss_weights": {"action": 1.0, "depth": 0.05}},
        ],
    }
    lines = experiments.loss_weight_lines(rows, results)
    assert "| row | action | depth |" in lines
    assert "| plain | 1 |  |" in lines and "| pvit | 1 | 0.045 |" in lines  # the mean over seeds
    assert experiments.loss_weight_lines(rows, {"plain": [{"top1": 1.0}]}) == []  # runs that recorded none


@pytest.mark.slow  # multi-process or several runs: the second CI step runs it
def test_runner_writes_results_md_and_a_second_run_trains_nothing(
    shards_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_table(
        monkeypatch,
        Row("plain", "MViTv2", ("--mode", "plain"), "63.3"),
        Row("pvit", "PViT", ("--mode", "pvit")),
    )
    calls = count_trainer_calls(monkeypatch)
    out = tmp_path / "table"
    args = runner_args("tiny", shards_dir, out, "--seeds", "2")
    results = experiments.main(args)
    assert results == out / "results.md" and len(calls) == 4  # 2 rows x 2 seeds
    text = results.read_text()
    lines = table_lines(text)
    assert set(lines) == {"plain", "pvit"}
    for name, cells in lines.items():
        finals = [json.loads((out / name / f"seed{k}" / "final.json").read_text()) for k in range(2)]
        assert [f["steps"] for f in finals] == [2, 2]
        top1 = [f["top1"] for f in finals]
        expected = f"{statistics.fmean(top1):.1f} ± {statistics.stdev(top1):.1f}"
        assert cells[2] == expected and " ± " in cells[3] and cells[4] == "2", cells
    assert lines["plain"][5] == "63.3" and lines["pvit"][5] == "–"
    # λ: plain trains the action loss alone; pvit has the toy recipe's depth and the paper's normal
    assert "| plain | 1 |  |" in text and "| pvit | 1 | 0.05 | 0.5 |" in text
    assert "python -m train.experiments tiny --shards" in text and "Date: " in text
    assert (out / "curves.png").stat().st_size > 0 and "](curves.png)" in text
    # the seeds differ: the runner passed each its own --seed and --out
    assert {c[c.index("--seed") + 1] for c in calls} == {"0", "1"}

    (out / "results.md").unlink()
    assert experiments.main(args) == out / "results.md"
    assert len(calls) == 4  # nothing trained again
    assert table_lines((out / "results.md").read_text()) == lines

    # a finished run made with other flags is refused, not silently reused
    with pytest.raises(experiments.ExperimentError, match="other flags"):
        experiments.main(
            [*runner_args("tiny", shards_dir, out, "--seeds", "1")[: -len(SMALL)], *SMALL, "--lr", "1e-4"]
        )
    assert len(calls) == 4


@pytest.mark.slow  # multi-process or several runs: the second CI step runs it
def test_two_stage_row_fine_tunes_from_its_pretraining_checkpoint(
    shards_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = next(r for r in TABLES["ablations"]("toy").rows if r.name == "pretrain_finetune")
    use_table(monkeypatch, row)
    calls = count_trainer_calls(monkeypatch)
    out = tmp_path / "two"
    experiments.main(runner_args("tiny", shards_dir, out, "--seeds", "1"))
    stage1, final = out / row.name / "seed0" / PRETRAIN, out / row.name / "seed0"
    assert len(calls) == 2 and "--synthetic-only" in calls[0]
    init = calls[1][calls[1].index("--init-from") + 1]
    assert Path(init).parent == stage1 / "checkpoints" and Path(init).is_file()
    assert json.loads((stage1 / "final.json").read_text())["top1"] is None  # no real stream in stage 1
    assert json.loads((final / "final.json").read_text())["top1"] is not None
    assert "pretrain_finetune" in table_lines((out / "results.md").read_text())
    experiments.main(runner_args("tiny", shards_dir, out, "--seeds", "1"))
    assert len(calls) == 2


def test_dry_run_prints_every_command_and_trains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_trainer_calls(monkeypatch)
    out = tmp_path / "dry"
    assert (
        experiments.main(["ablations", "--shards", "missing", "--out", str(out), "--seeds", "2", "--dry-run"])
        is None
    )
    lines = capsys.readouterr().out.splitlines()
    rows = TABLES["ablations"]("toy").rows
    assert len(lines) == 2 * sum(2 if r.pretrain else 1 for r in rows)
    assert all(line.startswith("pvit-train --recipe train/recipes/toy_procedural.yaml") for line in lines)
    assert not calls and not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["table9", "--shards", "."], "unknown table 'table9'"),
        (["table1", "--shards", "/no/such/shards"], "--shards /no/such/shards: no such directory"),
        (["table1", "--shards", ".", "--scale", "huge"], "--scale must be one of toy, paper"),
        (
            ["table1", "--shards", ".", "--scale", "paper", "--real", "kinetics"],
            "no recipe kinetics_pvit.yaml",
        ),
        (["table1", "--shards", ".", "--", "--seed", "3"], "--seed after `--`: the runner sets these"),
    ],
)
def test_cli_refuses_in_one_line_with_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["python -m train.experiments", *argv])
    with pytest.raises(SystemExit) as exit_info:
        experiments.cli()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_rows_picks_some_rows_of_a_table(tmp_path: Path) -> None:
    plan = experiments.parse_args(
        ["ablations", "--shards", str(tmp_path), "--rows", "pvit_pretrain_finetune,plain"]
    )
    assert [row.name for row in plan.table.rows] == ["plain", "pvit_pretrain_finetune"]  # the table's order
    with pytest.raises(experiments.ExperimentError, match="--rows nope: not rows of ablations"):
        experiments.parse_args(["ablations", "--shards", str(tmp_path), "--rows", "nope"])

"""`train.plot`: several runs' metrics.jsonl overlaid, one line per run in every panel it has data for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from train import plot


def write_run(directory: Path, rows: list[dict], tail: str = "") -> Path:
    directory.mkdir(parents=True)
    text = "".join(json.dumps({"time": 0.0, **row}) + "\n" for row in rows)
    (directory / "metrics.jsonl").write_text(text + tail)
    return directory


def row(step: int, kind: str, **values: float) -> dict:
    return {"step": step, "kind": kind, **values}


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    eval_row = {"real/ssv2/top1": 30.0, "real/ssv2/videos": 16, "real/ssv2/clips": 16}
    pvit_rows = [
        row(10, "train", loss=3.0, action=2.0, depth=9.0, lr=0.1, grad_norm=1.0),
        row(20, "train", loss=2.0, action=1.5, depth=4.0, lr=0.1, grad_norm=1.0),
        row(20, "eval", **eval_row),
        row(20, "train", loss=1.0, action=1.2, depth=3.0),  # a resumed run logs step 20 again: it wins
        row(20, "summary", train_seconds=5.0),
    ]
    pvit = write_run(tmp_path / "pvit", pvit_rows, tail='{"step": 30, "kind": "tra')  # cut short by a kill
    plain = write_run(
        tmp_path / "plain",
        [row(10, "train", loss=2.5, action=2.5), row(20, "eval", **{"real/ssv2/top1": 25.0})],
    )
    return [pvit, plain]


def test_read_run_keeps_the_last_row_per_step_and_skips_counts(runs: list[Path]) -> None:
    series = plot.read_run(runs[0])
    assert series["train"]["loss"] == [(10, 3.0), (20, 1.0)]
    assert set(series["train"]) == {"loss", "action", "depth"}  # lr and grad_norm are not compared
    assert set(series["eval"]) == {"real/ssv2/top1"}  # videos/clips are counts


def test_one_line_per_run_in_each_panel(runs: list[Path]) -> None:
    figure = plot.plot_runs(runs)
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == ["train: loss", "train: action", "train: depth", "eval: real/ssv2/top1"]
    lines = {axes.get_title(): [line.get_label() for line in axes.lines] for axes in figure.axes}
    assert lines["train: loss"] == ["pvit", "plain"]
    assert lines["eval: real/ssv2/top1"] == ["pvit", "plain"]
    assert lines["train: depth"] == ["pvit"]  # the plain run has no depth loss
    colours = {axes.get_title(): [line.get_color() for line in axes.lines] for axes in figure.axes}
    assert colours["train: loss"][0] == colours["train: depth"][0] != colours["train: loss"][1]
    loss = figure.axes[0].lines[0]
    assert list(loss.get_xdata()) == [10, 20] and list(loss.get_ydata()) == [3.0, 1.0]


def test_command_writes_the_png(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "curves.png"
    assert plot.main([*map(str, runs), "--out", str(out)]) == out
    assert capsys.readouterr().out.strip() == str(out)
    width, height = Image.open(out).size
    assert width > 600 and height > 200


def test_same_named_runs_get_their_parent(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a" / "run", [{"step": 1, "kind": "train", "loss": 1.0}])
    b = write_run(tmp_path / "b" / "run", [{"step": 1, "kind": "train", "loss": 2.0}])
    assert [line.get_label() for line in plot.plot_runs([a, b]).axes[0].lines] == ["a/run", "b/run"]


@pytest.mark.parametrize("case, expect", [("absent", "no such directory"), ("empty", "no metrics.jsonl")])
def test_mistakes_are_one_line_exit_2(
    case: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / case
    if case == "empty":
        directory.mkdir()
    monkeypatch.setattr("sys.argv", ["x", str(directory), "--out", str(tmp_path / "c.png")])
    with pytest.raises(SystemExit) as exit_info:
        plot.cli()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expect in err and err.count("\n") == 1

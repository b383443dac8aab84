"""Ego4D (OSCC + PNR) and AVA end to end on fixtures in the real layouts: build -> train -> evaluate -> the
official files parse and the official metrics are computed (issue 10)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from pipeline.build import BuildRequest, build_source
from pipeline.config import BuildConfig
from tests.conftest import tiny_config
from tests.train.conftest import train_args
from train.main import main

sys.path.insert(0, str(Path(__file__).parents[1] / "sources"))
from real_fixtures import make_ava, make_ego4d

CONFIG = BuildConfig(frames=4, size=32, label_stride=4)  # ego4d: its baseline's frames, no rate


def _args(shards: Path, out: Path, source: str, *extra: str) -> list[str]:
    return train_args(
        shards, out, "--steps", "2", "--real", source, "--synthetic", "", "--batch-size", "2", *extra
    )


@pytest.fixture(scope="module")
def ego4d_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ego4d_raw")
    make_ego4d(root)
    out = tmp_path_factory.mktemp("ego4d_shards")
    build_source(BuildRequest("ego4d", out, CONFIG, root=root, splits=["train", "val"], workers=0))
    build_source(BuildRequest("procedural", out, tiny_config(), workers=0))  # a synthetic stream beside it
    return out


@pytest.fixture(scope="module")
def ava_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ava_raw")
    make_ava(root)
    return root


def test_ego4d_with_a_synthetic_stream_trains_and_writes_the_official_files(
    ego4d_shards: Path, tmp_path: Path
) -> None:
    out = main(_args(ego4d_shards, tmp_path, "ego4d", "--synthetic", "procedural"))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    trained = [row for row in rows if row["kind"] == "train"][-1]
    assert {"oscc", "pnr", "depth", "segm"} <= set(trained)  # both streams' heads are trained
    results = out["eval"]
    assert 0.0 <= results["real/ego4d/oscc_accuracy"] <= 100.0
    assert results["real/ego4d/pnr_error_s"] >= 0.0  # the val fixture has a state change
    files = tmp_path / "eval" / "step_00000002" / "ego4d"
    pnr = json.loads((files / "pnr.json").read_text())
    oscc = json.loads((files / "oscc.json").read_text())
    assert pnr and {"unique_id", "pnr_frame"} <= set(pnr[0]) and len(oscc) == len(pnr)


def test_ava_trains_scores_frame_map_and_writes_full_frame_detections(ava_raw: Path, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    options = (("proposals", "ava_val_predicted_boxes.csv"),)
    config = BuildConfig(frames=4, size=32, label_stride=4, sampling_rate=2, options=options)
    build_source(BuildRequest("ava", shards, config, root=ava_raw, workers=0))
    run = tmp_path / "run"
    out = main(_args(shards, run, "ava", "--ava-annotations", str(ava_raw / "annotations")))
    assert 0.0 <= out["eval"]["real/ava/frame_map"] <= 100.0
    rows = list(csv.reader((run / "eval" / "step_00000002" / "ava" / "ava_detections.csv").open()))
    # one val keyframe is scored (the other is excluded); its stored detection, mapped back to the full
    # frame, is the proposals file's box, with one row per class of the 60
    assert len(rows) == 60 and {tuple(r[:2]) for r in rows} == {(rows[0][0], "0902")}
    assert [float(v) for v in rows[0][2:6]] == pytest.approx([0.3, 0.0, 0.7, 1.0], abs=1e-6)

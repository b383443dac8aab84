"""Ego4D OSCC/PNR adapter: windows cut by parent frames, baseline frame choice, PNR target, negatives."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from real_fixtures import make_ego4d, read_index, write_json

from pipeline.config import BuildConfig
from pipeline.sources import SourceError, get_source
from pipeline.sources.base import Quarantine
from pipeline.sources.ego4d import baseline_frames

CONFIG = BuildConfig(frames=16, size=32, label_stride=4)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ego4d")
    make_ego4d(root)
    return root


def source(root, config=CONFIG):
    return get_source("ego4d")(root, config)


def test_baseline_frame_rule_uses_multiples_of_the_stride_in_absolute_frames():
    # n = 240, 240/16 = 15: multiples of 15 in [34, 274)
    assert baseline_frames(34, 274, 16) == list(range(45, 274, 15))[:16]
    # n = 216: ceil = 14 gives only 15 multiples in [100, 316) -> floor 13
    assert baseline_frames(100, 316, 16) == [f for f in range(100, 316) if f % 13 == 0][:16]


def test_positive_clip_has_state_change_and_a_one_hot_pnr(root):
    items = {i.id: i for i in source(root).items("train")}
    sample = source(root).load(items["c31c-1_15-9_15"])
    assert sample.oscc == 1 and sample.label is None
    assert sample.frame_indices == baseline_frames(34, 274, 16)
    assert [read_index(f) for f in sample.video] == [i % 256 for i in sample.frame_indices]
    pnr = sample.labels["pnr.npy"]
    assert pnr.dtype == np.float32 and pnr.shape == (16,) and pnr.sum() == 1
    assert sample.frame_indices[int(pnr.argmax())] == 150  # nearest sampled frame to PNR 157
    assert sample.extra["pnr_frame"] == 157 and sample.extra["clip_fps"] == pytest.approx(241 / 8)


def test_negative_clip_has_zero_pnr(root):
    items = {i.id: i for i in source(root).items("train")}
    sample = source(root).load(items["5f0b-40_0-47_2"])
    assert sample.oscc == 0 and not sample.labels["pnr.npy"].any()
    assert sample.extra["pnr_frame"] is None


def test_shorter_window_and_unlabelled_test_clip(root):
    val = source(root).load(next(source(root).items("val")))
    assert val.frame_indices[int(val.labels["pnr.npy"].argmax())] == 286  # multiples of 13 nearest 290
    test = source(root).load(next(source(root).items("test")))
    assert test.oscc is None and test.labels == {}
    # window 90..120 (n=30 >= 16): stride 1 or 2 keeps 16 frames inside the window
    assert test.frame_indices == baseline_frames(90, 120, 16)
    assert [read_index(f) for f in test.video] == test.frame_indices


def test_window_shorter_than_the_clip_is_padded(root, tmp_path):
    bad = tmp_path / "short"
    shutil.copytree(root, bad)
    clip = {
        "unique_id": "tiny",
        "video_uid": "4e3fc1e9-424f-4921-9068-d468c135f347",
        "parent_start_frame": 10,
        "parent_end_frame": 19,
        "state_change": False,
    }
    write_json(bad / "v2/annotations/fho_oscc-pnr_val.json", {"clips": [clip]})
    sample = source(bad).load(next(source(bad).items("val")))
    assert sample.frame_indices == list(range(10, 20)) + [19] * 6 and sample.extra["padded_frames"] == 6


def test_bad_annotations_are_quarantined(root, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    clips = [
        {
            "unique_id": "nopnr",
            "video_uid": "x",
            "parent_start_frame": 0,
            "parent_end_frame": 9,
            "state_change": True,
        },
        {
            "unique_id": "novideo",
            "video_uid": "missing-uid",
            "parent_start_frame": 0,
            "parent_end_frame": 30,
            "state_change": False,
        },
        {"unique_id": "nowindow", "video_uid": "x"},
    ]
    write_json(bad / "v2/annotations/fho_oscc-pnr_val.json", clips)  # the pre-release bare-list shape
    reasons = []
    for item in source(bad).items("val"):  # bad rows are found while listing: Item.problem, no load()
        if item.problem is None:
            with pytest.raises(Quarantine) as caught:
                source(bad).load(item)
        reasons.append(item.problem or str(caught.value))
    assert reasons[0] == "positive clip (state_change true) without a PNR frame"
    assert reasons[1].startswith("video missing") and "missing-uid" in reasons[1]
    assert reasons[2] == "annotation lacks parent_start_frame, parent_end_frame"


def test_missing_annotation_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="ego4d train annotations"):
        list(source(tmp_path).items("train"))

"""SSv2 adapter against a tiny real-layout tree (VP9 webm, both annotation naming schemes)."""

from __future__ import annotations

import shutil

import pytest
from real_fixtures import corrupt, make_ssv2, read_index, write_json

from pipeline.config import BuildConfig
from pipeline.sources import SourceError, get_source
from pipeline.sources._real_common import segment_indices
from pipeline.sources.base import Quarantine

CONFIG = BuildConfig(frames=8, size=32, label_stride=4)


@pytest.fixture(scope="module", params=["old", "new"])
def ssv2_root(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"ssv2_{request.param}")
    make_ssv2(root, naming=request.param)
    return root


def source(root, config=CONFIG):
    return get_source("ssv2")(root, config)


def test_train_items_and_labels_follow_the_labels_file(ssv2_root):
    items = {item.id: item for item in source(ssv2_root).items("train")}
    assert sorted(items) == ["10", "11", "12"]
    sample = source(ssv2_root).load(items["12"])
    # sorted clean templates: Approaching(0), Holding(1), Putting(2), Wiping(3)
    assert sample.label == 3
    assert sample.label_name == "Wiping something off of something"
    assert source(ssv2_root).load(items["10"]).label == 2


def test_train_frames_are_one_random_frame_per_segment_decoded_from_those_frames(ssv2_root):
    item = next(i for i in source(ssv2_root).items("train") if i.id == "10")
    sample = source(ssv2_root).load(item)
    size = (30 - 1) / 8
    for i, k in enumerate(sample.frame_indices):  # PySlowFast's train mode: uniform in [s, e] of segment i
        assert round(size * i) <= k <= round(size * (i + 1))
    assert sample.frame_indices != segment_indices(30, 8)  # not the evaluation rule (seed 0)
    assert sample.frame_indices == source(ssv2_root).load(item).frame_indices  # deterministic
    assert [read_index(frame) for frame in sample.video] == sample.frame_indices
    assert sample.video.shape == (8, 32, 43, 3)  # the whole 96x72 frame
    assert sample.orig_hw == (72, 96)
    assert sample.fps == pytest.approx(12.0)
    assert sample.extra["padded_frames"] == 0 and sample.extra["source_frames"] == 30


def test_slowfast_middle_rule_is_view_zero_of_one():
    # SlowFast val: seg=(L-1)/N, s=round(seg*i), e=round(seg*(i+1)), (s+e)//2
    length, frames = 37, 16
    seg = (length - 1) / frames
    slowfast = [(round(seg * i) + round(seg * (i + 1))) // 2 for i in range(frames)]
    assert segment_indices(length, frames) == slowfast


def test_validation_yields_one_item_per_temporal_view(ssv2_root):
    config = BuildConfig(frames=8, size=32, label_stride=4, options=(("views", "3"),))
    items = list(source(ssv2_root, config).items("val"))
    assert [item.id for item in items] == ["20_v0", "20_v1", "20_v2", "21_v0", "21_v1", "21_v2"]
    samples = [source(ssv2_root, config).load(item) for item in items[:3]]
    assert [s.extra["view"] for s in samples] == [0, 1, 2]
    assert {s.extra["video_id"] for s in samples} == {"20"} and samples[0].extra["num_views"] == 3
    assert samples[0].frame_indices != samples[2].frame_indices
    assert all(a <= b for a, b in zip(samples[0].frame_indices, samples[2].frame_indices, strict=True))
    assert source(ssv2_root).load(items[0]).label == 0  # Approaching...


def test_video_shorter_than_the_clip_is_padded_with_its_last_frame(ssv2_root):
    config = BuildConfig(frames=16, size=32, label_stride=4)
    item = next(i for i in source(ssv2_root, config).items("val") if i.id == "21_v0")
    sample = source(ssv2_root, config).load(item)
    assert sample.frame_indices == list(range(12)) + [11] * 4
    assert [read_index(frame) for frame in sample.video] == sample.frame_indices
    assert sample.extra["padded_frames"] == 4


def test_test_split_has_no_label_unless_answers_exist(ssv2_root, tmp_path):
    item = next(source(ssv2_root).items("test"))
    assert item.id == "30_v0"
    assert source(ssv2_root).load(item).label is None
    root = tmp_path / "with_answers"
    shutil.copytree(ssv2_root, root)
    labels = next(root.glob("annotations/*labels.json"))
    (labels.parent / "test-answers.csv").write_text("30;Holding something\n")
    sample = source(root).load(next(source(root).items("test")))
    assert (sample.label, sample.label_name) == (1, "Holding something")


def test_bad_inputs_are_quarantined_with_a_reason(ssv2_root, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(ssv2_root, root)
    videos = root / "20bn-something-something-v2"
    corrupt(videos / "10.webm")
    (videos / "11.webm").write_bytes(b"")
    (videos / "12.webm").unlink()
    train = next(root.glob("annotations/*train.json"))
    entries = [
        *__import__("json").loads(train.read_text()),
        {"id": "20", "template": "Dancing with [something]"},
    ]
    write_json(train, entries)
    reasons = {}
    for item in source(root).items("train"):
        with pytest.raises(Quarantine) as caught:
            source(root).load(item)
        reasons[item.id] = str(caught.value)
    assert "cannot decode" in reasons["10"]
    assert "empty file" in reasons["11"]
    assert reasons["12"].startswith("video missing")
    assert reasons["20"] == "unknown class 'Dancing with something' (not in the labels file)"
    assert all("\n" not in reason for reason in reasons.values())


def test_missing_annotation_file_is_a_one_line_source_error(ssv2_root, tmp_path):
    root = tmp_path / "noval"
    shutil.copytree(ssv2_root, root)
    next(root.glob("annotations/*validation.json")).unlink()
    with pytest.raises(SourceError) as caught:
        list(source(root).items("val"))
    assert "ssv2 val split file" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(SourceError, match="reads a dataset from disk: pass --root DIR"):
        list(source(None).items("train"))

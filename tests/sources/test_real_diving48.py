"""Diving48 adapter: V2 JSONs + rgb/<vid_name>.mp4, start/end frames, vocabulary, views."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
from real_fixtures import make_diving48, read_index, write_json

from pipeline.config import BuildConfig
from pipeline.sources import SourceError, get_source
from pipeline.sources._real_common import Draw, stride_indices
from pipeline.sources.base import Quarantine

CONFIG = BuildConfig(frames=8, size=32, label_stride=4)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("diving48")
    make_diving48(root)
    return root


def source(root, config=CONFIG):
    return get_source("diving48")(root, config)


def test_labels_come_from_the_vocabulary(root):
    items = {item.id: item for item in source(root).items("train")}
    assert sorted(items) == ["-mmq0PT-u8k_00155", "_abcdefghij_00001"]
    sample = source(root).load(items["-mmq0PT-u8k_00155"])
    assert (sample.label, sample.label_name) == (2, "Back+15som+25Twis+FREE")


def test_start_and_end_frames_are_honoured_on_request(root):
    config = replace(CONFIG, options=(("frame_range", "1"),))
    item = next(i for i in source(root, config).items("train") if i.id == "_abcdefghij_00001")
    sample = source(root, config).load(item)
    assert min(sample.frame_indices) >= 8 and max(sample.frame_indices) <= 23  # within frames 8..23
    assert [read_index(f) for f in sample.video] == sample.frame_indices
    assert sample.extra["start_frame"] == 8 and sample.extra["end_frame"] == 23


def test_whole_video_by_default_as_the_common_loaders_do(root):
    # start_frame/end_frame have no published meaning and mmaction2 & co. ignore them
    item = next(i for i in source(root).items("train") if i.id == "_abcdefghij_00001")
    sample = source(root).load(item)
    assert min(sample.frame_indices) < 8 or max(sample.frame_indices) > 23
    assert sample.extra["start_frame"] == 8 and sample.extra["end_frame"] == 23  # still recorded


def test_test_split_has_views_and_an_end_frame_past_the_video_is_clipped(root):
    config = BuildConfig(frames=8, size=32, label_stride=4, options=(("frame_range", "1"), ("views", "2")))
    items = list(source(root, config).items("test"))
    assert [i.id for i in items] == ["-mmq0PT-u8k_00156_v0", "-mmq0PT-u8k_00156_v1"]
    samples = [source(root, config).load(i) for i in items]
    # end_frame 20 of a 20-frame video is clipped to frame 19: sampling runs over 20 frames
    # the fixed-stride rule: a 8 x 4 window is longer than the 20 frames, so it is clamped to them
    assert samples[1].frame_indices == stride_indices(20, 8, 4, Draw(view=1, views=2))
    assert samples[1].frame_indices == [0, 4, 8, 13, 17, 19, 19, 19]
    assert samples[0].extra["video_id"] == "-mmq0PT-u8k_00156" and samples[0].extra["padded_frames"] == 0
    with pytest.raises(SourceError, match="no official validation"):
        list(source(root).items("val"))


def test_unknown_class_and_missing_video_are_quarantined(root, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    write_json(
        bad / "Diving48_V2_train.json",
        [{"vid_name": "-mmq0PT-u8k_00155", "label": 47}, {"vid_name": "nope_00001", "label": 0}],
    )
    reasons = []
    for item in source(bad).items("train"):
        with pytest.raises(Quarantine) as caught:
            source(bad).load(item)
        reasons.append(str(caught.value))
    assert reasons[0] == "unknown class 47 (vocabulary has 3 classes)"
    assert reasons[1].startswith("video missing") and "nope_00001.mp4" in reasons[1]


def test_missing_vocabulary_is_a_source_error(root, tmp_path):
    bad = tmp_path / "novocab"
    shutil.copytree(root, bad)
    (bad / "Diving48_vocab.json").unlink()
    with pytest.raises(SourceError, match="diving48 vocabulary"):
        list(source(bad).items("train"))

"""videofolder adapter: class folders and path,label CSVs."""

from __future__ import annotations

import numpy as np
import pytest
from real_fixtures import encode, index_frames, read_index

from pipeline.config import BuildConfig
from pipeline.sources import SourceError, get_source
from pipeline.sources.base import Quarantine

CONFIG = BuildConfig(frames=4, size=32, label_stride=4)


def source(root, config=CONFIG):
    return get_source("videofolder")(root, config)


def test_class_folders_give_sorted_class_ids(tmp_path):
    encode(tmp_path / "walk" / "a.mp4", index_frames(12, 48, 64), 30)
    encode(tmp_path / "jump" / "b.webm", index_frames(8, 48, 64), 12, "vp9")
    items = {i.id: i for i in source(tmp_path).items("train")}
    assert sorted(items) == ["jump/b", "walk/a"]
    walk = source(tmp_path).load(items["walk/a"])
    assert (walk.label, walk.label_name) == (1, "walk")
    assert [read_index(f) for f in walk.video] == walk.frame_indices  # train: random in each segment
    segments = [(0, 3), (3, 6), (6, 8), (8, 11)]
    assert all(lo <= k <= hi for k, (lo, hi) in zip(walk.frame_indices, segments, strict=True))
    assert list(source(tmp_path).items("val")) == []


def test_csv_lists_with_names_ids_and_unknown_classes(tmp_path):
    encode(tmp_path / "clips" / "x.mp4", index_frames(6, 48, 64), 30)
    (tmp_path / "classes.txt").write_text("run\nsit\n")
    (tmp_path / "train.csv").write_text(
        "path,label\nclips/x.mp4,sit\nclips/x.mp4,1\nclips/x.mp4,fly\nclips/y.mp4,run\n"
    )
    items = list(source(tmp_path).items("train"))
    assert [source(tmp_path).load(i).label for i in items[:2]] == [1, 1]
    with pytest.raises(Quarantine, match="unknown class 'fly'"):
        source(tmp_path).load(items[2])
    with pytest.raises(Quarantine, match="video missing"):
        source(tmp_path).load(items[3])


def test_empty_root_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="no train.csv"):
        list(source(tmp_path).items("train"))


@pytest.fixture(scope="module")
def hundred_frames(tmp_path_factory):
    """`<root>/{train,val}/walk/a.mp4`: a 100-frame video whose frames show their own index."""
    root = tmp_path_factory.mktemp("videofolder")
    for split in ("train", "val"):
        encode(root / split / "walk" / "a.mp4", index_frames(100, 48, 64), 30)
    return root


def _frames(root, split: str, **config) -> list[int]:
    adapter = source(root, BuildConfig(size=32, label_stride=4, **config))
    (item,) = adapter.items(split)
    sample = adapter.load(item)
    assert [read_index(frame) for frame in sample.video] == sample.frame_indices
    return sample.frame_indices


def test_stride_sampling_takes_a_frames_by_rate_window_as_pyslowfasts_kinetics_loader(hundred_frames):
    stride = {"frames": 16, "sampling_rate": 4, "options": (("sampling", "stride"),)}
    # Test view: the window of 16 x 4 frames centred in the video, frames spread over it by linspace.
    assert _frames(hundred_frames, "val", **stride) == [int(18 + k * 63 / 15) for k in range(16)]
    # Train view: the same window at a random start in [0, 100 - 64]; frames about 4 apart.
    train = _frames(hundred_frames, "train", **stride)
    assert 0 <= train[0] <= 36 and 62 <= train[-1] - train[0] <= 63
    assert set(np.diff(train)) <= {4, 5}


def test_segment_sampling_stays_the_default_and_spreads_the_clip_over_the_whole_video(hundred_frames):
    segment = _frames(hundred_frames, "val", frames=16)
    assert segment == _frames(hundred_frames, "val", frames=16, options=(("sampling", "segment"),))
    assert segment[0] <= 6 and segment[-1] >= 93  # one frame per segment of the whole video


def test_a_sampling_rate_the_rule_does_not_read_is_refused_naming_the_rule(hundred_frames):
    with pytest.raises(SourceError) as refused:
        source(hundred_frames, BuildConfig(sampling_rate=4)).check_sampling()
    assert str(refused.value) == (
        "source videofolder does not use --sampling-rate (its frames: one frame in each of --frames "
        "equal segments of the whole video, PySlowFast's SSv2 rule; --option sampling=stride takes a "
        "--frames x --sampling-rate window)"
    )
    source(hundred_frames, BuildConfig(sampling_rate=4, options=(("sampling", "stride"),))).check_sampling()

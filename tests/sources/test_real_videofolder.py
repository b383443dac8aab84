"""videofolder adapter: class folders and path,label CSVs."""

from __future__ import annotations

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

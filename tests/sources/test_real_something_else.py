"""Something-Else adapter: split sets, the two class-id rules, hand/object boxes."""

from __future__ import annotations

import numpy as np
import pytest
from real_fixtures import make_something_else, read_index, ssv2_entry, write_json

from pipeline.config import BuildConfig
from pipeline.finish import finish_sample
from pipeline.sources import SourceError, get_source
from pipeline.sources.base import Quarantine


def config(**options):
    return BuildConfig(frames=4, size=32, label_stride=4, options=tuple(sorted(options.items())))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("something_else")
    make_something_else(root)
    return root


def segments(length: int, frames: int) -> list[tuple[int, int]]:
    """SlowFast's segments of `[0, length-1]`: a train-mode frame lies in `[s, e]` of its segment."""
    size = (length - 1) / frames
    return [(round(size * i), round(size * (i + 1))) for i in range(frames)]


def source(root, cfg=None):
    return get_source("something-else")(root, cfg or config())


def test_official_ids_are_sorted_templates_and_orvit_ids_are_the_file_ints(root):
    item = next(i for i in source(root).items("train") if i.id == "41")
    official = source(root).load(item)
    assert (official.label, official.label_name) == (2, "Pretending to put something on a surface")
    orvit_cfg = config(class_ids="orvit")
    orvit = source(root, orvit_cfg).load(
        next(i for i in source(root, orvit_cfg).items("train") if i.id == "41")
    )
    assert orvit.label == 0


def test_boxes_are_normalised_to_the_whole_frame_hands_first(root):
    src = source(root)
    item = next(i for i in src.items("train") if i.id == "40")
    sample = src.load(item)
    indices = sample.frame_indices
    assert indices == [read_index(f) for f in sample.video]
    assert all(lo <= k <= hi for k, (lo, hi) in zip(indices, segments(20, 4), strict=True))  # train: random
    boxes, classes = sample.labels["boxes.npy"], sample.labels["boxes_cls.npy"]
    assert boxes.shape == (4, 2, 4) and classes.dtype == np.int16
    assert classes.tolist() == [[0, 1 if k >= 10 else -1] for k in indices]  # the object from frame 10
    np.testing.assert_allclose(boxes[:, 0], [[0.0, 0.0, 0.5, 0.5]] * 4, atol=1e-6)  # hand [0,0,64,36]
    for t, k in enumerate(indices):  # object [40,10,100,70] of 128x72, kept whole (--crop none)
        if k >= 10:
            np.testing.assert_allclose(boxes[t, 1], [40 / 128, 10 / 72, 100 / 128, 70 / 72], atol=1e-6)
        else:
            assert np.isnan(boxes[t, 1]).all()
    # --crop centre: the engine maps them into x in [28, 100)
    cfg = BuildConfig(frames=4, size=32, label_stride=4, crop="centre")
    centred = source(root, cfg)
    _, video, labels = finish_sample(centred.load(item), item, "something-else", cfg, "0" * 16)
    assert video.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(labels["boxes.npy"][0, 0], [0.0, 0.0, 36 / 72, 0.5], atol=1e-6)
    assert sample.extra["box_space"] == "something-else-hand-object" and sample.extra["box_frames"] == 20


def test_videos_without_boxes_and_boxes_off(root):
    src = source(root)
    assert src.load(next(i for i in src.items("train") if i.id == "41")).labels == {}
    off = source(root, config(boxes="0"))
    assert off.load(next(i for i in off.items("train") if i.id == "40")).labels == {}


def test_fewshot_split_set_and_its_file_name_variant(root):
    cfg = config(split_set="fewshot-10shot", views="1")
    assert [i.id for i in source(root, cfg).items("train")] == ["40"]
    val = list(source(root, cfg).items("val"))
    assert [i.id for i in val] == ["42_v0"] and source(root, cfg).load(val[0]).label == 0


def test_unknown_class_is_quarantined_and_missing_split_is_a_source_error(root, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    write_json(
        bad / "dataset_splits/fewshot/finetune_10shot_train.json", [ssv2_entry("41", "Dropping [something]")]
    )
    src = source(bad, config(split_set="fewshot-10shot"))
    with pytest.raises(
        Quarantine, match="unknown class 'Dropping something' \\(not in finetune_labels.json\\)"
    ):
        src.load(next(src.items("train")))
    with pytest.raises(SourceError, match="fewshot-base"):
        list(source(root, config(split_set="fewshot-base")).items("train"))


@pytest.mark.parametrize("box_dir", ["dataset_splits", "dataset_splits/compositional"])
def test_box_file_is_found_where_the_split_files_are(tmp_path, box_dir):
    make_something_else(tmp_path, box_dir=box_dir)
    src = source(tmp_path)
    sample = src.load(next(i for i in src.items("train") if i.id == "40"))
    assert "boxes.npy" in sample.labels


def test_boxes_not_found_are_reported(tmp_path, caplog):
    make_something_else(tmp_path)
    (tmp_path / "bounding_box_annotations.json").unlink()
    with pytest.raises(SourceError, match=r"boxes=1 but no bounding_box_annotations.json .*dataset_splits"):
        list(source(tmp_path, config(boxes="1")).items("train"))
    with caplog.at_level("WARNING", logger="pipeline.sources.something_else"):
        list(source(tmp_path).items("train"))
    assert "building without boxes" in caplog.text

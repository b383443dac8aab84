"""Something-Else adapter: split sets, the two class-id rules, hand/object boxes."""

from __future__ import annotations

import numpy as np
import pytest
from real_fixtures import make_something_else, read_index, ssv2_entry, write_json

from pipeline.config import BuildConfig
from pipeline.sources import SourceError, get_source
from pipeline.sources.base import Quarantine


def config(**options):
    return BuildConfig(frames=4, size=32, label_size=8, options=tuple(sorted(options.items())))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("something_else")
    make_something_else(root)
    return root


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


def test_boxes_are_normalised_to_the_centre_crop_hands_first(root):
    src = source(root)
    sample = src.load(next(i for i in src.items("train") if i.id == "40"))
    assert sample.frame_indices == [2, 7, 12, 16] == [read_index(f) for f in sample.video]
    boxes, classes = sample.labels["boxes.npy"], sample.labels["boxes_cls.npy"]
    assert boxes.shape == (4, 2, 4) and classes.dtype == np.int16
    assert classes.tolist() == [[0, -1], [0, -1], [0, 1], [0, 1]]
    # 128x72 frame: centre square x in [28, 100) -> hand [0,0,64,36] becomes [0, 0, 36/72, 0.5]
    np.testing.assert_allclose(boxes[0, 0], [0.0, 0.0, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(boxes[2, 1], [(40 - 28) / 72, 10 / 72, 1.0, 70 / 72], atol=1e-6)
    assert np.isnan(boxes[0, 1]).all()
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

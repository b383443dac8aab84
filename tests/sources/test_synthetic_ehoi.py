"""ehoi adapter: COCO JSON -> static clips with normalised boxes and a rasterised unified segmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_fixtures import ehoi_image, rect_polygon, write_ehoi

from pipeline.config import BuildConfig
from pipeline.labelspace import load_label_space
from pipeline.schema import SEGM_IGNORE
from pipeline.sources.base import Quarantine, SourceError
from pipeline.sources.ehoi import EhoiSource, xywh_to_unit_xyxy

U = load_label_space("unified")
BOXES = load_label_space("ehoi_boxes")


def _source(root: Path, frames: int = 3) -> EhoiSource:
    return EhoiSource(root, BuildConfig(frames=frames))


def _samples(root: Path, split: str = "train", frames: int = 3) -> list:
    source = _source(root, frames)
    return [source.load(item) for item in source.items(split)]


def test_each_image_is_a_static_clip(tmp_path: Path) -> None:
    write_ehoi(tmp_path)
    (sample,) = _samples(tmp_path)
    assert sample.video.shape == (3, 20, 40, 3)
    np.testing.assert_array_equal(sample.video[2], ehoi_image(20, 40, 1))  # pixels untouched, repeated
    assert sample.frame_indices == [0, 0, 0] and sample.extra["padded_frames"] == 2 and sample.extra["static"]
    assert sample.extra["segm_space"] == "unified" and sample.extra["box_space"] == "ehoi_boxes"
    assert sample.labels["boxes.npy"].shape == (3, 2, 4) and sample.labels["segm.npy"].shape == (3, 20, 40)


def test_boxes_are_normalised_xyxy_with_hands_first(tmp_path: Path) -> None:
    write_ehoi(tmp_path)
    (sample,) = _samples(tmp_path)
    # hand: x 2..12 of 40, y 4..12 of 20; pliers: x 20..30, y 0..10
    np.testing.assert_allclose(sample.labels["boxes.npy"][0], [[0.05, 0.2, 0.3, 0.6], [0.5, 0.0, 0.75, 0.5]])
    assert sample.labels["boxes_cls.npy"][0].tolist() == [BOXES.index("hand"), BOXES.index("pliers")]
    assert sample.extra["hands"] == [{"side": 1, "contact": 1}]


def test_box_normalisation_clips_and_drops_empty_boxes() -> None:
    assert xywh_to_unit_xyxy([-10, 5, 30, 10], 40, 20) == [0.0, 0.25, 0.5, 0.75]
    assert xywh_to_unit_xyxy([5, 5, 0, 10], 40, 20) is None


def test_segmentation_rasterises_masks_into_the_unified_space(tmp_path: Path) -> None:
    write_ehoi(tmp_path)
    (sample,) = _samples(tmp_path)
    segm = sample.labels["segm.npy"][0]
    assert segm[8, 6] == U.index("ehoi/hand")
    assert segm[5, 25] == U.index("ehoi/pliers")
    assert segm[18, 38] == U.index("background")


def test_stray_comma_category_and_hands_painted_over_objects(tmp_path: Path) -> None:
    board = {"category_id": 8, "bbox": [0, 0, 40, 20], "segmentation": rect_polygon(0, 0, 40, 20)}
    screwdriver = {"category_id": 4, "bbox": [30, 10, 6, 6], "segmentation": rect_polygon(30, 10, 6, 6)}
    hand = {"category_id": 19, "bbox": [0, 0, 10, 10], "segmentation": rect_polygon(0, 0, 10, 10)}
    write_ehoi(tmp_path, images=[{"id": 3, "anns": [hand, board, screwdriver]}])
    (sample,) = _samples(tmp_path)
    segm = sample.labels["segm.npy"][0]
    assert segm[5, 5] == U.index("ehoi/hand")  # the hand lies over the board
    assert segm[12, 32] == U.index("ehoi/screwdriver")  # 'screwdriver,' in the file; smaller, so on top
    assert segm[18, 15] == U.index("ehoi/low voltage board")


def test_instance_without_mask_makes_its_box_ignore(tmp_path: Path) -> None:
    tip = {"category_id": 6, "bbox": [10, 5, 4, 4]}
    write_ehoi(tmp_path, images=[{"id": 4, "anns": [tip]}])
    (sample,) = _samples(tmp_path)
    segm = sample.labels["segm.npy"][0]
    assert segm[6, 11] == SEGM_IGNORE and segm[0, 0] == U.index("background")
    assert sample.labels["boxes_cls.npy"][0].tolist() == [BOXES.index("welder probe tip")]


def test_json_without_annotations_quarantines_each_image(tmp_path: Path) -> None:
    write_ehoi(tmp_path, with_annotations_key=False)
    source = _source(tmp_path)
    (item,) = source.items("train")
    with pytest.raises(Quarantine, match="no annotations"):
        source.load(item)


def test_missing_annotation_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="train_coco.json"):
        list(_source(tmp_path).items("train"))


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("missing_image", "missing file camera_1.jpg"),
        ("corrupt_image", "unreadable image"),
        ("wrong_size", "image is 40x20, the JSON says 50x20"),
        ("unknown_category", "unknown category id 77"),
    ],
)
def test_bad_images_are_quarantined_and_the_rest_load(tmp_path: Path, damage: str, reason: str) -> None:
    good = {"category_id": 19, "bbox": [2, 4, 10, 8], "segmentation": rect_polygon(2, 4, 10, 8)}
    bad = {"category_id": 77 if damage == "unknown_category" else 19, "bbox": [2, 4, 10, 8]}
    path = write_ehoi(tmp_path, images=[{"id": 1, "anns": [bad]}, {"id": 2, "anns": [good]}])
    if damage == "missing_image":
        (tmp_path / "images" / "camera_1.jpg").unlink()
    elif damage == "corrupt_image":
        (tmp_path / "images" / "camera_1.jpg").write_bytes(b"\xff\xd8 truncated")
    elif damage == "wrong_size":
        path.write_text(path.read_text().replace('"width": 40', '"width": 50', 1))
    source = _source(tmp_path)
    first, second = source.items("train")
    with pytest.raises(Quarantine, match=reason):
        source.load(first)
    assert source.load(second).labels["boxes_cls.npy"][0].tolist() == [BOXES.index("hand")]

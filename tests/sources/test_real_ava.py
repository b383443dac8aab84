"""AVA v2.2 adapter: keyframe -> frame mapping, person grouping, 60-class multi-hot, box cropping,
exclusions, proposals, from extracted frames and from video."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from real_fixtures import AVA_60, AVA_VIDEOS, ava_pbtxt, make_ava, read_index

from pipeline.config import BuildConfig
from pipeline.finish import finish_sample
from pipeline.sources import SourceError, get_source
from pipeline.sources.ava import clip_indices, read_label_map
from pipeline.sources.base import Quarantine

CONFIG = BuildConfig(frames=4, size=32, label_stride=4, sampling_rate=2)
V0, V1 = AVA_VIDEOS


@pytest.fixture(scope="module")
def frames_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ava_frames")
    make_ava(root)
    return root


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ava_video")
    make_ava(root, videos=True)
    return root


def source(root, config=CONFIG):
    return get_source("ava")(root, config)


def items(root, split="train", config=CONFIG):
    return {item.id: item for item in source(root, config).items(split)}


def test_keyframe_maps_to_frame_index_sec_minus_900_times_30():
    assert clip_indices(902, 4, 2) == [56, 58, 60, 62]  # keyframe 902 -> index 60 -> <vid>_000061.jpg
    assert clip_indices(1798, 32, 2)[16] == (1798 - 900) * 30


@pytest.mark.parametrize("root_name", ["frames_root", "video_root"])
def test_clip_is_centred_on_the_keyframe(root_name, request):
    root = request.getfixturevalue(root_name)
    sample = source(root).load(items(root)[f"{V0}_0903"])
    assert sample.frame_indices == [86, 88, 90, 92]
    assert [read_index(f) for f in sample.video] == [86, 88, 90, 92]
    assert sample.orig_hw == (36, 64)
    item = items(root)[f"{V0}_0903"]
    _, video, _ = finish_sample(sample, item, "ava", CONFIG, "0" * 16)
    assert video.shape == (4, 32, 57, 3)  # the whole 16:9 frame, short side 32 (frames or video alike)
    assert sample.extra["ava_key"] == f"{V0},0903" and sample.extra["keyframe_index"] == 90


def test_persons_are_grouped_by_box_and_labelled_over_the_60_classes(frames_root):
    sample = source(frames_root).load(items(frames_root)[f"{V0}_0902"])
    boxes, labels = sample.labels["ava_boxes.npy"], sample.labels["ava_labels.npy"]
    assert boxes.dtype == np.float32 and labels.dtype == np.uint8 and labels.shape == (2, 60)
    assert [AVA_60[k] for k in np.flatnonzero(labels[0])] == [12, 80]  # a person with two actions
    # --crop none: the boxes are the CSV's, the person at the left edge included
    np.testing.assert_allclose(boxes, [[0.25, 0.1, 0.5, 0.9], [0.0, 0.1, 0.2, 0.5]])
    assert sample.extra["persons_cropped_out"] == 0
    assert sample.label is None and sample.oscc is None


def test_a_centre_crop_maps_the_persons_and_counts_those_cut_away(frames_root):
    config = BuildConfig(frames=4, size=32, label_stride=4, sampling_rate=2, crop="centre")
    sample = source(frames_root, config).load(items(frames_root, config=config)[f"{V0}_0902"])
    boxes, labels = sample.labels["ava_boxes.npy"], sample.labels["ava_labels.npy"]
    assert labels.shape == (1, 60)
    # centre square of 64x36: x in [14, 50) -> left 0.21875, width 0.5625
    np.testing.assert_allclose(
        boxes[0], [(0.25 - 0.21875) / 0.5625, 0.1, (0.5 - 0.21875) / 0.5625, 0.9], atol=1e-6
    )
    assert sample.extra["persons_cropped_out"] == 1  # the person at x <= 0.2 is outside the crop


def test_actions_outside_the_60_classes_leave_an_unlabelled_person(frames_root):
    sample = source(frames_root).load(items(frames_root)[f"{V0}_0903"])
    assert sample.labels["ava_labels.npy"].shape == (1, 60) and not sample.labels["ava_labels.npy"].any()


def test_excluded_timestamps_are_skipped_and_proposals_are_attached(frames_root):
    proposals = (("proposals", "ava_val_predicted_boxes.csv"),)
    config = BuildConfig(frames=4, size=32, label_stride=4, sampling_rate=2, options=proposals)
    val = items(frames_root, "val", config)
    assert list(val) == [f"{V1}_0902"]
    sample = source(frames_root, config).load(val[f"{V1}_0902"])
    assert len(sample.extra["ava_proposals"]) == 1 and sample.extra["ava_proposals"][0][4] == 0.95


def test_excluded_timestamps_file_follows_the_annotation_version(tmp_path):
    # A v2.1 download ships ava_val_v2.1.csv with ava_val_excluded_timestamps_v2.1.csv (no v2.2 file)
    make_ava(tmp_path, version="2.1")
    assert list(items(tmp_path, "val")) == [f"{V1}_0902"]


def test_clip_near_the_end_of_the_frames_is_clamped_and_counted(tmp_path):
    make_ava(tmp_path, frames_per_video=121)
    sample = source(tmp_path).load(items(tmp_path)[f"{V1}_0904"])  # centre 120 = the last frame
    assert sample.frame_indices == [116, 118, 120, 120] and sample.extra["padded_frames"] == 1


def test_label_map_reader_accepts_both_pbtxt_styles(tmp_path):
    for style in ("label", "item"):
        path = tmp_path / f"{style}.pbtxt"
        path.write_text(ava_pbtxt(style))
        pairs = read_label_map(path)
        assert [i for i, _ in pairs] == list(AVA_60) and pairs[0][1] == "action 1"


def test_bad_rows_and_missing_frames_are_quarantined(frames_root, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(frames_root, root)
    gt = root / "annotations" / "ava_train_v2.2.csv"
    gt.write_text(
        gt.read_text() + f"{V0},0901,0.1,0.1,0.2,0.2,12,1\n{V0},0905,0.1,0.1,1.2,0.2,12,1\n"
        "unknownvid1,0902,0.1,0.1,0.2,0.2,12,1\n"
    )
    found = items(root)
    for item_id, reason in (
        (f"{V0}_0901", "outside the annotated keyframes"),
        (f"{V0}_0905", "not normalised"),
        ("unknownvid1_0902", "not in the frame list"),
    ):
        with pytest.raises(Quarantine, match=reason):
            source(root).load(found[item_id])


def test_missing_ground_truth_is_a_source_error(frames_root, tmp_path):
    root = tmp_path / "nogt"
    shutil.copytree(frames_root, root)
    (root / "annotations" / "ava_val_v2.2.csv").unlink()
    with pytest.raises(SourceError, match="ava val ground truth"):
        list(source(root).items("val"))


def test_a_person_at_the_right_edge_survives_into_the_shard_as_the_csv_box(frames_root, tmp_path):
    from pipeline.build import BuildRequest, build_source
    from pipeline.reader import iter_samples

    report = build_source(
        BuildRequest("ava", tmp_path, CONFIG, root=frames_root, splits=["train"], workers=0)
    )
    shard = {s["meta"]["id"]: s for s in iter_samples(report.out_dir)}
    edge = shard[f"{V0}_0905"]
    assert edge["video"].shape == (4, 32, 57, 3) and edge["meta"]["hw"] == [32, 57]
    # mapped back to the full frame (crop_box is the whole frame) it is exactly the CSV row's box
    top, left, height, width = edge["meta"]["crop_box"]
    assert (top, left, height, width) == (0, 0, 36, 64)
    np.testing.assert_allclose(edge["ava_boxes.npy"], [[0.812, 0.3, 1.0, 0.95]], atol=1e-6)
    both = shard[f"{V0}_0902"]["ava_boxes.npy"]  # the left-edge person is kept too
    np.testing.assert_allclose(both, [[0.25, 0.1, 0.5, 0.9], [0.0, 0.1, 0.2, 0.5]], atol=1e-6)

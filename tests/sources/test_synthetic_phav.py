"""phav adapter (guessed VKITTI-style format): the decoders, their self-checks, and quarantine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic_fixtures import write_phav_video

from pipeline.config import BuildConfig
from pipeline.labelspace import load_label_space
from pipeline.schema import SEGM_IGNORE
from pipeline.sources.base import Quarantine, SourceError
from pipeline.sources.phav import PhavSource, read_colour_table

U = load_label_space("unified")


def _source(root: Path, frames: int = 3, **options: str) -> PhavSource:
    return PhavSource(root, BuildConfig(frames=frames, options=tuple(sorted(options.items()))))


def _load_only(source: PhavSource):
    (item,) = source.items("train")
    return source.load(item)


def test_frame_folders_load_with_depth_in_metres(tmp_path: Path) -> None:
    write_phav_video(tmp_path, t=3)
    sample = _load_only(_source(tmp_path))
    depth = sample.labels["depth.npy"]
    assert sample.video.shape == (3, 12, 16, 3) and depth.dtype == np.float16
    np.testing.assert_allclose(depth[:, 5, 5], [1.0, 1.5, 2.0])  # (100 + 50 k) cm
    assert np.isnan(depth[:, 0]).all()  # 65535 = invalid
    assert sample.extra["phav_format"] == "vkitti-guess" and sample.extra["segm_space"] == "unified"


def test_rgb_as_a_video_file(tmp_path: Path) -> None:
    write_phav_video(tmp_path, t=4, rgb_as_video=True)
    sample = _load_only(_source(tmp_path, frames=2))
    assert sample.frame_indices == [1, 3] and sample.fps == pytest.approx(30.0)
    np.testing.assert_allclose(sample.labels["depth.npy"][:, 5, 5], [1.5, 2.5])
    np.testing.assert_allclose(sample.video[:, 5, 5, 0], [15, 35], atol=3)


def test_the_frame_stride_option_reaches_the_sampler(tmp_path: Path) -> None:
    write_phav_video(tmp_path, t=7)
    assert _load_only(_source(tmp_path, frames=3, frame_stride="3")).frame_indices == [0, 3, 6]  # 3 apart


def test_colour_table_segmentation_maps_into_the_unified_space(tmp_path: Path) -> None:
    write_phav_video(tmp_path)
    sample = _load_only(_source(tmp_path))
    segm = sample.labels["segm.npy"][0]
    assert segm[0, 0] == U.index("phav/sky") and segm[10, 0] == U.index("phav/road")
    assert segm[3, 3] == U.index("phav/human")
    assert segm[-1, -1] == SEGM_IGNORE  # colour not in the table
    assert sample.extra["unmapped_classes"] == ["spaceship"]
    assert sample.extra["segm_unknown_fraction"] == pytest.approx(1 / (12 * 16), abs=1e-4)


def test_colour_table_reader_skips_the_header_and_strips_instance_numbers(tmp_path: Path) -> None:
    path = tmp_path / "table.txt"
    path.write_text("Category r g b\nCar:3 200 200 0\nTraffic Sign 1 2 3\n")
    assert read_colour_table(path) == {(200, 200, 0): "car", (1, 2, 3): "traffic sign"}


def test_index_mode_reads_class_indices(tmp_path: Path) -> None:
    paths = write_phav_video(tmp_path, t=1)
    index = np.zeros((12, 16), np.uint8)
    index[0, 0] = 14  # the 15th PHAV class in the mapping: human
    index[0, 1] = 200  # past the class list
    Image.fromarray(index).save(paths["segm"] / "00000.png")
    segm = _load_only(_source(tmp_path, frames=1, phav_segm="index")).labels["segm.npy"][0]
    assert segm[0, 0] == U.index("phav/human") and segm[1, 1] == U.index("phav/terrain")
    assert segm[0, 1] == SEGM_IGNORE


def test_unknown_format_option_is_refused(tmp_path: Path) -> None:
    write_phav_video(tmp_path)
    with pytest.raises(SourceError, match="phav_format"):
        list(_source(tmp_path, phav_format="official").items("train"))


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("depth_8bit", "not single-channel 16-bit"),
        ("depth_short", "frame counts disagree: rgb 3, depth 2, segm 3"),
        ("segm_no_match", "no pixel matches the colour table"),
    ],
)
def test_bad_videos_are_quarantined_with_their_reason(tmp_path: Path, damage: str, reason: str) -> None:
    write_phav_video(
        tmp_path, t=3, depth_8bit=damage == "depth_8bit", depth_frames=2 if damage == "depth_short" else None
    )
    if damage == "segm_no_match":
        (tmp_path / "semseg_colors.txt").write_text("Sky 1 1 1\n")
    with pytest.raises(Quarantine, match=reason):
        _load_only(_source(tmp_path))

"""Build geometry: the kept window, the stored size, nearest label maps, boxes through the window."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import BuildConfig
from pipeline.geometry import (
    Framing,
    crop_boxes,
    frame_geometry,
    pad_box_slots,
    resize_frames,
    resize_map,
    stored_geometry,
)


def test_crop_none_keeps_a_16_9_frame_whole() -> None:
    geometry = frame_geometry(720, 1280, BuildConfig(size=256))
    assert geometry.crop_box == (0, 0, 720, 1280)
    assert geometry.hw == (256, 455)  # 256 * 1280 / 720 = 455.1, rounded half up like ffmpeg's scale
    assert geometry.label_hw == (64, 114)  # label stride 4, rounded half up


def test_crop_centre_keeps_the_centre_square() -> None:
    geometry = frame_geometry(720, 1280, BuildConfig(size=256, crop="centre"))
    assert geometry.crop_box == (0, 280, 720, 720) and geometry.hw == (256, 256)


@pytest.mark.parametrize(("hw", "box"), [((100, 500), (0, 150, 100, 200)), ((500, 100), (150, 0, 200, 100))])
def test_a_long_side_beyond_max_aspect_is_centre_cropped_to_it(hw, box) -> None:
    geometry = stored_geometry(*hw, Framing(50, "none", 2.0))
    assert geometry.crop_box == box
    assert sorted(geometry.hw) == [50, 100]


def test_label_map_samples_the_kept_window_by_nearest_neighbour() -> None:
    # A 4 x 8 map whose value is the column index; --crop centre keeps columns 2..5 and a 2x2 label grid
    # samples them at its cell centres, columns 3 and 5.
    geometry = stored_geometry(4, 8, Framing(4, "centre"), label_stride=2)
    label_map = np.tile(np.arange(8, dtype=np.uint16), (1, 4, 1))
    out = resize_map(label_map, geometry)
    np.testing.assert_array_equal(out[0], [[3, 5], [3, 5]])
    assert out.dtype == np.uint16


def test_full_frame_label_map_keeps_every_column_of_a_wide_frame() -> None:
    geometry = stored_geometry(4, 8, Framing(4), label_stride=2)  # stored 4x8, label grid 2x4
    label_map = np.tile(np.arange(8, dtype=np.uint16), (1, 4, 1))
    np.testing.assert_array_equal(resize_map(label_map, geometry)[0], [[1, 3, 5, 7], [1, 3, 5, 7]])


def test_nan_survives_nearest_resampling_without_spreading() -> None:
    geometry = stored_geometry(4, 4, Framing(4), label_stride=2)
    depth = np.ones((1, 4, 4), dtype=np.float16)
    depth[0, 1, 1] = np.nan  # the pixel target cell (0, 0) samples
    out = resize_map(depth, geometry)
    assert np.isnan(out[0, 0, 0]) and np.isfinite(out[0, 1:, :]).all() and np.isfinite(out[0, 0, 1])


def test_frames_keep_their_aspect_or_the_centre_square() -> None:
    video = np.zeros((2, 20, 40, 3), dtype=np.uint8)
    video[:, :, 10:30] = 200  # exactly the centre square
    whole = resize_frames(video, stored_geometry(20, 40, Framing(10)))
    assert whole.shape == (2, 10, 20, 3) and (whole[:, :, :4] == 0).all() and (whole[:, :, 6:14] == 200).all()
    square = resize_frames(video, stored_geometry(20, 40, Framing(10, "centre")))
    assert square.shape == (2, 10, 10, 3) and (square == 200).all()


def test_boxes_map_into_the_window_and_vanish_outside_it() -> None:
    window = stored_geometry(100, 200, Framing(50, "centre")).window  # keeps x in [0.25, 0.75]
    boxes = np.array([[[0.25, 0.0, 0.5, 1.0], [0.0, 0.1, 0.2, 0.2], [0.7, 0.5, 0.9, 0.6]]], dtype=np.float32)
    classes = np.array([[1, 2, 3]], dtype=np.int16)
    out, out_classes = crop_boxes(boxes, classes, window)
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 0.5, 1.0])
    assert np.isnan(out[0, 1]).all() and out_classes[0, 1] == -1  # entirely left of the crop
    np.testing.assert_allclose(out[0, 2], [0.9, 0.5, 1.0, 0.6], atol=1e-6)  # clipped at the right edge


def test_boxes_at_the_frame_edges_survive_a_full_frame_build() -> None:
    window = stored_geometry(100, 200, Framing(50)).window
    boxes = np.array([[[0.0, 0.1, 0.05, 0.2], [0.9, 0.5, 1.0, 0.6]]], dtype=np.float32)
    out, classes = crop_boxes(boxes, np.array([[1, 2]], dtype=np.int16), window)
    np.testing.assert_allclose(out, boxes)
    assert (classes >= 0).all()


def test_box_slots_keep_order_and_pad() -> None:
    boxes = np.array([[[0, 0, 1, 1], [np.nan] * 4, [0, 0, 0.5, 0.5]]], dtype=np.float32)
    classes = np.array([[4, -1, 5]], dtype=np.int16)
    out, out_classes = pad_box_slots(boxes, classes, 4)
    assert out.shape == (1, 4, 4)
    np.testing.assert_array_equal(out_classes, [[4, 5, -1, -1]])
    assert np.isnan(out[0, 2:]).all()

"""Build geometry: centre square, nearest-neighbour label maps, boxes through the crop."""

from __future__ import annotations

import numpy as np

from pipeline.geometry import (
    centre_square,
    crop_and_resize_frames,
    crop_and_resize_map,
    crop_boxes,
    pad_box_slots,
)


def test_label_map_takes_the_centre_square_by_nearest_neighbour() -> None:
    # 4 x 8 map whose value is the column index: the centre square is columns 2..5, and two target
    # cells sample it at their centres, columns 3 and 5.
    label_map = np.tile(np.arange(8, dtype=np.uint16), (1, 4, 1))
    out = crop_and_resize_map(label_map, 2)
    np.testing.assert_array_equal(out[0], [[3, 5], [3, 5]])
    assert out.dtype == np.uint16


def test_nan_survives_nearest_resampling_without_spreading() -> None:
    depth = np.ones((1, 4, 4), dtype=np.float16)
    depth[0, 1, 1] = np.nan  # the pixel target cell (0, 0) samples
    out = crop_and_resize_map(depth, 2)
    assert np.isnan(out[0, 0, 0]) and np.isfinite(out[0, 1:, :]).all() and np.isfinite(out[0, 0, 1])


def test_frames_become_square_and_keep_the_centre() -> None:
    video = np.zeros((2, 20, 40, 3), dtype=np.uint8)
    video[:, :, 10:30] = 200  # exactly the centre square
    out = crop_and_resize_frames(video, 10)
    assert out.shape == (2, 10, 10, 3)
    assert (out == 200).all()


def test_boxes_map_into_the_crop_and_vanish_outside_it() -> None:
    window = centre_square(100, 200)  # keeps x in [0.25, 0.75] of the original width
    boxes = np.array([[[0.25, 0.0, 0.5, 1.0], [0.0, 0.1, 0.2, 0.2], [0.7, 0.5, 0.9, 0.6]]], dtype=np.float32)
    classes = np.array([[1, 2, 3]], dtype=np.int16)
    out, out_classes = crop_boxes(boxes, classes, window)
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 0.5, 1.0])
    assert np.isnan(out[0, 1]).all() and out_classes[0, 1] == -1  # entirely left of the crop
    np.testing.assert_allclose(out[0, 2], [0.9, 0.5, 1.0, 0.6], atol=1e-6)  # clipped at the right edge


def test_box_slots_keep_order_and_pad() -> None:
    boxes = np.array([[[0, 0, 1, 1], [np.nan] * 4, [0, 0, 0.5, 0.5]]], dtype=np.float32)
    classes = np.array([[4, -1, 5]], dtype=np.int16)
    out, out_classes = pad_box_slots(boxes, classes, 4)
    assert out.shape == (1, 4, 4)
    np.testing.assert_array_equal(out_classes, [[4, 5, -1, -1]])
    assert np.isnan(out[0, 2:]).all()

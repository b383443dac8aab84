"""The shared frame sampler of the synthetic adapters."""

from __future__ import annotations

import pytest

from pipeline.config import BuildConfig
from pipeline.sources._synthetic_common import sample_frames
from pipeline.sources.base import Quarantine


def test_long_source_is_covered_by_segment_centres() -> None:
    assert sample_frames(100, BuildConfig(frames=4)) == ([12, 37, 62, 87], 0)


def test_short_source_is_padded_with_its_last_frame() -> None:
    assert sample_frames(2, BuildConfig(frames=4)) == ([0, 1, 1, 1], 2)


def test_a_stride_takes_a_centred_window() -> None:
    config = BuildConfig(frames=4)
    assert sample_frames(20, config, stride=2) == ([6, 8, 10, 12], 0)
    assert sample_frames(5, config, stride=2) == ([0, 2, 4, 4], 1)


def test_no_frames_is_quarantined() -> None:
    with pytest.raises(Quarantine, match="no frames"):
        sample_frames(0, BuildConfig(frames=4))

"""End to end: every real adapter through `build_source` (serial), read back and verified."""

from __future__ import annotations

import numpy as np
import pytest
from real_fixtures import (
    encode,
    index_frames,
    make_ava,
    make_diving48,
    make_ego4d,
    make_something_else,
    make_ssv2,
)

from pipeline.build import BuildRequest, build_source
from pipeline.config import BuildConfig
from pipeline.reader import iter_samples, verify
from pipeline.sources import get_source

MAKERS = {
    "ssv2": make_ssv2,
    "something-else": make_something_else,
    "diving48": make_diving48,
    "ego4d": make_ego4d,
    "ava": make_ava,
    "videofolder": lambda root: encode(root / "wave" / "a.mp4", index_frames(12, 48, 64), 30),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_build_writes_verified_shards(name, tmp_path):
    raw = tmp_path / "raw"
    MAKERS[name](raw)
    rate = 2 if "sampling_rate" in get_source(name).sampling.reads else None  # a flag only where it is read
    config = BuildConfig(frames=4, size=32, label_stride=4, max_objects=3, sampling_rate=rate)
    report = build_source(BuildRequest(name, tmp_path / "out", config, root=raw, workers=0))
    assert report.samples > 0
    assert verify(report.out_dir) == []
    samples = list(iter_samples(report.out_dir))
    assert len(samples) == report.samples
    for sample in samples:
        meta = sample["meta"]
        height, width = meta["orig_hw"]
        assert sample["video"].shape == (4, 32, (32 * width + height // 2) // height, 3)  # whole frame
        assert meta["hw"] == list(sample["video"].shape[1:3]) and width > height
        assert meta["padded_frames"] >= 0 and len(meta["frame_indices"]) == 4
        if name == "ego4d" and meta["split"] != "test":
            assert meta["oscc"] in (0, 1) and sample["pnr.npy"].shape == (4,)
        if name == "ava":
            assert sample["ava_labels.npy"].shape[1] == 60 and "ava" in meta["tasks"]
        if name == "something-else" and "boxes" in meta["tasks"]:
            assert sample["boxes.npy"].shape == (4, 3, 4) and np.nanmax(sample["boxes.npy"]) <= 1

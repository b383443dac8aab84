"""Build throughput of the five synthetic adapters on fixtures of realistic frame size.

Run with `pytest -m bench -s tests/sources/test_synthetic_bench.py`. One serial in-process worker
(`workers=0`), default geometry (16 frames, 224 px, 56 px labels); fixture writing is not timed.
Fixture content is random noise, the worst case for the HDF5 gzip and video codecs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from synthetic_fixtures import (
    rect_polygon,
    write_ehoi,
    write_hypersim,
    write_phav_video,
    write_surreact_clip,
    write_synadl_clip,
)

from pipeline.build import BuildRequest, build_source
from pipeline.config import BuildConfig

CONFIG = BuildConfig(frames=16, size=256, label_stride=4)


def _hypersim(root: Path) -> int:
    # 1024x768, 16-frame trajectories (real ones have ~100 keyframes; 16 are decoded either way)
    write_hypersim(
        root,
        {("ai_001_001", "cam_00"): ("train", 16), ("ai_001_002", "cam_00"): ("train", 16)},
        height=768,
        width=1024,
        compression=4,
    )
    return 2


def _surreact(root: Path) -> int:
    rng = np.random.default_rng(0)
    for k in range(4):
        frames = rng.integers(0, 256, (90, 240, 320, 3), dtype=np.uint8)
        write_surreact_clip(
            root,
            seq=f"S001C001P001R001A{k + 1:03d}",
            t=90,
            height=240,
            width=320,
            video_frames=frames,
            depth=False,
        )
    return 4


def _phav(root: Path) -> int:
    for k in range(2):
        write_phav_video(root, f"video_{k}", t=48, height=360, width=640, rgb_as_video=True)
    return 2


def _kist(root: Path) -> int:
    for k in range(3):
        write_synadl_clip(root, f"A{k + 1:03d}_P101_G001_C001", t=150, height=360, width=640)
    return 3


def _ehoi(root: Path) -> int:
    box = {c: [40 * c, 30, 100, 80] for c in range(20)}
    anns = [{"category_id": c, "bbox": box[c], "segmentation": rect_polygon(*box[c])} for c in range(20)]
    write_ehoi(root, images=[{"id": k, "anns": anns} for k in range(1, 9)], height=720, width=1280)
    return 8


FIXTURES = {"hypersim": _hypersim, "surreact": _surreact, "phav": _phav, "kist-synadl": _kist, "ehoi": _ehoi}


@pytest.mark.bench
@pytest.mark.parametrize("source", list(FIXTURES))
def test_build_throughput(tmp_path: Path, source: str) -> None:
    clips = FIXTURES[source](tmp_path / "raw")
    start = time.perf_counter()
    raw, out = tmp_path / "raw", tmp_path / "out"
    report = build_source(BuildRequest(source, out, CONFIG, root=raw, splits=["train"], workers=0))
    seconds = time.perf_counter() - start
    assert report.samples == clips and not report.quarantined
    geometry = f"frames={CONFIG.frames}, size={CONFIG.size}, label_stride={CONFIG.label_stride}"
    rate = f"{clips} clips in {seconds:6.2f} s = {clips / seconds:6.2f} clips/s per worker"
    print(f"\n[bench] {source:12s} {rate} ({geometry})")

"""Benchmark (deselected by default): `pytest -m bench -s tests/sources/test_real_bench.py`."""

from __future__ import annotations

import pytest

from pipeline import bench_decode


@pytest.mark.bench
@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_decode_downsample_throughput_against_plain_ffmpeg(codec, capsys):
    rows = bench_decode.run(clips=16, seconds=3.0, codec=codec, size=224, repeats=2)
    with capsys.disabled():
        for row in rows:
            print(
                f"\n{codec} workers={row['workers']} plain {row['plain_fps']:.0f} fps, "
                f"adapter {row['adapter_fps']:.0f} fps, ratio {row['ratio']:.2f}"
            )
    assert all(row["frames"] > 0 for row in rows)

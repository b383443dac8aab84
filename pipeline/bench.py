"""`pvit-pipeline bench`: build and read throughput, each against a baseline from the same run.

- build: procedural clips/s at two geometries, serially (and with Ray when `--workers N > 0`);
  the baseline is the adapter alone (render only, no finalise/encode/write), so the ratio is the
  share of time the engine leaves to the adapter.
- read: decoded samples/s and MB/s through `iter_samples`, against a plain sequential read of the
  same tar files (bytes only) measured right before it. These machines are noisy: quote ratios.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.build import BuildRequest, build_source
from pipeline.config import BuildConfig
from pipeline.parallel import local_ray
from pipeline.reader import iter_samples, shard_paths
from pipeline.sources.procedural import ProceduralSource

GEOMETRIES: tuple[dict[str, Any], ...] = (
    {"frames": 8, "size": 64, "label_stride": 4},
    {"frames": 16, "size": 256, "label_stride": 4},
)


def _render_only_rate(config: BuildConfig, samples: int) -> float:
    adapter = ProceduralSource(None, config)
    items = list(adapter.items("train"))[:samples]
    started = time.perf_counter()
    for item in items:
        adapter.load(item)
    return len(items) / (time.perf_counter() - started)


def _plain_read(paths: list[str]) -> tuple[float, int]:
    started, total = time.perf_counter(), 0
    for path in paths:
        with open(path, "rb") as stream:
            while block := stream.read(1 << 20):
                total += len(block)
    return time.perf_counter() - started, total


def _decoded_read(source_dir: Path) -> tuple[float, int]:
    started, count = time.perf_counter(), 0
    for _ in iter_samples(source_dir):
        count += 1
    return time.perf_counter() - started, count


def run_bench(num_samples: int = 48, workers: int = 0, work_dir: Path | None = None) -> str:
    """Run the benchmarks and return the report as text."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(work_dir or scratch)
        lines = [f"pvit-pipeline bench: {num_samples} procedural clips per geometry (train split only)"]
        for geometry in GEOMETRIES:
            # Small units (shards) so that every worker has several to build.
            config = BuildConfig(**geometry, num_samples=num_samples, samples_per_shard=8)
            label = f"{geometry['frames']}x{geometry['size']}^2"
            render = _render_only_rate(config, min(num_samples, 16))
            for count in sorted({0, workers}):
                target = out / f"{label}-w{count}"
                with local_ray(count) if count else contextlib.nullcontext():
                    started = time.perf_counter()
                    report = build_source(
                        BuildRequest("procedural", target, config, splits=["train"], workers=count)
                    )
                    rate = report.samples / (time.perf_counter() - started)
                mode = "serial" if count == 0 else f"ray x{count}"
                lines.append(
                    f"build {label} {mode:>8}: {rate:7.1f} clips/s  (render only {render:.1f} clips/s; "
                    f"ratio {rate / render:.2f})"
                )
            source_dir = out / f"{label}-w0" / "procedural"
            paths = shard_paths(source_dir)
            _plain_read(paths)  # warm the page cache so both reads below see the same storage
            plain_s, total = _plain_read(paths)
            decoded_s, count = _decoded_read(source_dir)
            plain_mb, decoded_mb = total / plain_s / 1e6, total / decoded_s / 1e6
            lines.append(
                f"read  {label}: decoded {count / decoded_s:8.1f} samples/s {decoded_mb:8.1f} MB/s | "
                f"plain read {count / plain_s:9.1f} samples/s {plain_mb:8.1f} MB/s | "
                f"ratio {plain_s / decoded_s:.3f}"
            )
        return "\n".join(lines)

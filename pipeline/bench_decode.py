"""Decode + downsample throughput of the real-video path against a plain ffmpeg decode.

    python -m pipeline.bench_decode [--clips 16] [--seconds 3] [--codec h264|vp9] [--size 224]

Encodes `--clips` test clips (320x240, `testsrc2` content), then times on the same files:
(a) `ffmpeg -i f -f rawvideo -` to /dev/null (every frame, full size, native pixel format), and
(b) the adapters' path `pipeline.video.sample_clip` with SSv2's 16-frame rule: frame count from the
container header, every frame decoded (the decoder's count checks the header's), the 16 chosen
frames kept by `select`, and only those cropped, scaled to `--size` and converted to RGB by ffmpeg,
serially and with 2 processes (the baseline then runs 2 ffmpeg processes at a time too).
Plain and adapter runs alternate, best of `--repeats` each, so a load change on the machine hits
both alike. Prints frames per second of decoded source video for both and their ratio (goal: >= 0.8).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from pipeline.sources._real_common import segment_indices
from pipeline.video import ffmpeg_exe, sample_clip

CODECS = {
    "h264": (".mp4", ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]),
    "vp9": (
        ".webm",
        ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-pix_fmt", "yuv420p"],
    ),
}


def make_clips(folder: Path, clips: int, seconds: float, codec: str, fps: int) -> list[Path]:
    suffix, args = CODECS[codec]
    paths = []
    for k in range(clips):
        path = folder / f"clip{k:03d}{suffix}"
        source = f"testsrc2=size=320x240:rate={fps}"
        cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            source,
            "-ss",
            f"{k * 0.37:.2f}",
            "-t",
            str(seconds),
            *args,
            str(path),
        ]
        subprocess.run(cmd, check=True)
        paths.append(path)
    return paths


def plain_decode(path: Path) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def adapter_decode(path: Path, size: int, frames: int) -> int:
    clip = sample_clip(path, size, lambda n: segment_indices(n, frames))
    return clip.decoded


def timed(function, paths: list[Path], pool) -> float:
    """Seconds to run `function` over `paths`, serially (`pool` None) or on a warm pool."""
    start = time.perf_counter()
    if pool is None:
        for path in paths:
            function(path)
    else:
        list(pool.map(function, paths))
    return time.perf_counter() - start


def run(
    clips: int = 16, seconds: float = 3.0, codec: str = "h264", size: int = 224, repeats: int = 5
) -> list[dict]:
    """Time both paths; return one row per worker count (best of `repeats`).

    Pools are started and warmed up before timing: a build's workers are long-lived, so their
    start-up is not decode cost.
    """
    fps = 12 if codec == "vp9" else 30
    rows = []
    ours = partial(adapter_decode, size=size, frames=16)
    with tempfile.TemporaryDirectory() as folder:
        paths = make_clips(Path(folder), clips, seconds, codec, fps)
        total = sum(ours(p) for p in paths)  # warm-up; counts source frames
        for workers in (1, 2):
            threads = ThreadPoolExecutor(workers) if workers > 1 else None
            processes = ProcessPoolExecutor(workers) if workers > 1 else None
            if processes is not None:
                list(processes.map(ours, paths[:workers]))
            plain, adapter = float("inf"), float("inf")
            for _ in range(repeats):  # interleaved: both see the same background load
                plain = min(plain, timed(plain_decode, paths, threads))
                adapter = min(adapter, timed(ours, paths, processes))
            for pool in (threads, processes):
                if pool is not None:
                    pool.shutdown()
            rows.append(
                {
                    "workers": workers,
                    "frames": total,
                    "plain_fps": total / plain,
                    "adapter_fps": total / adapter,
                    "ratio": plain / adapter,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--codec", choices=sorted(CODECS), default="h264")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    size = f"{args.size}x{args.size}"
    print(f"{args.clips} clips, 320x240, {args.seconds:g} s, {args.codec}; adapter output {size}")
    for row in run(args.clips, args.seconds, args.codec, args.size, args.repeats):
        print(
            f"workers={row['workers']}  source frames={row['frames']}  "
            f"plain ffmpeg {row['plain_fps']:8.0f} fps  "
            f"decode+downsample {row['adapter_fps']:8.0f} fps  ratio {row['ratio']:.2f}"
        )


if __name__ == "__main__":
    main()

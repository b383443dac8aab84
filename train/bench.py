"""Loader benchmark: clips/s the training loop receives per worker core vs the raw shard read rate.

    python -m train.bench [--codec npy jpeg] [--crop-size 224] [--train-scale 256 320] [--workers 0 2]
    python -m train.bench --shards shards --source procedural [--workers 0 2] [--steps 30] [--batch-size 16]
    python -m train.bench --shards s3://bucket/prefix --source NAME [--cache-dir DIR] [--storage-option KV]

Without `--shards` it builds procedural shards for each `--codec` in a temporary directory, 16 frames at
short side 256 (4:3, so 256x341 stored). For each set of tars both figures come from the same run: first a
plain sequential read of every train shard (MB/s and samples/s, page cache as it is), then the trainer's own
`MixedBatches` loader (span reads, decode, scale jitter + random crop + flip, collate; no model) for each
worker count. "Per core" is the rate divided by the worker processes (`0` = the main process alone).

    python -m train.bench --device cuda --preset mvit_v2_s --workers 16 [--compile] [--steps 30]

With a URL `--shards` the raw read is a whole-object download of every train shard and the loader reads spans
by ranged requests; with `--cache-dir` too, the loader runs twice, from an emptied cache (cold: the first
touch of each shard downloads it whole) and again from the filled one (warm: no network).

With `--device`, the trainer itself runs instead (`train.main`: the real loader into the real training step,
`--source` as both streams) and the line gives its steady clips/s and data-wait share.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pipeline.shardcache import parse_size
from pipeline.spans import ReadSettings
from pipeline.storage import parse_storage_options
from train.augment import Protocol
from train.data import Geometry, MixedBatches, StreamSpec, make_loader
from train.plan import StreamPlan
from train.sources import open_source


def raw_read_rate(source, split: str = "train") -> dict[str, float]:
    """Read every shard of `split` start to end in 8 MiB blocks (a URL's: downloaded whole); the ceiling for
    any loader."""
    table = source.split(split)
    names = [source.build_shards[i]["name"] for i in sorted(set(table.shard.tolist()))]
    started, total = time.perf_counter(), 0
    for name in names:
        with source.directory.open_read(name) as stream:
            while block := stream.read(8 << 20):
                total += len(block)
    seconds = time.perf_counter() - started
    return {"MB/s": total / 1e6 / seconds, "samples/s": len(table) / seconds, "MB": total / 1e6}


def loader_rate(source, workers: int, steps: int, batch_size: int, protocol: Protocol) -> dict[str, float]:
    """Clips/s delivered by the trainer's loader (one real stream, training augmentation on)."""
    table = source.split("train")
    plan = StreamPlan((table.shard,), (1.0,), seed=0, stream_id=0, views=(table.view_matrix(),))
    stream = StreamSpec("real", plan, [source], [table], batch_size, world=1, rank=0)
    geometry = Geometry(protocol, source.config.max_objects)
    loader = make_loader(MixedBatches([stream], 0, steps, geometry, 0), workers)
    iterator = iter(loader)
    next(iterator)  # the first batch pays for worker start-up; the steady rate is what training sees
    started, clips = time.perf_counter(), 0
    for batch in iterator:
        clips += batch["real"]["video"].shape[0]
    seconds = time.perf_counter() - started
    return {"clips/s": clips / seconds, "clips": clips}


def training_rate(args: argparse.Namespace, workers: int) -> dict[str, float]:
    """Clips/s and data-wait share of the trainer itself (`train.main`: its loader, its step, its meter).

    `--source` is both the real and the synthetic stream. Progress lines come every `--warmup` steps; the
    first interval (worker start-up, cuDNN autotuning, compilation) is dropped and the rest are summed.
    """
    from train.main import main as train_main  # the trainer pulls in the model; the loader bench does not

    intervals = 1 + -(-args.steps // args.warmup)
    with tempfile.TemporaryDirectory() as out:
        flags = [
            "--shards", args.shards, "--real", args.source, "--synthetic", args.source, "--out", out,
            "--preset", args.preset, "--mode", args.mode, "--device", args.device, "--workers", str(workers),
            "--batch-size", str(args.batch_size), "--synthetic-batch-size", str(args.batch_size),
            "--steps", str(intervals * args.warmup), "--log-every", str(args.warmup), "--no-tensorboard",
            "--compile" if args.compile else "--no-compile",
        ]  # fmt: skip
        train_main(flags)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in rows if r["kind"] == "train"][1:]
    clips = args.warmup * _clips_per_step(args)  # per progress interval
    seconds = [clips / r["clips_per_s"] for r in steady]
    waited = sum(r["data_wait_share"] * t for r, t in zip(steady, seconds, strict=True))
    return {
        "clips/s": clips * len(steady) / sum(seconds),
        "data_wait_share": waited / sum(seconds),
        "steps": args.warmup * len(steady),
    }


def _clips_per_step(args: argparse.Namespace) -> int:
    """vpt and plain train on the real stream only."""
    return args.batch_size * (2 if args.mode in ("pvit", "mt") else 1)


def build_bench_shards(root: Path, codec: str, frames: int, size: int, samples: int) -> Path:
    """Procedural shards for the benchmark (a 4:3 frame, so the crop window has room to move)."""
    from pipeline.build import BuildRequest, build_source
    from pipeline.config import BuildConfig

    config = BuildConfig(frames=frames, size=size, codec=codec, num_samples=samples, samples_per_shard=16)
    build_source(BuildRequest("procedural", root, config, splits=["train"], workers=0))
    return root


def bench_source(source, args: argparse.Namespace, label: str) -> list[str]:
    protocol = Protocol(args.crop_size, tuple(args.train_scale), True, source.config.label_stride)
    raw = raw_read_rate(source)
    lines = [
        f"{label}: raw sequential read of the train tars: {raw['MB']:.1f} MB at {raw['MB/s']:.0f} MB/s "
        f"= {raw['samples/s']:.0f} samples/s"
    ]
    print(lines[0], flush=True)
    cache = source.settings.cache() if not source.directory.local else None
    passes = ["ranged reads"] if not source.directory.local and cache is None else [""]
    if cache is not None:
        passes = ["cold cache", "warm cache"]
        for shard in source.build_shards:  # this build's shards only: the directory may hold others
            cache.path_of(shard["sha256"]).unlink(missing_ok=True)
    for workers in args.workers:
        for how in passes:
            rate = loader_rate(source, workers, args.steps, args.batch_size, protocol)
            per_core = rate["clips/s"] / max(workers, 1)
            lines.append(
                f"{label}: loader{', ' + how if how else ''}, {workers} worker(s), batch {args.batch_size}, "
                f"{args.crop_size}^2 crop: {rate['clips/s']:.0f} clips/s = {per_core:.0f} clips/s per core "
                f"({rate['clips/s'] / raw['samples/s']:.2f}x the raw read rate)"
            )
            print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--shards", help="built shards to read (default: build procedural ones per --codec)")
    parser.add_argument("--source", default="procedural")
    parser.add_argument("--codec", nargs="+", default=["npy", "jpeg"], choices=["npy", "jpeg"])
    parser.add_argument("--frames", type=int, default=16, help="frames of the built shards")
    parser.add_argument("--size", type=int, default=256, help="stored short side of the built shards")
    parser.add_argument("--samples", type=int, default=96, help="training clips to build")
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--train-scale", type=int, nargs=2, default=[256, 320], metavar=("MIN", "MAX"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="time the trainer's step, not the loader")
    parser.add_argument("--preset", default="tiny", help="with --device: the model preset")
    parser.add_argument("--mode", default="pvit", help="with --device: pvit | mt | vpt | plain")
    parser.add_argument("--compile", action="store_true", help="with --device: torch.compile the model")
    parser.add_argument("--warmup", type=int, default=5, help="with --device: untimed first steps")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="fsspec option of a URL --shards (repeatable)")  # fmt: skip
    parser.add_argument(
        "--cache-dir", default="", help="a URL --shards: the local shard cache (cold, then warm)"
    )
    parser.add_argument("--cache-limit", default="50GB", help="bytes the cache keeps (default 50GB)")
    args = parser.parse_args(argv)
    if args.device:
        args.shards = args.shards or "shards"
        return training_lines(args)
    if args.shards:
        settings = ReadSettings(parse_storage_options(args.storage_option), args.cache_dir,
                                parse_size(args.cache_limit))  # fmt: skip
        return bench_source(open_source(args.shards, args.source, settings), args, args.source)
    lines = []
    with tempfile.TemporaryDirectory() as work:
        for codec in args.codec:
            root = build_bench_shards(Path(work) / codec, codec, args.frames, args.size, args.samples)
            lines += bench_source(open_source(root, "procedural"), args, f"procedural {codec}")
    return lines


def training_lines(args: argparse.Namespace) -> list[str]:
    lines = []
    for workers in args.workers:
        rate = training_rate(args, workers)
        compiled = "on" if args.compile else "off"
        lines.append(
            f"training step, {args.preset} {args.mode} on {args.device}, compile {compiled}, "
            f"{workers} worker(s), {_clips_per_step(args)} clips/step: "
            f"{rate['clips/s']:.1f} clips/s, data-wait share {100 * rate['data_wait_share']:.1f}% "
            f"over {rate['steps']} steps after {args.warmup} warm-up"
        )
        print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    main()

"""Loader benchmark: clips/s the training loop receives with N workers vs the raw shard read rate.

    python -m train.bench --shards shards --source procedural [--workers 0 2] [--steps 30] [--batch-size 16]

Both figures come from the same run on the same tars: first a plain sequential read of every train shard
(MB/s and samples/s, page cache as it is; run twice to see the hot-cache rate), then the trainer's own
`MixedBatches` loader (span reads, decode, augmentation, collate; no model) for each worker count.
"""

from __future__ import annotations

import argparse
import time

from train.data import Geometry, MixedBatches, StreamSpec, make_loader
from train.plan import StreamPlan
from train.sources import open_source


def raw_read_rate(source, split: str = "train") -> dict[str, float]:
    """Read every shard of `split` start to end in 8 MiB blocks; the ceiling for any loader."""
    table = source.split(split)
    paths = [source.shards[i] for i in sorted(set(table.shard.tolist()))]
    started, total = time.perf_counter(), 0
    for path in paths:
        with open(path, "rb") as stream:
            while block := stream.read(8 << 20):
                total += len(block)
    seconds = time.perf_counter() - started
    return {"MB/s": total / 1e6 / seconds, "samples/s": len(table) / seconds, "MB": total / 1e6}


def loader_rate(
    source, workers: int, steps: int, batch_size: int, scale: tuple[float, float]
) -> dict[str, float]:
    """Clips/s delivered by the trainer's loader (one real stream, training augmentation on)."""
    table = source.split("train")
    plan = StreamPlan((table.shard,), (1.0,), seed=0, stream_id=0)
    stream = StreamSpec("real", plan, [source], [table], batch_size, world=1, rank=0)
    config = source.config
    geometry = Geometry(
        config["label_size"], config["size"] // config["label_size"], config.get("max_objects", 8)
    )
    loader = make_loader(MixedBatches([stream], 0, steps, geometry, 0, scale, flip=True), workers)
    iterator = iter(loader)
    next(iterator)  # the first batch pays for worker start-up; the steady rate is what training sees
    started, clips = time.perf_counter(), 0
    for batch in iterator:
        clips += batch["real"]["video"].shape[0]
    seconds = time.perf_counter() - started
    return {"clips/s": clips / seconds, "clips": clips}


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--shards", default="shards")
    parser.add_argument("--source", default="procedural")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    source = open_source(args.shards, args.source)
    raw = raw_read_rate(source)
    lines = [
        f"raw sequential read of {args.source} train tars: {raw['MB']:.1f} MB at {raw['MB/s']:.0f} MB/s "
        f"= {raw['samples/s']:.0f} samples/s"
    ]
    for workers in args.workers:
        rate = loader_rate(source, workers, args.steps, args.batch_size, (1.0, 1.25))
        lines.append(
            f"loader, {workers} worker(s), batch {args.batch_size}: {rate['clips/s']:.0f} clips/s delivered "
            f"({100 * rate['clips/s'] / raw['samples/s']:.1f}% of the raw read rate)"
        )
    for line in lines:
        print(line, flush=True)
    return lines


if __name__ == "__main__":
    main()

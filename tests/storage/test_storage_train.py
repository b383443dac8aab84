"""Training from a URL (issue 24): the same losses as from local shards, ranged reads one per span (adjacent
ones coalesced), a shared local cache that downloads each shard once and makes a second epoch read no
network, and `--verify-shards` refusing a changed object."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import fsspec
import pytest
import torch

from pipeline.manifest import read_build
from pipeline.schema import sample_key
from pipeline.shardcache import ShardCache
from pipeline.spans import ReadSettings, SpanReader
from pipeline.storage import open_store
from tests.s3server import S3Server
from tests.train.conftest import train_args
from train.augment import Protocol
from train.data import Geometry, MixedBatches, StreamSpec, span_of
from train.main import main
from train.plan import StreamPlan
from train.sources import ShardMismatch, open_source

TIMING = ("clips_per_s", "data_wait_share", "seconds", "step_seconds", "time")


@pytest.fixture(scope="module")
def s3_shards(s3_server: S3Server, procedural_build: Path) -> str:
    """The session's procedural build uploaded as it is: `s3://<bucket>` holding `procedural/`."""
    bucket = s3_server.new_bucket()
    fs = fsspec.filesystem("s3")
    for path in procedural_build.rglob("*"):
        if path.is_file():
            fs.put_file(str(path), f"{bucket}/procedural/{path.relative_to(procedural_build)}")
    return f"s3://{bucket}"


def train_losses(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows if row["kind"] == "train"]


@pytest.mark.slow
def test_three_steps_from_s3_give_bit_identical_losses(
    s3_shards: str, procedural_build: Path, tmp_path: Path
) -> None:
    steps = ["--steps", "3", "--log-every", "1", "--verify-shards", "on"]
    main(train_args(procedural_build.parent, tmp_path / "local", *steps))
    main(train_args(s3_shards, tmp_path / "s3", *steps))  # type: ignore[arg-type]
    local, remote = train_losses(tmp_path / "local"), train_losses(tmp_path / "s3")
    assert len(local) == 3 and local == remote


def _loader(source, steps: int) -> MixedBatches:
    table = source.split("train")
    plan = StreamPlan((table.shard,), (1.0,), seed=0, stream_id=0, views=(table.view_matrix(),))
    stream = StreamSpec("real", plan, [source], [table], 4, world=1, rank=0)
    return MixedBatches([stream], 0, steps, Geometry(Protocol(32, (32, 40), True, 4), 8), seed=0)


def test_a_second_epoch_with_a_cache_makes_no_request(
    s3_shards: str, s3_server: S3Server, tmp_path: Path
) -> None:
    source = open_source(s3_shards, "procedural", ReadSettings(cache_dir=str(tmp_path / "cache")))
    train_shards = {source.build_shards[i]["name"] for i in set(source.split("train").shard.tolist())}
    per_epoch = len(source.split("train")) // 4
    loader = _loader(source, 2 * per_epoch)
    with s3_server.recording() as first:
        epoch_one = [loader.batch(step)["real"]["video"] for step in range(per_epoch)]
    with s3_server.recording() as second:
        epoch_two = [loader.batch(step)["real"]["video"] for step in range(per_epoch, 2 * per_epoch)]
    downloads = [r.path.rsplit("/", 1)[-1] for r in first if r.method == "GET" and r.path.endswith(".tar")]
    assert sorted(downloads) == sorted(train_shards), "each shard is downloaded once, whole"
    assert second == [], "a second epoch reads no network"
    assert len(epoch_one) == len(epoch_two) == per_epoch


def _open_every_shard(url: str, cache_dir: str, order: int) -> int:
    folder = open_store(url)
    shards = read_build(folder)["shards"]
    cache = ShardCache(cache_dir, 10**9)
    for entry in shards[::order]:
        cache.open(folder, entry).close()
    return cache.fills


@pytest.mark.slow
def test_processes_sharing_a_cache_download_each_shard_once(
    s3_shards: str, s3_server: S3Server, tmp_path: Path
) -> None:
    url, cache_dir = f"{s3_shards}/procedural", str(tmp_path / "cache")
    with s3_server.recording() as seen, multiprocessing.get_context("fork").Pool(4) as pool:
        fills = pool.starmap(_open_every_shard, [(url, cache_dir, 1), (url, cache_dir, -1)] * 2)
    downloads = [r.path for r in seen if r.method == "GET" and r.path.endswith(".tar")]
    shards = read_build(url)["shards"]
    assert sum(fills) == len(shards) and sorted(downloads) == sorted(set(downloads))
    assert len(downloads) == len(shards)


def test_ranged_reads_are_one_request_per_span_adjacent_ones_coalesced(
    s3_shards: str, s3_server: S3Server
) -> None:
    folder = open_store(f"{s3_shards}/procedural")
    build = read_build(folder)
    reader = SpanReader(folder, build["shards"])
    source = open_source(s3_shards, "procedural")
    table = source.split("train")
    first = sorted(
        (i for i in range(len(table)) if table.shard[i] == table.shard[0]), key=lambda i: table.offset[i]
    )
    other = next(i for i in range(len(table)) if table.shard[i] != table.shard[0])
    assert len(first) >= 2
    picked = (first[0], first[1], other)  # two adjacent spans of one shard, one span of another
    wanted = [span_of(table, i) for i in picked]
    with s3_server.recording() as seen:
        got = reader.read_many(wanted)
    ranged = [r for r in seen if r.method == "GET" and r.range]
    assert len(ranged) == 2, "the adjacent spans are one request, the other shard's span another"
    metas = [json.loads(bytes(members["meta.json"])) for members in got]
    assert [sample_key(meta["source"], meta["id"]) for meta in metas] == [table.key[i] for i in picked]
    with s3_server.recording() as one:
        reader.read(wanted[-1])
    assert len([r for r in one if r.method == "GET" and r.range]) == 1


def test_a_changed_object_is_refused_by_verify_shards(
    s3_server: S3Server, procedural_build: Path, tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket()
    fs = fsspec.filesystem("s3")
    for path in procedural_build.rglob("*"):
        if path.is_file():
            fs.put_file(str(path), f"{bucket}/procedural/{path.relative_to(procedural_build)}")
    name = read_build(procedural_build)["shards"][1]["name"]
    data = bytearray((procedural_build / name).read_bytes())
    data[-700] ^= 0xFF  # the same size: only a hash tells
    fs.pipe_file(f"{bucket}/procedural/{name}", bytes(data))
    for extra in ([], ["--cache-dir", str(tmp_path / "cache")]):
        argv = train_args(f"s3://{bucket}", tmp_path / "run", "--steps", "1", "--verify-shards", "on", *extra)  # type: ignore[arg-type]
        with pytest.raises(ShardMismatch, match=f"{name} differs from build.json's sha256"):
            main(argv)
    sha256 = read_build(procedural_build)["shards"][1]["sha256"]
    assert not (tmp_path / "cache" / f"{sha256}.tar").exists(), "a download that fails its check is not kept"


def test_the_loader_reads_zstd_labels_as_the_same_batch(tmp_path: Path) -> None:
    from pipeline.build import BuildRequest, build_source
    from tests.conftest import tiny_config

    for codec in ("raw", "zstd"):
        build_source(BuildRequest("procedural", tmp_path / codec, tiny_config(label_codec=codec), workers=0))
    raw, packed = open_source(tmp_path / "raw", "procedural"), open_source(tmp_path / "zstd", "procedural")
    assert (raw.config.label_codec, packed.config.label_codec) == ("raw", "zstd")
    one, other = _loader(raw, 1).batch(0)["real"], _loader(packed, 1).batch(0)["real"]
    assert one.keys() == other.keys()
    for key, value in one.items():
        torch.testing.assert_close(value, other[key], rtol=0, atol=0, equal_nan=True, msg=key)

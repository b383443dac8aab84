"""`verify` catches a flipped byte, a missing shard and a sample whose mask disagrees with its members."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.manifest import read_build, write_build
from pipeline.shards import encode_json, file_sha256, read_shard, write_shard


@pytest.fixture
def build_copy(tmp_path: Path, procedural_build: Path) -> Path:
    copy = tmp_path / "procedural"
    shutil.copytree(procedural_build, copy)
    return copy


def test_intact_build_verifies(build_copy: Path, capsys) -> None:
    assert main(["verify", str(build_copy)]) == 0
    assert capsys.readouterr().out.startswith("OK:")


def test_flipped_byte_is_caught(build_copy: Path, capsys) -> None:
    shard = sorted(build_copy.glob("train-*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside some member's payload, not a header
    shard.write_bytes(bytes(data))
    assert main(["verify", str(build_copy)]) == 1
    assert f"{shard.name}: sha256 differs" in capsys.readouterr().out


def test_missing_shard_is_caught(build_copy: Path, capsys) -> None:
    shard = sorted(build_copy.glob("val-*.tar"))[0]
    shard.unlink()
    assert main(["verify", str(build_copy)]) == 1
    out = capsys.readouterr().out
    assert f"{shard.name}: missing" in out and "in the manifest but in no shard" in out


def test_mask_disagreeing_with_members_is_caught_even_with_a_matching_checksum(
    build_copy: Path, capsys
) -> None:
    shard = sorted(build_copy.glob("train-*.tar"))[0]
    samples = list(read_shard(shard))
    key, members = samples[0]
    meta = json.loads(members["meta.json"])
    meta["mask"] &= ~(1 << 1)  # drop the depth bit but keep depth.npy
    meta["tasks"] = [task for task in meta["tasks"] if task != "depth"]
    members["meta.json"] = encode_json(meta)
    write_shard(shard, samples)
    build = read_build(build_copy)  # re-sign the shard: only the sample check can find the problem
    for entry in build["shards"]:
        if entry["name"] == shard.name:
            entry["sha256"], entry["bytes"] = file_sha256(shard), shard.stat().st_size
    write_build(build_copy, build)
    assert main(["verify", str(build_copy)]) == 1
    out = capsys.readouterr().out
    assert f"{key}: member(s) depth.npy present but the mask lacks depth" in out
    assert "sha256" not in out


def test_verify_of_a_directory_that_is_no_build_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no build.json" in err

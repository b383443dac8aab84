"""Building to a URL (issue 24): the build guarantees of the README hold on an S3 bucket.

A local S3-compatible server (moto, `tests/s3server.py`) stands in for the bucket; the code under test
reaches it only through s3fs, with the endpoint and credentials in the environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from pipeline.build import BuildRequest, build_source
from pipeline.cli import main
from pipeline.manifest import read_build, read_manifest
from pipeline.reader import iter_samples, verify
from tests.conftest import tiny_config
from tests.s3server import S3Server


def objects(url: str) -> dict[str, bytes]:
    """Every object under `url`, by its name relative to it, with its bytes."""
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()  # other processes wrote there
    root = url.removeprefix("s3://").rstrip("/")
    return {key[len(root) + 1 :]: fs.cat_file(key) for key in fs.find(root)}


def files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()
    }


def without_timings(build_json: bytes) -> dict:
    build = json.loads(build_json)
    build.pop("timings")
    return build


def test_a_build_to_s3_equals_the_local_build_object_by_object(bucket: str, procedural_build: Path) -> None:
    report = build_source(BuildRequest("procedural", f"{bucket}/shards", tiny_config(), workers=0))
    assert report.out_dir == f"{bucket}/shards/procedural" and report.units_built > 2
    remote, local = objects(f"{bucket}/shards/procedural"), files(procedural_build)
    assert sorted(remote) == sorted(local)
    assert any(name.startswith(".parts/") for name in remote) and "manifest.parquet" in remote
    for name in local:
        if name != "build.json":
            assert remote[name] == local[name], name
    assert without_timings(remote["build.json"]) == without_timings(local["build.json"])
    assert verify(f"{bucket}/shards/procedural") == []
    keys = [sample["__key__"] for sample in iter_samples(f"{bucket}/shards/procedural")]
    assert sorted(keys) == sorted(read_manifest(procedural_build).column("key").to_pylist())


def test_an_unchanged_rebuild_on_s3_uploads_nothing(bucket: str, s3_server: S3Server) -> None:
    build_source(BuildRequest("procedural", bucket, tiny_config(), workers=0))
    with s3_server.recording() as seen:
        again = build_source(BuildRequest("procedural", bucket, tiny_config(), workers=0))
    assert again.up_to_date and again.units_built == 0
    writes = [r for r in seen if r.method in ("PUT", "POST", "DELETE") and ".write-probe" not in r.path]
    assert writes == []


def test_a_changed_size_regenerates_on_s3_and_removes_the_old_objects(bucket: str) -> None:
    first = build_source(BuildRequest("procedural", bucket, tiny_config(), workers=0))
    old_hash = first.config_hash
    second = build_source(BuildRequest("procedural", bucket, tiny_config(size=40), workers=0))
    assert second.config_changed and second.config_hash != old_hash
    build = read_build(f"{bucket}/procedural")
    assert build["config_hash"] == second.config_hash and build["config"]["size"] == 40
    remote = objects(f"{bucket}/procedural")
    parts = [json.loads(data) for name, data in remote.items() if name.startswith(".parts/")]
    assert parts and {part["config_hash"] for part in parts} == {second.config_hash}
    shards = sorted(name for name in remote if name.endswith(".tar"))
    assert shards == sorted(shard["name"] for shard in build["shards"])
    assert verify(f"{bucket}/procedural") == []


def test_info_verify_and_show_take_a_url(bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build_source(BuildRequest("procedural", bucket, tiny_config(), workers=0))
    url = f"{bucket}/procedural"
    assert main(["info", url]) == 0
    assert f"procedural at {url}: 30 samples" in capsys.readouterr().out
    assert main(["verify", url]) == 0
    assert "OK:" in capsys.readouterr().out
    assert main(["show", url, "--split", "val", "--out", str(tmp_path / "sheet.png")]) == 0
    assert (tmp_path / "sheet.png").stat().st_size > 1000


def test_verify_on_s3_finds_a_changed_object(bucket: str, capsys: pytest.CaptureFixture) -> None:
    build_source(BuildRequest("procedural", bucket, tiny_config(), workers=0))
    name = read_build(f"{bucket}/procedural")["shards"][0]["name"]
    fs = fsspec.filesystem("s3")
    key = f"{bucket.removeprefix('s3://')}/procedural/{name}"
    data = bytearray(fs.cat_file(key))
    data[-600] ^= 0xFF  # same size, other bytes
    fs.pipe_file(key, bytes(data))
    assert main(["verify", f"{bucket}/procedural"]) == 1
    assert f"{name}: sha256 differs from build.json" in capsys.readouterr().out

"""Build semantics (architecture.md §4): determinism, incremental rebuilds, regeneration, quarantine, Ray."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline import sources
from pipeline.build import BuildRequest, build_source
from pipeline.manifest import BuildInfo, read_build, read_manifest
from pipeline.plan import plan_units
from pipeline.reader import iter_samples, verify
from pipeline.sources import SourceError
from pipeline.sources.base import Item
from pipeline.sources.procedural import ProceduralSource
from tests.conftest import tiny_config


def shard_bytes(source_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(source_dir.glob("*.tar"))}


def test_same_inputs_and_config_give_byte_identical_shards(tmp_path: Path, procedural_build: Path) -> None:
    again = build_source(BuildRequest("procedural", tmp_path, tiny_config(), workers=0)).out_dir
    assert shard_bytes(again) == shard_bytes(procedural_build)
    assert len(shard_bytes(again)) > 2, "the fixture should span several shards"
    assert read_manifest(again).equals(read_manifest(procedural_build))


def test_manifest_offsets_point_at_each_sample(procedural_build: Path) -> None:
    rows = read_manifest(procedural_build).to_pylist()
    assert {row["status"] for row in rows} == {"ok"}
    for row in rows[:5]:
        with open(procedural_build / row["shard"], "rb") as stream:
            stream.seek(row["offset"])
            header = stream.read(100)
        assert header.split(b"\0")[0].decode().startswith(row["key"] + ".")


def test_reader_yields_every_manifest_sample_once(procedural_build: Path) -> None:
    keys = [sample["__key__"] for sample in iter_samples(procedural_build)]
    manifest_keys = [row["key"] for row in read_manifest(procedural_build).to_pylist()]
    assert sorted(keys) == sorted(manifest_keys) and len(set(keys)) == len(keys)
    val = list(iter_samples(procedural_build, split="val"))
    assert val and {sample["meta"]["split"] for sample in val} == {"val"}
    assert val[0]["video"].shape == (4, 32, 43, 3) and val[0]["depth.npy"].shape == (4, 8, 11)
    assert val[0]["meta"]["hw"] == [32, 43]  # the whole 4:3 frame, short side --size


def test_unchanged_rebuild_does_no_work(tmp_path: Path) -> None:
    first = build_source(BuildRequest("procedural", tmp_path, tiny_config(), workers=0))
    stamps = {p.name: p.stat().st_mtime_ns for p in first.out_dir.iterdir() if p.is_file()}
    second = build_source(BuildRequest("procedural", tmp_path, tiny_config(), workers=0))
    assert second.up_to_date and second.units_built == 0
    assert {p.name: p.stat().st_mtime_ns for p in first.out_dir.iterdir() if p.is_file()} == stamps


def test_added_inputs_rebuild_only_the_units_they_fall_into(tmp_path: Path) -> None:
    first = build_source(BuildRequest("procedural", tmp_path, tiny_config(num_samples=20), workers=0))
    before = shard_bytes(first.out_dir)
    second = build_source(BuildRequest("procedural", tmp_path, tiny_config(num_samples=22), workers=0))
    assert not second.up_to_date
    assert second.units_built < second.units_total // 2, "only the tail unit(s) should be rebuilt"
    after = shard_bytes(second.out_dir)
    assert sum(after.get(name) == data for name, data in before.items()) >= len(before) - 2
    assert read_manifest(second.out_dir).num_rows == 22 + 10  # val keeps its 10 clips
    assert verify(second.out_dir) == []


def test_inserted_item_renames_later_shards_instead_of_rebuilding_them(tmp_path: Path) -> None:
    items = [Item(f"{i:04d}", "train", f"fp{i}") for i in range(0, 200, 2)]
    before = plan_units(items, "train", "h", 4)
    after = plan_units([*items, Item("0101", "train", "fp101")], "train", "h", 4)
    changed = {u.fingerprint for u in after} - {u.fingerprint for u in before}
    assert len(changed) == 1, "one inserted item changes exactly one unit"


def test_changed_size_regenerates_everything_and_never_mixes(tmp_path: Path) -> None:
    first = build_source(BuildRequest("procedural", tmp_path, tiny_config(), workers=0))
    second = build_source(BuildRequest("procedural", tmp_path, tiny_config(size=24), workers=0))
    assert second.config_changed and second.units_built == second.units_total
    assert second.config_hash != first.config_hash
    hashes = {sample["meta"]["config_hash"] for sample in iter_samples(second.out_dir)}
    assert hashes == {second.config_hash}
    assert {s["video"].shape[1] for s in iter_samples(second.out_dir)} == {24}
    assert set(read_manifest(second.out_dir)["config_hash"].to_pylist()) == {second.config_hash}
    parts = [json.loads(p.read_text()) for p in (second.out_dir / ".parts").glob("*.json")]
    assert {part["config_hash"] for part in parts} == {second.config_hash}


def test_changed_frames_and_label_stride_regenerate(tmp_path: Path) -> None:
    base = build_source(BuildRequest("procedural", tmp_path, tiny_config(), workers=0))
    for change in ({"frames": 3}, {"label_stride": 2}):
        report = build_source(
            BuildRequest("procedural", tmp_path, dataclasses.replace(tiny_config(), **change), workers=0)
        )
        assert report.config_changed and report.units_built == report.units_total
    assert read_build(base.out_dir)["config"]["label_stride"] == 2


def test_bad_inputs_are_quarantined_with_reasons_and_the_rest_is_built(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sources._ADAPTERS, "faulty", "faulty_source:FaultySource")
    report = build_source(BuildRequest("faulty", tmp_path, tiny_config(), workers=0))
    reasons = {item_id: reason for _, item_id, reason in report.quarantined}
    assert set(reasons) == {"train-000003", "train-000005", "train-000008", "train-000011"}
    assert reasons["train-000003"] == "train-000003.hdf5: truncated file (test)"
    assert reasons["train-000005"] == "depth.npy: negative depth"
    assert reasons["train-000008"] == "KeyError: 'no_such_key'"
    assert "segm.npy: axis 0 (T) is 3, expected 4" in reasons["train-000011"]
    assert report.samples == 30 - 4
    rows = read_manifest(report.out_dir).to_pylist()
    assert sorted(r["id"] for r in rows if r["status"] == "quarantined") == sorted(reasons)
    lines = (report.out_dir / "quarantine.jsonl").read_text().splitlines()
    assert {json.loads(line)["id"] for line in lines} == set(reasons)
    assert verify(report.out_dir) == []


@pytest.mark.slow  # multi-process or several runs: the second CI step runs it
@pytest.mark.timeout(120)
def test_local_ray_build_matches_the_serial_build(tmp_path: Path, procedural_build: Path) -> None:
    report = build_source(BuildRequest("procedural", tmp_path, tiny_config(), workers=2))
    assert shard_bytes(report.out_dir) == shard_bytes(procedural_build)


def test_jpeg_codec_build_verifies_and_is_smaller(tmp_path: Path, procedural_build: Path) -> None:
    report = build_source(BuildRequest("procedural", tmp_path, tiny_config(codec="jpeg"), workers=0))
    assert verify(report.out_dir) == []
    sample = next(iter_samples(report.out_dir))
    assert sample["video"].shape == (4, 32, 43, 3)
    jpeg_bytes = sum(len(data) for data in shard_bytes(report.out_dir).values())
    assert jpeg_bytes < sum(len(data) for data in shard_bytes(procedural_build).values())


def test_build_json_records_the_samples_label_spaces_and_the_typed_geometry(procedural_build: Path) -> None:
    info = BuildInfo.from_json(read_build(procedural_build))
    assert info.config == tiny_config() and info.config.max_objects == 8
    spaces = {(s["meta"]["segm_space"], s["meta"]["box_space"]) for s in iter_samples(procedural_build)}
    assert spaces == {(info.segm_space, info.box_space)} == {("procedural", "procedural")}


def test_samples_that_name_two_label_spaces_are_refused_before_the_commit(
    tmp_path: Path, monkeypatch
) -> None:
    load = ProceduralSource.load

    def one_sample_in_another_space(self, item: Item):
        sample = load(self, item)
        if item.id == "val-000002":
            sample.extra["segm_space"] = "unified"
        return sample

    monkeypatch.setattr(ProceduralSource, "load", one_sample_in_another_space)
    with pytest.raises(SourceError, match="^procedural: samples name segm_space 'procedural' and 'unified'"):
        build_source(BuildRequest("procedural", tmp_path, tiny_config(), workers=0))
    assert not (tmp_path / "procedural" / "build.json").exists()

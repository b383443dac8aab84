"""`verify` catches a flipped byte, a missing shard, a sample whose mask disagrees with its members, and a
manifest that disagrees with the tars (swapped, duplicated or shifted offsets, a size beyond the tar, a
changed label or other column, a sample no row points at)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline import reader
from pipeline.cli import main
from pipeline.manifest import read_build, read_manifest, write_build, write_manifest
from pipeline.shards import SpanError, encode_json, file_sha256, read_sample_span, read_shard, write_shard


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


# ----------------------------------------------------------------------------- the manifest against the tars


def edit_manifest(source_dir: Path, edit) -> list[dict]:
    """Apply `edit(rows)` to the manifest's rows and write it back (the tars and build.json unchanged)."""
    rows = read_manifest(source_dir).to_pylist()
    edit(rows)
    write_manifest(source_dir, rows)
    return rows


def first_two_of_one_shard(rows: list[dict]) -> tuple[dict, dict]:
    """The first two samples of the first shard, as manifest rows (the rows themselves, to edit)."""
    first, second = [row for row in rows if row["shard"] == rows[0]["shard"]][:2]
    return first, second


def verify_lines(build_copy: Path, capsys) -> list[str]:
    assert main(["verify", str(build_copy)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1
    return captured.out.splitlines()


def test_swapped_offsets_fail_naming_both_keys(build_copy: Path, capsys) -> None:
    def swap(rows: list[dict]) -> None:
        a, b = first_two_of_one_shard(rows)
        for column in ("offset", "size"):
            a[column], b[column] = b[column], a[column]

    a, b = first_two_of_one_shard(edit_manifest(build_copy, swap))
    lines = verify_lines(build_copy, capsys)
    assert any(f"{a['key']}: the tar holds {b['key']} at byte {a['offset']}" in line for line in lines)
    assert any(f"{b['key']}: the tar holds {a['key']} at byte {b['offset']}" in line for line in lines)


def test_a_duplicated_offset_fails_as_one_sample_twice_and_another_never(build_copy: Path, capsys) -> None:
    def duplicate(rows: list[dict]) -> None:
        a, b = first_two_of_one_shard(rows)
        b["offset"], b["size"] = a["offset"], a["size"]

    a, b = first_two_of_one_shard(edit_manifest(build_copy, duplicate))
    lines = verify_lines(build_copy, capsys)
    assert any(f"{b['key']}: the tar holds {a['key']} at byte {a['offset']}" in line for line in lines)
    assert any(f"{a['key']}: 2 manifest rows point at its span" in line for line in lines)
    assert any(f"{b['key']}: in the tar at byte" in line and "no manifest row" in line for line in lines)


def test_a_shifted_offset_fails(build_copy: Path, capsys) -> None:
    def shift(rows: list[dict]) -> None:
        rows[0]["offset"] += 512

    rows = edit_manifest(build_copy, shift)
    lines = verify_lines(build_copy, capsys)
    assert any(line.startswith(f"{rows[0]['shard']}: {rows[0]['key']}: ") for line in lines)
    assert sum(rows[0]["key"] in line for line in lines) >= 1


def test_a_size_beyond_the_tar_fails_without_reading_it(build_copy: Path, capsys) -> None:
    def huge(rows: list[dict]) -> None:
        rows[0]["size"] = 10**12

    rows = edit_manifest(build_copy, huge)
    lines = verify_lines(build_copy, capsys)
    mine = [line for line in lines if f"{rows[0]['key']}:" in line]
    assert mine and "ends after the tar" in mine[0]


@pytest.mark.parametrize(
    "column, value",
    [("label", 99), ("split", "val"), ("view", 3), ("hw", [8, 8]), ("mask", 1), ("id", "other")],
)
def test_a_manifest_column_that_disagrees_with_the_sample_fails(
    build_copy: Path, capsys, column: str, value: object
) -> None:
    def change(rows: list[dict]) -> None:
        rows[0][column] = value

    rows = edit_manifest(build_copy, change)
    lines = verify_lines(build_copy, capsys)
    mine = [line for line in lines if f"{rows[0]['key']}:" in line]
    assert len(mine) == 1 and f"manifest {column}={value!r}" in mine[0]


def test_a_tar_sample_no_manifest_row_points_at_fails(build_copy: Path, capsys) -> None:
    dropped: list[dict] = []
    edit_manifest(build_copy, lambda rows: dropped.append(rows.pop(1)))
    lines = verify_lines(build_copy, capsys)
    assert any(f"{dropped[0]['key']}: in the tar at byte {dropped[0]['offset']}" in line for line in lines)


def test_span_reader_checks_the_key_and_the_tar_bounds(build_copy: Path) -> None:
    row = read_manifest(build_copy).to_pylist()[0]
    with open(build_copy / row["shard"], "rb") as handle:
        members = read_sample_span(handle, row["offset"], row["size"], key=row["key"])
        assert json.loads(bytes(members["meta.json"]))["id"] == row["id"]
        with pytest.raises(SpanError, match=f"the tar holds {row['key']} at byte {row['offset']}, not x-1"):
            read_sample_span(handle, row["offset"], row["size"], key="x-1")
        with pytest.raises(SpanError, match="ends after the tar"):
            read_sample_span(handle, row["offset"], 10**12, key=row["key"])
        with pytest.raises(SpanError, match="not a byte span"):
            read_sample_span(handle, -512, row["size"], key=row["key"])


def test_a_shard_that_cannot_be_read_is_one_line(build_copy: Path, capsys, monkeypatch) -> None:
    def denied(path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(reader, "file_sha256", denied)  # as a shard of another user's mode 600 would
    lines = verify_lines(build_copy, capsys)
    assert lines and all(line.endswith(": cannot be read (Permission denied)") for line in lines)

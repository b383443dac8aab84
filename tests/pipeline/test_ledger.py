"""The ledger: a finished unit's part is read back typed, and a torn or changed one is not trusted."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.ledger import PARTS, Part, load_parts, parse_part, part_name, write_part
from pipeline.storage import LocalStore


def _part(shard: str | None = "train-000000.tar", size: int = 3) -> Part:
    row = {"key": "s-a", "split": "train", "status": "ok", "shard": shard}
    spaces = {"segm_space": ["procedural"], "box_space": []}
    return Part("fp", "hash", "train", shard, "sha" if shard else None, size, spaces, [row])


def test_a_part_reads_back_as_written_and_keeps_the_file_format(tmp_path: Path) -> None:
    (tmp_path / PARTS).mkdir()
    write_part(LocalStore(tmp_path), _part(), "train-000000.tar")
    written = json.loads((tmp_path / part_name("train-000000.tar")).read_text())
    assert list(written) == [
        "fingerprint",
        "config_hash",
        "split",
        "shard",
        "sha256",
        "bytes",
        "label_spaces",
        "rows",
    ]
    assert parse_part((tmp_path / part_name("train-000000.tar")).read_bytes()) == _part()


def test_a_torn_part_or_one_whose_shard_changed_is_not_a_finished_unit(tmp_path: Path) -> None:
    (tmp_path / PARTS).mkdir()
    store = LocalStore(tmp_path)
    (tmp_path / "train-000000.tar").write_bytes(b"abc")
    write_part(store, _part(), "train-000000.tar")
    write_part(store, _part("train-000001.tar"), "train-000001.tar")  # its shard is missing
    write_part(store, _part(None, 0), "train-000002.tar")  # every sample quarantined: no shard
    torn = tmp_path / part_name("train-000003.tar")
    torn.write_text('{"fingerprint": "fp", "config_')  # killed mid-write
    assert parse_part(torn.read_bytes()) is None
    assert sorted(load_parts(store, "hash")) == ["train-000000.tar", "train-000002.tar"]
    assert load_parts(store, "another hash") == {}
    (tmp_path / "train-000000.tar").write_bytes(b"abcd")
    assert sorted(load_parts(store, "hash")) == ["train-000002.tar"]

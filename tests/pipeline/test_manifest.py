"""`manifest.parquet` and `build.json`: written atomically, each writer through its own temporary file."""

from __future__ import annotations

from pathlib import Path

from pipeline.manifest import MANIFEST, manifest_row, read_manifest, write_build, write_manifest


def test_manifest_writers_never_share_a_temporary_file(tmp_path: Path) -> None:
    # Another writer's temporary under the name a fixed-name writer would use: it must not be touched.
    (tmp_path / f".{MANIFEST}.tmp").mkdir()
    row = manifest_row(key="s-a", source="s", id="a", split="train", status="ok", mask=1, frames=2)
    write_manifest(tmp_path, [row])
    counts = {"samples": 1, "quarantined": 0, "splits": {}}
    write_build(tmp_path, {"source": "s", "config": {}, "config_hash": "h", "shards": [], "counts": counts})
    assert read_manifest(tmp_path).column("key").to_pylist() == ["s-a"]
    assert (tmp_path / f".{MANIFEST}.tmp").is_dir()

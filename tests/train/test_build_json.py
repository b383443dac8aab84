"""The trainer learns a source's geometry and label spaces from build.json alone, typed (`BuildInfo`)."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from pipeline.build import BuildRequest, build_source
from pipeline.config import BuildConfig
from tests.conftest import tiny_config
from train.sources import ShardMismatch, check_compatible, open_source

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def copied(procedural_build: Path, tmp_path: Path) -> Path:
    """A private copy of the session's procedural build, returned as its shards directory."""
    shutil.copytree(procedural_build, tmp_path / "shards" / "procedural")
    return tmp_path / "shards"


def _rewrite_build(source_dir: Path, edit) -> None:
    build = json.loads((source_dir / "build.json").read_text())
    edit(build)
    (source_dir / "build.json").write_text(json.dumps(build))


def test_open_source_takes_geometry_and_label_spaces_from_build_json(copied: Path) -> None:
    source = open_source(copied, "procedural")
    assert isinstance(source.config, BuildConfig) and source.config == tiny_config()
    assert (source.segm_space, source.box_space) == ("procedural", "procedural")
    _rewrite_build(copied / "procedural", lambda build: build.update(segm_space="unified", box_space=None))
    source = open_source(copied, "procedural")  # build.json is the one place: no sample is read for them
    assert (source.segm_space, source.box_space) == ("unified", None)


def test_check_compatible_reads_the_typed_config(copied: Path) -> None:
    shutil.copytree(copied / "procedural", copied / "other")
    _rewrite_build(copied / "other", lambda build: build["config"].update(max_objects=12))
    geometry = check_compatible([open_source(copied, "procedural"), open_source(copied, "other")], 4)
    assert geometry == {
        "frames": 4,
        "label_stride": 4,
        "max_objects": 12,
        "segm_space": "procedural",
        "box_space": "procedural",
    }


def _as_format_2(build: dict) -> None:
    """build.json as the pipeline wrote it before it recorded the label spaces."""
    build["config"]["format"] = 2
    build["config_hash"] = "0ea0f2887e48bafe"
    del build["segm_space"], build["box_space"]


def test_an_older_build_is_refused_in_one_line_and_a_rebuild_fixes_it(copied: Path) -> None:
    _rewrite_build(copied / "procedural", _as_format_2)
    with pytest.raises(
        ShardMismatch, match=r"^source procedural: .*build.json: written for shard format 2"
    ) as error:
        open_source(copied, "procedural")
    assert "\n" not in str(error.value) and "rebuild the source with `pvit-pipeline build`" in str(
        error.value
    )
    report = build_source(BuildRequest("procedural", copied, tiny_config(), workers=0))
    assert report.config_changed and not report.up_to_date  # the old hash is not this config's
    assert open_source(copied, "procedural").segm_space == "procedural"


def test_a_build_json_without_label_spaces_says_to_rebuild(copied: Path) -> None:
    _rewrite_build(copied / "procedural", lambda build: build.pop("box_space"))
    with pytest.raises(
        ShardMismatch, match=r"lacks 'box_space' \(written by an older pvit-pipeline\): rebuild"
    ):
        open_source(copied, "procedural")


def test_train_sources_never_imports_train_data() -> None:
    """No cycle: sources.py (opened by data.py) imports nothing of the loader, not even inside a function."""
    tree = ast.parse((ROOT / "train" / "sources.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "train.data" not in imported and "train" not in imported

"""The unified label space, each synthetic source's mapping into it, and the source manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.labelspace import IGNORE, export_classes, load_label_space, lookup_table, source_mapping
from pipeline.sources import get_source

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def test_unified_space_has_unique_classes_with_background_first() -> None:
    classes = export_classes("unified")
    assert len(classes) == len(set(classes)) == load_label_space("unified").num_classes
    assert classes[0] == "background"
    assert sum(c.startswith("nyu40/") for c in classes) == 40
    assert sum(c.startswith("smpl/") for c in classes) == 24
    assert sum(c.startswith("ehoi/") for c in classes) == 20


def test_every_raw_value_of_the_id_valued_sources_is_mapped() -> None:
    hypersim = lookup_table("hypersim", -1, 40)
    assert hypersim[0] == IGNORE and (hypersim[2:] != IGNORE).all() and len(set(hypersim[2:])) == 40
    surreact = lookup_table("surreact", 0, 24)
    assert (surreact != IGNORE).all() and len(set(surreact)) == 25


def test_ehoi_mapping_matches_the_box_class_list() -> None:
    mapping = source_mapping("ehoi")
    unified = load_label_space("unified")
    for name in export_classes("ehoi_boxes"):
        assert unified.classes[mapping[name]] == f"ehoi/{name}"


def test_mapping_lookup_table_converts_a_whole_map_at_once() -> None:
    raw = np.array([[-1, 1], [40, 7]])
    out = lookup_table("hypersim", -1, 40)[raw + 1]
    space = load_label_space("unified")
    assert out.tolist() == [
        [IGNORE, space.index("nyu40/wall")],
        [space.index("nyu40/otherprop"), space.index("nyu40/table")],
    ]


def test_unknown_source_mapping_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no mapping for source"):
        source_mapping("nonexistent")


@pytest.mark.parametrize("source", ["hypersim", "surreact", "phav", "kist-synadl", "ehoi"])
def test_source_manifest_agrees_with_the_adapter(source: str) -> None:
    manifest = yaml.safe_load((MANIFESTS / f"{source}.yaml").read_text())
    adapter = get_source(source)
    assert manifest["name"] == source
    assert tuple(manifest["tasks"]) == adapter.tasks and tuple(manifest["splits"]) == adapter.splits
    assert manifest["citation"] and manifest["raw_layout"] and manifest["unconfirmed"]

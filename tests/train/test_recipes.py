"""Every shipped recipe still loads: a key renamed in TrainConfig, a removed preset, task or source fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pvit.config import PRESETS
from pvit.tasks import TASKS

from pipeline.sources import source_names
from train.config import parse_config, parse_weighted

RECIPES = sorted((Path(__file__).resolve().parents[2] / "train" / "recipes").glob("*.yaml"))


def test_the_recipes_folder_is_found() -> None:
    assert len(RECIPES) >= 4, RECIPES  # demo, ssv2, something_else, diving48


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_parses_into_a_train_config_with_its_values(recipe: Path, tmp_path: Path) -> None:
    config = parse_config(["--recipe", str(recipe), "--shards", str(tmp_path)])
    assert config.recipe == str(recipe) and config.shards == str(tmp_path)  # flags still win
    for key, value in yaml.safe_load(recipe.read_text()).items():
        got = getattr(config, key)
        expected = tuple(value) if isinstance(got, tuple) and isinstance(value, list) else value
        assert got == expected, key


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_names_presets_tasks_and_sources_that_exist(recipe: Path, tmp_path: Path) -> None:
    config = parse_config(["--recipe", str(recipe), "--shards", str(tmp_path)])
    assert config.preset in PRESETS
    assert set(config.loss_weights) <= set(TASKS), config.loss_weights
    for name, weight in parse_weighted(config.real + config.synthetic):
        assert name in source_names() and weight > 0, name

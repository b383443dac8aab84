"""Every shipped recipe still loads: a key renamed in TrainConfig, a removed preset, task or source fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pvit.config import PRESETS, get_config
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


PAPER_RECIPES = [path for path in RECIPES if path.stem.endswith("_pvit")]
SOURCE_MARKERS = ("# paper §", "# MViTv2", "# Ego4D baseline", "# ours")


def test_the_paper_recipes_are_all_there() -> None:
    stems = {path.stem for path in PAPER_RECIPES}
    expected = {"ssv2", "something_else", "something_else_fewshot_base", "something_else_fewshot_finetune"}
    assert {f"{name}_pvit" for name in (*expected, "diving48", "ego4d", "ava")} <= stems


@pytest.mark.parametrize("recipe", PAPER_RECIPES, ids=lambda path: path.stem)
def test_every_paper_recipe_setting_says_where_it_comes_from(recipe: Path) -> None:
    """Each key line names its source: the paper's §C, MViTv2-S's PySlowFast config, or ours (with why)."""
    keys = [line for line in recipe.read_text().splitlines() if line[:1].isalpha()]
    assert keys
    unmarked = [line for line in keys if not any(marker in line for marker in SOURCE_MARKERS)]
    assert not unmarked, unmarked


@pytest.mark.parametrize(
    ("stem", "settings"),
    [  # the paper's supplementary §C (model_anchors.md §1.2)
        ("ssv2", {"optimizer": "adam", "lr": 7e-5, "epochs": 100, "weight_decay": 1e-4, "flip": True}),
        ("something_else", {"optimizer": "adam", "lr": 7e-5, "epochs": 100, "weight_decay": 1e-4}),
        ("something_else_fewshot_base", {"lr": 7e-5, "epochs": 100, "num_classes": 88}),
        ("something_else_fewshot_finetune", {"lr": 7e-5, "epochs": 100, "num_classes": 86}),
        ("diving48", {"optimizer": "adam", "lr": 1.5e-4, "epochs": 10, "test_crops": 3, "flip": True}),
        ("ego4d", {"optimizer": "adam", "lr": 1.5e-5, "epochs": 10, "amp": "auto"}),
        ("ava", {"optimizer": "sgd", "lr": 0.03, "epochs": 30, "weight_decay": 1e-8}),
    ],
)
def test_paper_recipes_hold_the_papers_settings(stem: str, settings: dict, tmp_path: Path) -> None:
    config = parse_config(
        ["--recipe", str(RECIPES[0].parent / f"{stem}_pvit.yaml"), "--shards", str(tmp_path)]
    )
    for key, value in settings.items():
        assert getattr(config, key) == value, key
    assert config.preset == "mvit_v2_s" and config.min_lr_ratio == 0.0  # MViTv2-S, half-period cosine
    assert (config.batch_size, config.synthetic_batch_size) == ((16, 16) if stem == "ava" else (64, 64))
    assert config.crop_size == 224 and config.train_scale == (256, 320)
    # "dropout 0.5 before the classifier" (§C.2, §C.3) is the preset's, as the recipes' comments say
    assert get_config(config.preset).head_dropout == 0.5

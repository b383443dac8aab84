"""Every shipped recipe still loads: a key renamed in TrainConfig, a removed preset, task or source fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pvit.config import PRESETS, get_config

from pipeline.sources import source_names
from train.config import SECTIONS, loss_weight_text, parse_config, parse_loss_weights, parse_weighted

RECIPES = sorted((Path(__file__).resolve().parents[2] / "train" / "recipes").glob("*.yaml"))


def test_the_recipes_folder_is_found() -> None:
    assert len(RECIPES) >= 4, RECIPES  # demo, ssv2, something_else, diving48


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_parses_into_a_train_config_with_its_values(recipe: Path, tmp_path: Path) -> None:
    config = parse_config(["--recipe", str(recipe), "--shards", str(tmp_path)])
    assert config.recipe == str(recipe) and config.data.shards == str(tmp_path)  # flags still win
    for key, value in yaml.safe_load(recipe.read_text()).items():
        settings = value.items() if key in SECTIONS else [(key, value)]
        for name, setting in settings:
            got = getattr(getattr(config, key), name) if key in SECTIONS else getattr(config, key)
            expected = tuple(setting) if isinstance(got, tuple) and isinstance(setting, list) else setting
            if name == "loss_weights":
                expected = loss_weight_text(setting)
            assert got == expected, f"{key}.{name}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_names_presets_tasks_and_sources_that_exist(recipe: Path, tmp_path: Path) -> None:
    config = parse_config(["--recipe", str(recipe), "--shards", str(tmp_path)])
    assert config.model.preset in PRESETS
    parse_loss_weights(config.optim.loss_weights)  # known tasks and numbers only
    for name, weight in parse_weighted(config.data.real + config.data.synthetic):
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
    lines = recipe.read_text().splitlines()
    # Settings: run-wide keys at the left margin and section keys indented; section headers are not settings.
    keys = [
        line
        for line in lines
        if re.match(r"^(  )?[a-z_]+: *[^\s#]", line) and not line.rstrip().endswith(":")
    ]
    assert keys
    unmarked = [line for line in keys if not any(marker in line for marker in SOURCE_MARKERS)]
    assert not unmarked, unmarked


@pytest.mark.parametrize(
    ("stem", "settings"),
    [  # the paper's supplementary §C (model_anchors.md §1.2)
        (
            "ssv2",
            {
                "optim.optimizer": "adam",
                "optim.lr": 7e-5,
                "optim.epochs": 100,
                "optim.weight_decay": 1e-4,
                "augment.flip": True,
            },
        ),
        (
            "something_else",
            {"optim.optimizer": "adam", "optim.lr": 7e-5, "optim.epochs": 100, "optim.weight_decay": 1e-4},
        ),
        ("something_else_fewshot_base", {"optim.lr": 7e-5, "optim.epochs": 100, "model.num_classes": 88}),
        ("something_else_fewshot_finetune", {"optim.lr": 7e-5, "optim.epochs": 100, "model.num_classes": 86}),
        (
            "diving48",
            {
                "optim.optimizer": "adam",
                "optim.lr": 1.5e-4,
                "optim.epochs": 10,
                "eval.test_crops": 3,
                "augment.flip": True,
            },
        ),
        ("ego4d", {"optim.optimizer": "adam", "optim.lr": 1.5e-5, "optim.epochs": 10, "amp": "auto"}),
        ("ava", {"optim.optimizer": "sgd", "optim.lr": 0.03, "optim.epochs": 30, "optim.weight_decay": 1e-8}),
    ],
)
def test_paper_recipes_hold_the_papers_settings(stem: str, settings: dict, tmp_path: Path) -> None:
    config = parse_config(
        ["--recipe", str(RECIPES[0].parent / f"{stem}_pvit.yaml"), "--shards", str(tmp_path)]
    )
    flat = config.flat()
    for key, value in settings.items():
        assert flat[key] == value, key
    assert config.model.preset == "mvit_v2_s" and config.optim.min_lr_ratio == 0.0  # half-period cosine
    data = config.data
    assert (data.batch_size, data.synthetic_batch_size) == ((16, 16) if stem == "ava" else (64, 64))
    assert config.augment.crop_size == 224 and config.augment.train_scale == (256, 320)
    # "dropout 0.5 before the classifier" (§C.2, §C.3) is the preset's, as the recipes' comments say
    assert get_config(config.model.preset).head_dropout == 0.5

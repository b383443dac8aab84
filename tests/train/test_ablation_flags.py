"""The trainer's model-side ablation flags: parsed, validated, and reaching the model and the loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import train_args

from train.assemble import prepare, synthetic_tasks
from train.config import TrainConfig, parse_config
from train.data import MixedBatches
from train.distributed import setup
from train.main import batch_augment, main, train_step

REAL = ["--real", "ssv2", "--synthetic", "procedural"]


def test_flags_parse_from_the_command_line() -> None:
    cfg = parse_config(
        [*REAL, "--one-prompt", "--freeze-backbone", "--prompts-per-task", "20", "--tasks", "S1",
         "--real-tasks", "boxes"]
    )  # fmt: skip
    model = cfg.model
    assert model.one_prompt and model.freeze_backbone
    assert model.prompts_per_task == 20
    assert model.tasks == ("depth", "segm", "boxes")  # S1, in the model's task order
    assert model.real_tasks == ("boxes",)
    assert parse_config([*REAL, "--tasks", "normal,depth"]).model.tasks == ("depth", "normal")
    assert parse_config([*REAL, "--tasks", "S2"]).model.tasks == ("normal", "segm", "pose3d")
    defaults = parse_config(REAL).model
    assert (defaults.one_prompt, defaults.freeze_backbone, defaults.prompts_per_task) == (False, False, 1)
    assert defaults.tasks == () and defaults.real_tasks == ()


def test_neutral_prompts_read_real_data_only() -> None:
    cfg = parse_config([*REAL, "--mode", "np"])
    assert cfg.model.mode == "np" and not cfg.uses_synthetic
    assert parse_config(REAL).uses_synthetic  # pvit with the same sources does read them


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tasks", "depth,flow"], r"^--tasks: unknown task 'flow'; choose from depth, .*S1, S2$"),
        # The model section's settings are PViTConfig's to check (pvit.config), named as its fields.
        (["--mode", "mt", "--one-prompt"], r"^model: one_prompt needs a mode with prompts"),
        (["--mode", "plain", "--prompts-per-task", "20"], r"^model: prompts_per_task > 1 needs a mode"),
        (["--prompts-per-task", "0"], r"^model: prompts_per_task must be >= 1"),
        (["--mode", "plain", "--tasks", "S1"], r"^--tasks needs a mode with prompts or task heads"),
        (["--real-tasks", "depth"], r"^model: unknown real_tasks \['depth'\]; supported: \('boxes',\)$"),
        (["--mode", "vpt", "--real-tasks", "boxes"], r"^model: real_tasks .* need mode pvit, not vpt$"),
        (["--mode", "hybrid"], r"^model: mode 'hybrid' not in"),
        (["--preset", "huge"], r"^model: unknown preset 'huge'"),
    ],
)
def test_bad_switches_are_one_line(flags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_config([*REAL, *flags])
    assert "\n" not in str(info.value)


def one_step(shards: Path, out: Path, *flags: str) -> tuple:
    """prepare() and one train_step on the procedural build; returns (run, per-task losses, old weights)."""
    cfg = parse_config(train_args(shards, out, "--steps", "1", "--lr", "0.01", *flags))
    run = prepare(cfg, setup("cpu"))
    batch = MixedBatches(run.streams, 0, 1, run.geometry, cfg.seed).batch(0)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    run.model.train()
    out_losses = train_step(run, batch, batch_augment(run))
    return run, batch, out_losses, before


def test_frozen_pvit_with_a_task_subset_and_real_boxes(shards_dir: Path, tmp_path: Path) -> None:
    run, batch, losses, before = one_step(
        shards_dir, tmp_path, "--tasks", "S1", "--freeze-backbone", "--real-tasks", "boxes"
    )
    model = run.model
    assert set(model.heads) == {"depth", "segm", "boxes"} and set(model.real_heads) == {"real_boxes"}
    assert model.backbone.num_prompts == 4  # S1's three prompts plus the real boxes' own
    assert set(losses) - {"loss", "grad_norm"} == {"action", "depth", "segm", "boxes", "real_boxes"}
    assert losses["real_boxes"] > 0  # the real stream's boxes now reach the loss, for real_boxes only
    assert batch["real"]["real"].all() and not batch["synthetic"]["real"].any()
    trains = ("backbone.prompt_tokens", "backbone.head.", "heads.", "real_heads.")
    for name, p in model.named_parameters():
        assert (not torch.equal(p, before[name])) == name.startswith(trains), name


def test_neutral_prompts_train_without_the_synthetic_stream(shards_dir: Path, tmp_path: Path) -> None:
    run, batch, losses, before = one_step(shards_dir, tmp_path, "--mode", "np")
    assert [s.role for s in run.streams] == ["real"] and "synthetic" not in batch
    assert run.model.backbone.num_prompts == 5 and len(run.model.heads) == 0
    assert set(losses) - {"loss", "grad_norm"} == {"action"}
    qkv = "backbone.blocks.0.attn.qkv.weight"
    assert not torch.equal(dict(run.model.named_parameters())[qkv], before[qkv])  # backbone not frozen


def test_one_prompt_and_twenty_prompts_reach_the_model(shards_dir: Path, tmp_path: Path) -> None:
    cfg = parse_config(train_args(shards_dir, tmp_path, "--one-prompt", "--prompts-per-task", "20"))
    model = prepare(cfg, setup("cpu")).model
    assert model.cfg.one_prompt and model.backbone.num_prompts == 20
    assert isinstance(cfg, TrainConfig)


def test_a_task_no_synthetic_source_carries_is_refused(shards_dir: Path, tmp_path: Path) -> None:
    # The procedural build carries all five; a source without pose3d is emulated by dropping it.
    from train.sources import open_source

    source = open_source(str(shards_dir), "procedural")
    source.tasks = tuple(t for t in source.tasks if t != "pose3d")
    cfg = parse_config(train_args(shards_dir, tmp_path, "--tasks", "S2"))
    with pytest.raises(ValueError, match=r"^--tasks pose3d: no --synthetic source carries it"):
        synthetic_tasks(cfg, [source])
    assert synthetic_tasks(parse_config(train_args(shards_dir, tmp_path)), [source]) == (
        "depth", "normal", "segm", "boxes",
    )  # fmt: skip


def test_real_boxes_are_scored_at_evaluation(shards_dir: Path, tmp_path: Path) -> None:
    """--real-tasks boxes trains a head on the real stream's boxes; its val IoU is reported, as the synthetic
    boxes' is, so the real_prompts row reports what it trains."""
    out = main(train_args(shards_dir, tmp_path, "--steps", "1", "--real-tasks", "boxes"))
    iou = out["eval"]["real/procedural/real_box_iou"]
    assert 0.0 <= iou <= 1.0 and "real/procedural/top1" in out["eval"]
    plain = main(train_args(shards_dir, tmp_path / "plain", "--steps", "1"))
    assert "real/procedural/real_box_iou" not in plain["eval"]  # only a model with the head is scored


def test_how_the_model_runs_reaches_it(shards_dir: Path, tmp_path: Path) -> None:
    """--attention, --pool-impl and --act-checkpoint go with the model section to pvit.build_model."""
    flags = ["--attention", "explicit", "--pool-impl", "shifts", "--act-checkpoint"]
    model = prepare(parse_config(train_args(shards_dir, tmp_path, *flags)), setup("cpu")).model
    cfg = model.cfg
    assert (cfg.attention, cfg.pool_impl, cfg.act_checkpoint) == ("explicit", "shifts", True)
    assert model.backbone.grad_checkpointing
    with pytest.raises(ValueError, match="^model: attention 'fast' not in"):
        parse_config(train_args(shards_dir, tmp_path, "--attention", "fast"))

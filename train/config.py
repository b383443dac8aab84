"""The trainer's configuration: one dataclass, filled from a YAML recipe and then from command-line flags.

Precedence is dataclass default < recipe (`--recipe FILE`, keys are field names) < flags given on the command
line, so a recipe pins the paper's setting and a flag changes one thing for one run.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
MODE_CHOICES = ("pvit", "mt", "vpt", "plain")


@dataclass
class TrainConfig:
    """Everything one training run needs. Batch sizes are global (summed over ranks)."""

    shards: str = "shards"  # directory holding <source>/build.json and its tars
    real: tuple[str, ...] = ()  # real sources, "name" or "name:weight"; their val split is evaluated
    synthetic: tuple[str, ...] = ()  # synthetic sources, "name" or "name:weight" (drawn by weight)
    mode: str = "pvit"  # pvit | mt | vpt | plain (vpt and plain train on real data only)
    preset: str = "tiny"  # pvit preset: tiny | mvit_v2_s
    pretrained: str = ""  # torchvision K400 mvit_v2_s state dict to start from; "" = random init
    num_classes: int = 0  # action classes; 0 = max label in the real manifests + 1
    out: str = "runs/train"  # checkpoints, metrics.jsonl and TensorBoard events go here
    steps: int = 0  # optimiser steps; 0 = epochs x the real stream's steps per epoch
    epochs: float = 1.0  # passes over the real stream (used when steps is 0)
    batch_size: int = 8  # real clips per step, all ranks together
    synthetic_batch_size: int = 8  # synthetic clips per step, all ranks together (paper: 64 + 64)
    max_synthetic_ratio: float = 3.0  # refuse synthetic_batch_size > this x batch_size (paper: at most 3x)
    lr: float = 1e-3  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.01  # the cosine ends at lr x this
    warmup_steps: int = 0  # linear warmup from 0; counted in optimiser steps
    weight_decay: float = 0.05  # not applied to biases, norms and the model's no_weight_decay() names
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 1.0  # max global grad norm; 0 = no clipping
    label_smoothing: float = 0.0  # action cross-entropy
    loss_weights: dict = field(default_factory=dict)  # per-task lambda overrides (recipe only); {} = paper's
    max_depth: float = 20.0  # metres; depth targets beyond are clipped in the loss
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off
    seed: int = 0  # decides init, sample order (with the epoch) and augmentation
    workers: int = 2  # DataLoader worker processes per rank
    shuffle_window: int = 4  # samples are shuffled within windows of this many consecutive (shuffled) shards
    scale_jitter: tuple[float, float] = (
        1.0,
        1.25,
    )  # training zoom range before the random crop; (1, 1) = off
    flip: bool = True  # random horizontal flip (labels follow: normals, pose, boxes)
    eval_every: int = 0  # steps between evaluations; 0 = only at the end
    eval_spatial_crops: int = 1  # 1 (centre) or 3 (left, centre, right of a zoomed clip)
    eval_zoom: float = 1.15  # zoom used to make room for 3 spatial crops
    eval_batch_size: int = 16  # clips per rank per evaluation batch
    log_every: int = 10  # steps between progress lines
    save_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2  # newest step checkpoints kept on disk
    resume: str = ""  # "" = fresh, "latest" = newest checkpoint in out/, or a checkpoint path
    stop_after: int = 0  # stop (without the final save/eval) after this step, as if killed; 0 = never
    device: str = "auto"  # auto | cpu | cuda
    recipe: str = ""  # the YAML file the values came from, kept for the record
    tensorboard: bool = True  # write TensorBoard scalars next to metrics.jsonl
    extra: dict = field(default_factory=dict)  # recipe keys for other tools (ignored by the trainer)

    def __post_init__(self) -> None:
        self.real = _names(self.real)
        self.synthetic = _names(self.synthetic)
        self.scale_jitter = tuple(float(v) for v in self.scale_jitter)  # type: ignore[assignment]
        self.betas = tuple(float(v) for v in self.betas)  # type: ignore[assignment]
        if self.mode not in MODE_CHOICES:
            raise ValueError(f"--mode must be one of {', '.join(MODE_CHOICES)}, got {self.mode!r}")
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {self.amp!r}")
        if not self.real:
            raise ValueError("--real names no source: the action task needs a real stream")
        if self.batch_size < 1 or self.synthetic_batch_size < 0:
            raise ValueError("--batch-size must be >= 1 and --synthetic-batch-size >= 0")
        if self.uses_synthetic and self.synthetic_batch_size > self.max_synthetic_ratio * self.batch_size:
            raise ValueError(
                f"--synthetic-batch-size {self.synthetic_batch_size} is more than "
                f"{self.max_synthetic_ratio:g}x "
                f"--batch-size {self.batch_size} (the paper keeps synthetic at most 3x real)"
            )
        if self.eval_spatial_crops not in (1, 3):
            raise ValueError(f"--eval-spatial-crops must be 1 or 3, got {self.eval_spatial_crops}")
        lo, hi = self.scale_jitter
        if not 1.0 <= lo <= hi:
            raise ValueError(f"--scale-jitter needs 1 <= low <= high, got {self.scale_jitter}")
        if self.steps < 0 or self.epochs <= 0:
            raise ValueError("--steps must be >= 0 and --epochs > 0")

    @property
    def uses_synthetic(self) -> bool:
        """vpt and plain have no synthetic heads, so they read real data only (the paper's baselines)."""
        return bool(self.synthetic) and self.synthetic_batch_size > 0 and self.mode in ("pvit", "mt")


def _names(value: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(part.strip() for item in value for part in str(item).split(",") if part.strip())


def parse_weighted(names: tuple[str, ...]) -> list[tuple[str, float]]:
    """`("hypersim:2", "surreact")` -> `[("hypersim", 2.0), ("surreact", 1.0)]`."""
    out = []
    for item in names:
        name, _, weight = item.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"source weight in {item!r} is not a number") from None
        if value <= 0:
            raise ValueError(f"source weight in {item!r} must be positive")
        out.append((name, value))
    return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field; unset flags stay absent so a recipe's value survives."""
    parser = argparse.ArgumentParser(
        prog="train/main.py",
        description="Train PViT on real + synthetic shards (DESIGN.md section 6).",
        argument_default=argparse.SUPPRESS,
    )
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("extra", "loss_weights"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"default: {default!r}"
        if isinstance(default, bool):
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, help=help_text)
        elif isinstance(default, tuple) and f.name in ("scale_jitter", "betas"):
            parser.add_argument(_flag(f.name), type=float, nargs=2, help=help_text)
        elif isinstance(default, tuple):
            parser.add_argument(_flag(f.name), type=str, help=f"comma-separated; {help_text}")
        else:
            parser.add_argument(_flag(f.name), type=type(default), help=help_text)
    return parser


def load_recipe(path: str | Path) -> dict:
    """A recipe's keys, checked against TrainConfig; unknown keys go under `extra` only if nested there."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping of TrainConfig fields")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown recipe key(s) {', '.join(unknown)}")
    return data


def parse_config(argv: list[str] | None) -> TrainConfig:
    """Defaults, then the recipe, then the flags actually given."""
    given = vars(build_parser().parse_args(argv))
    values = load_recipe(given["recipe"]) if given.get("recipe") else {}
    values.update(given)
    return TrainConfig(**values)

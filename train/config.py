"""The trainer's configuration: one dataclass, filled from a YAML recipe and then from command-line flags.

Precedence is dataclass default < recipe (`--recipe FILE`, keys are field names) < flags given on the command
line, so a recipe pins the paper's setting and a flag changes one thing for one run.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import yaml

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
MODE_CHOICES = ("pvit", "mt", "vpt", "plain")
OPTIMIZER_CHOICES = ("adamw", "adam", "sgd")
PAIR_FIELDS = ("train_scale", "betas")  # fields given as two numbers
DEVICE_CHOICES = ("auto", "cpu", "cuda")
VERIFY_CHOICES = ("auto", "on", "off")
VERIFY_AUTO_BYTES = 2 * 1024**3  # --verify-shards auto hashes the shards when all sources are smaller


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
    optimizer: str = "adamw"  # adamw | adam (L2 weight decay) | sgd (momentum, Nesterov)
    momentum: float = 0.9  # sgd only
    lr: float = 1e-3  # peak learning rate
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
    crop_size: int = 224  # side in pixels of the square clip the model sees (train and test)
    train_scale: tuple[int, int] = (256, 320)  # short side (pixels) drawn before the random crop (PySlowFast)
    flip: bool = True  # random horizontal flip (labels follow: normals, pose, boxes)
    eval_every: int = 0  # steps between evaluations; 0 = only at the end
    test_crops: int = 1  # spatial test views: 1 (centre) or 3 (left, centre, right along the long side)
    ava_annotations: str = ""  # AVA's annotation folder (ava_val_v2.2.csv, label map, exclusions): frame-mAP
    eval_batch_size: int = 16  # clips per rank per evaluation batch
    log_every: int = 10  # steps between progress lines
    save_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2  # newest step checkpoints kept on disk
    resume: str = ""  # "" = fresh, "latest" = newest checkpoint in out/, or a checkpoint path
    stop_after: int = 0  # stop (without the final save/eval) after this step, as if killed; 0 = never
    device: str = "auto"  # auto | cpu | cuda
    compile: bool = False  # torch.compile the model (loss and optimiser stay eager); the first steps compile
    verify_shards: str = "auto"  # sha256 every shard before training: auto (under 2 GiB in all) | on | off
    recipe: str = ""  # the YAML file the values came from, kept for the record
    tensorboard: bool = True  # write TensorBoard scalars next to metrics.jsonl
    extra: dict = field(default_factory=dict)  # recipe keys for other tools (ignored by the trainer)

    def __post_init__(self) -> None:
        self.real = _names(self.real)
        self.synthetic = _names(self.synthetic)
        self.train_scale = tuple(int(v) for v in self.train_scale)  # type: ignore[assignment]
        self.betas = tuple(float(v) for v in self.betas)  # type: ignore[assignment]
        if self.mode not in MODE_CHOICES:
            raise ValueError(f"--mode must be one of {', '.join(MODE_CHOICES)}, got {self.mode!r}")
        if self.optimizer not in OPTIMIZER_CHOICES:
            raise ValueError(
                f"--optimizer must be one of {', '.join(OPTIMIZER_CHOICES)}, got {self.optimizer!r}"
            )
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {self.amp!r}")
        if self.device not in DEVICE_CHOICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {self.device!r}")
        if self.verify_shards not in VERIFY_CHOICES:
            raise ValueError(
                f"--verify-shards must be one of {', '.join(VERIFY_CHOICES)}, got {self.verify_shards!r}"
            )
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
        if self.test_crops not in (1, 3):
            raise ValueError(f"--test-crops must be 1 or 3, got {self.test_crops}")
        if self.crop_size < 8:
            raise ValueError(f"--crop-size must be at least 8, got {self.crop_size}")
        lo, hi = self.train_scale
        if not self.crop_size <= lo <= hi:
            raise ValueError(
                f"--train-scale needs --crop-size ({self.crop_size}) <= low <= high, got {lo} {hi}"
            )
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not a 24-line usage block
        raise ValueError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field; unset flags stay absent so a recipe's value survives."""
    parser = _Parser(
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
        elif isinstance(default, tuple) and f.name == "betas":
            parser.add_argument(_flag(f.name), type=float, nargs=2, help=help_text)
        elif isinstance(default, tuple) and f.name == "train_scale":
            parser.add_argument(_flag(f.name), type=int, nargs=2, metavar=("MIN", "MAX"), help=help_text)
        elif isinstance(default, tuple):
            parser.add_argument(_flag(f.name), type=str, help=f"comma-separated; {help_text}")
        else:
            parser.add_argument(_flag(f.name), type=type(default), help=help_text)
    return parser


def load_recipe(path: str | Path) -> dict:
    """A recipe's keys, checked against TrainConfig; unknown keys go under `extra` only if nested there."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as error:
        raise ValueError(f"--recipe {path}: cannot read it ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ValueError(f"--recipe {path}: not valid YAML{line} ({problem})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping of TrainConfig fields")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown recipe key(s) {', '.join(unknown)}")
    for f in dataclasses.fields(TrainConfig):
        if f.name in data:
            _check_type(path, f, data[f.name])
    return data


def _check_type(path: str | Path, f: dataclasses.Field, value: object) -> None:
    """A recipe value of the wrong type is one line naming the key, not a TypeError deep in training."""
    factory = f.default_factory
    default = f.default if f.default is not dataclasses.MISSING else factory() if callable(factory) else None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, tuple) and f.name in PAIR_FIELDS:
        pair = value if isinstance(value, (list, tuple)) and len(value) == 2 else None
        ok = pair is not None and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
    elif isinstance(default, tuple):
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kind = "a list of two numbers" if f.name in PAIR_FIELDS else type(default).__name__
        raise ValueError(f"{path}: {f.name} should be {kind}, got {value!r}")


def parse_config(argv: list[str] | None) -> TrainConfig:
    """Defaults, then the recipe, then the flags actually given."""
    given = vars(build_parser().parse_args(argv))
    values = load_recipe(given["recipe"]) if given.get("recipe") else {}
    values.update(given)
    return TrainConfig(**values)

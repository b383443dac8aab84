"""The trainer's configuration: a `TrainConfig` of sections, filled from a YAML recipe, then from flags.

Sections: `model` (goes whole to `pvit.build_model`; `pvit.PViTConfig` validates it), `data` (sources,
batches, loader), `augment` (PySlowFast's training protocol and MViTv2's real-stream augmentation), `optim`
(optimiser, schedule, losses), `eval` and `log`; a few run-wide fields (out, seed, device...) sit at the top.

Precedence is dataclass default < recipe (`--recipe FILE`) < flags given on the command line, so a recipe pins
the paper's setting and a flag changes one thing for one run. A recipe nests its keys under the section names
(`optim: {lr: 7.0e-5}`); flags stay flat (`--lr 7e-5`): every field name is unique across sections, and each
field's trailing comment is its `--help` text.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import math
import sys
import textwrap
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pvit.config import get_config, resolve_tasks
from pvit.tasks import TASKS

from pipeline.shardcache import parse_size
from pipeline.spans import ReadSettings
from pipeline.storage import parse_storage_options
from train.realaug import check_rand_augment

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
OPTIMIZER_CHOICES = ("adamw", "adam", "sgd")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
VERIFY_CHOICES = ("auto", "on", "off")
LOSS_WEIGHT_RULES = ("paper", "equal")  # --loss-weights: the paper's lambdas, or every loss on one scale
VERIFY_AUTO_BYTES = 2 * 1024**3  # --verify-shards auto hashes the shards when all sources are smaller


@dataclass
class ModelConfig:
    """The model: passed whole to `pvit.build_model` with the sizes the opened sources give."""

    preset: str = "tiny"  # pvit preset: tiny | mvit_v2_s
    mode: str = "pvit"  # pvit | mt | vpt | np | plain (vpt, np and plain train on real data only)
    # Model-side ablations (paper Table 4a/4c, Fig. 4, §A.2); pvit.PViT's docstring says what each changes.
    one_prompt: bool = False  # OP: one prompt group shared by every synthetic task (pvit, vpt, np)
    freeze_backbone: bool = False  # frozen backbone, trained prompts/heads (pvit: "PViT VPT"); vpt implies it
    prompts_per_task: int = 1  # prompt tokens per task (§A.2 tries 20)
    tasks: tuple[str, ...] = ()  # synthetic task subset, names and/or S1, S2; () = all synthetic sources have
    real_tasks: tuple[str, ...] = ()  # real-stream labels with their own prompt and head (pvit): boxes
    num_classes: int = 0  # action classes; 0 = max label in the real manifests + 1
    pretrained: str = ""  # "k400" (torchvision K400 mvit_v2_s via torch hub) or a state dict path; "" = none
    init_from: str = ""  # a checkpoint of this trainer whose backbone (only) initialises this run (stage 2)
    # How the model runs (same weights): pvit.config describes each choice; `python -m pvit.bench` times them.
    attention: str = "auto"  # auto (folded on CUDA, sdpa on CPU) | sdpa | folded | flex | explicit
    pool_impl: str = "auto"  # auto (channels_last on CUDA, conv on CPU) | conv | channels_last | shifts
    act_checkpoint: bool = False  # recompute each block's activations in backward: less memory, more time

    def __post_init__(self) -> None:
        self.tasks = _resolved_tasks(self.tasks)
        self.real_tasks = names(self.real_tasks)
        try:
            get_config(self.preset, **self.switches())  # PViTConfig validates every model setting
        except (ValueError, TypeError) as error:
            raise ValueError(f"model: {error}") from None
        if self.tasks and self.mode == "plain":
            raise ValueError("--tasks needs a mode with prompts or task heads, not plain")
        if self.num_classes < 0:
            raise ValueError(f"--num-classes must be >= 0, got {self.num_classes}")

    def switches(self) -> dict[str, Any]:
        """The `pvit.build_model` keywords this section sets (the sources give the sizes)."""
        chosen = {"tasks": self.tasks} if self.tasks else {}
        return {
            "mode": self.mode,
            "attention": self.attention,
            "pool_impl": self.pool_impl,
            "act_checkpoint": self.act_checkpoint,
            "prompts_per_task": self.prompts_per_task,
            "one_prompt": self.one_prompt,
            "freeze_backbone": self.freeze_backbone,
            "real_tasks": self.real_tasks,
            **chosen,
        }


@dataclass
class DataConfig:
    """The real and synthetic streams. Batch sizes are global (summed over ranks)."""

    shards: str = "shards"  # directory or URL (s3://bucket/prefix) holding <source>/build.json and its tars
    real: tuple[str, ...] = ()  # real sources, "name" or "name:weight"; their val split is evaluated
    synthetic: tuple[str, ...] = ()  # synthetic sources, "name" or "name:weight" (drawn by weight)
    batch_size: int = 8  # real clips per step, all ranks together
    synthetic_batch_size: int = 8  # synthetic clips per step, all ranks together (paper: 64 + 64)
    max_synthetic_ratio: float = 3.0  # refuse synthetic_batch_size > this x batch_size (paper: at most 3x)
    # Data-side ablations (paper §A.2, Fig. 4b); train/plan.py and train/data.py apply them.
    shuffle_synthetic_labels: bool = False  # control: each synthetic task's labels permuted across the batch
    synthetic_fraction: float = 1.0  # use this nested, id-chosen fraction of each synthetic source's videos
    synthetic_only: bool = False  # pretrain stage 1: task heads on the synthetic stream only, no real stream
    workers: int = 2  # DataLoader worker processes per rank
    shuffle_window: int = 4  # samples are shuffled within windows of this many consecutive (shuffled) shards
    verify_shards: str = "auto"  # sha256 every shard before training: auto (under 2 GiB in all) | on | off
    # Shards at a URL (README "On object storage"); none of these changes what is trained.
    storage_options: tuple[str, ...] = ()  # KEY=VALUE fsspec option for a URL --shards (repeatable flag)
    cache_dir: str = ""  # local cache of whole remote shards, shared by a node's processes; "" = ranged reads
    cache_limit: str = "50GB"  # most bytes --cache-dir keeps (least recently used shards go first)

    def __post_init__(self) -> None:
        self.real, self.synthetic = names(self.real), names(self.synthetic)
        parse_weighted(self.real + self.synthetic)  # a bad weight fails here, not at the first step
        _choice("--verify-shards", self.verify_shards, VERIFY_CHOICES)
        if self.batch_size < 1 or self.synthetic_batch_size < 0:
            raise ValueError("--batch-size must be >= 1 and --synthetic-batch-size >= 0")
        if not 0.0 < self.synthetic_fraction <= 1.0:
            raise ValueError(f"--synthetic-fraction must be in (0, 1], got {self.synthetic_fraction:g}")
        _at_least("--workers", self.workers, 0)
        _at_least("--shuffle-window", self.shuffle_window, 1)
        _positive("--max-synthetic-ratio", self.max_synthetic_ratio)
        if isinstance(self.storage_options, str):  # one option: a value may hold commas (JSON)
            self.storage_options = (self.storage_options,)
        self.read_settings()  # a bad --storage-option or --cache-limit fails here, before any step

    def read_settings(self) -> ReadSettings:
        """How the sources are reached: storage options and the local shard cache."""
        return ReadSettings(parse_storage_options(self.storage_options), self.cache_dir,
                            parse_size(self.cache_limit))  # fmt: skip


@dataclass
class AugmentConfig:
    """PySlowFast's training protocol, and MViTv2-S's real-stream augmentation (train/realaug.py).

    The MViTv2 parts run on real clips with an action label only, never on synthetic or AVA/Ego4D clips, and
    are off by default; with mixup or cutmix, label_smoothing goes into the soft targets.
    """

    crop_size: int = 224  # side in pixels of the square clip the model sees (train and test)
    train_scale: tuple[int, int] = (256, 320)  # short side (pixels) drawn before the random crop (PySlowFast)
    flip: bool = True  # random horizontal flip (labels follow: normals, pose, boxes)
    mixup: float = 0.0  # mixup alpha (timm Mixup); 0 = off (MViTv2: 0.8)
    cutmix: float = 0.0  # cutmix alpha, one box for all frames; 0 = off (MViTv2: 1.0)
    mixup_prob: float = 1.0  # probability a batch is mixed at all (MViTv2: 1.0)
    mixup_switch_prob: float = 0.5  # probability of cutmix rather than mixup when both are on (MViTv2: 0.5)
    rand_augment: str = ""  # timm RandAugment, all frames alike; "" = off (MViTv2: rand-m7-n4-mstd0.5-inc1)
    random_erasing: float = 0.0  # probability of one pixel-noise box, the same in all frames (MViTv2: 0.25)

    def __post_init__(self) -> None:
        self.train_scale = tuple(int(v) for v in self.train_scale)  # type: ignore[assignment]
        if self.crop_size < 8:
            raise ValueError(f"--crop-size must be at least 8, got {self.crop_size}")
        low, high = self.train_scale
        if not self.crop_size <= low <= high:
            raise ValueError(
                f"--train-scale needs --crop-size ({self.crop_size}) <= low <= high, got {low} {high}"
            )
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError(f"--mixup and --cutmix are alphas >= 0, got {self.mixup:g} and {self.cutmix:g}")
        for flag_name, value in (("--mixup-prob", self.mixup_prob),
                                 ("--mixup-switch-prob", self.mixup_switch_prob),
                                 ("--random-erasing", self.random_erasing)):  # fmt: skip
            _fraction(flag_name, value)
        if self.rand_augment:
            check_rand_augment(self.rand_augment)


@dataclass
class OptimConfig:
    """Optimiser, schedule and losses. Steps are optimiser steps."""

    steps: int = 0  # optimiser steps; 0 = epochs x the real stream's steps per epoch
    epochs: float = 1.0  # passes over the real stream (used when steps is 0)
    grad_accum: int = 1  # micro-batches per optimiser step; the step equals one of the whole batch
    optimizer: str = "adamw"  # adamw | adam (L2 weight decay) | sgd (momentum, Nesterov)
    momentum: float = 0.9  # sgd only
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.01  # the cosine ends at lr x this
    warmup_steps: int = 0  # linear warmup from 0; counted in optimiser steps
    weight_decay: float = 0.05  # not applied to biases, norms and the model's no_weight_decay() names
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw moment decay rates (beta1, beta2)
    clip_grad: float = 1.0  # max global grad norm; 0 = no clipping
    label_smoothing: float = 0.0  # action cross-entropy
    loss_weights: str = "paper"  # paper (the paper's lambdas) | equal (calibrated) | NAME=VALUE,... overrides
    calibration_batches: int = 20  # --loss-weights equal: batches whose mean losses set the lambdas
    max_depth: float = 20.0  # metres; depth targets beyond are clipped in the loss

    def __post_init__(self) -> None:
        self.betas = tuple(float(v) for v in self.betas)  # type: ignore[assignment]
        self.loss_weights = loss_weight_text(self.loss_weights)
        _choice("--optimizer", self.optimizer, OPTIMIZER_CHOICES)
        if self.steps < 0 or not self.epochs > 0:
            raise ValueError("--steps must be >= 0 and --epochs > 0")
        _positive("--lr", self.lr)
        _positive("--max-depth", self.max_depth)
        _at_least("--warmup-steps", self.warmup_steps, 0)
        _at_least("--grad-accum", self.grad_accum, 1)
        _at_least("--calibration-batches", self.calibration_batches, 1)
        for flag, value in (("--min-lr-ratio", self.min_lr_ratio),
                            ("--label-smoothing", self.label_smoothing),
                            ("--momentum", self.momentum)):  # fmt: skip
            _fraction(flag, value)
        for flag, value in (("--weight-decay", self.weight_decay), ("--clip-grad", self.clip_grad)):
            _at_least(flag, value, 0)
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"--betas must each be in [0, 1), got {self.betas}")
        parse_loss_weights(self.loss_weights)  # an unknown task or a bad value fails here


@dataclass
class EvalConfig:
    """Evaluation on the val splits, each benchmark's official metric."""

    eval_every: int = 0  # steps between evaluations; 0 = only at the end
    test_crops: int = 1  # spatial test views: 1 (centre) or 3 (left, centre, right along the long side)
    eval_batch_size: int = 16  # clips per rank per evaluation batch
    ava_annotations: str = ""  # AVA's annotation folder (ava_val_v2.2.csv, label map, exclusions): frame-mAP

    def __post_init__(self) -> None:
        if self.test_crops not in (1, 3):
            raise ValueError(f"--test-crops must be 1 or 3, got {self.test_crops}")
        _at_least("--eval-every", self.eval_every, 0)
        _at_least("--eval-batch-size", self.eval_batch_size, 1)


@dataclass
class LogConfig:
    """Progress lines, metrics and checkpoints (none of these changes what is trained)."""

    log_every: int = 10  # steps between progress lines
    save_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2  # newest step checkpoints kept on disk; 0 = all
    tensorboard: bool = True  # write TensorBoard scalars next to metrics.jsonl

    def __post_init__(self) -> None:
        _at_least("--log-every", self.log_every, 1)
        _at_least("--save-every", self.save_every, 0)
        _at_least("--keep-checkpoints", self.keep_checkpoints, 0)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "augment": AugmentConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
    "log": LogConfig,
}


@dataclass
class TrainConfig:
    """Everything one training run needs: the sections, and the run-wide fields below."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    out: str = "runs/train"  # checkpoints, metrics.jsonl and TensorBoard events go here
    seed: int = 0  # decides init, sample order (with the epoch) and augmentation
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off
    compile: bool = False  # torch.compile the model (loss and optimiser stay eager); the first steps compile
    resume: str = ""  # "" = fresh, "latest" = newest checkpoint in out/, or a checkpoint path
    stop_after: int = 0  # stop (without the final save/eval) after this step, as if killed; 0 = never
    recipe: str = ""  # the YAML file the values came from, kept for the record
    extra: dict = field(default_factory=dict)  # recipe keys for other tools (ignored by the trainer)

    def __post_init__(self) -> None:
        _choice("--amp", self.amp, AMP_CHOICES)
        _choice("--device", self.device, DEVICE_CHOICES)
        _at_least("--stop-after", self.stop_after, 0)
        self._check_streams()

    def _check_streams(self) -> None:
        """Each stream-shaping switch needs the stream it changes; the modes decide which streams exist."""
        data, mode = self.data, self.model.mode
        if data.synthetic_only:
            if mode not in ("pvit", "mt"):
                raise ValueError(
                    f"--synthetic-only trains the task heads: --mode must be pvit or mt, not {mode}"
                )
            if not data.synthetic or data.synthetic_batch_size < 1:
                raise ValueError("--synthetic-only needs --synthetic sources and --synthetic-batch-size >= 1")
        elif not data.real:
            raise ValueError("--real names no source: the action task needs a real stream")
        elif self.uses_synthetic and data.synthetic_batch_size > data.max_synthetic_ratio * data.batch_size:
            raise ValueError(
                f"--synthetic-batch-size {data.synthetic_batch_size} is more than "
                f"{data.max_synthetic_ratio:g}x "
                f"--batch-size {data.batch_size} (the paper keeps synthetic at most 3x real)"
            )
        switches = {"--shuffle-synthetic-labels": data.shuffle_synthetic_labels,
                    "--synthetic-fraction": data.synthetic_fraction < 1.0}  # fmt: skip
        for flag, on in switches.items():
            if on and not self.uses_synthetic:
                raise ValueError(
                    f"{flag} changes the synthetic stream, but this run has none "
                    "(it needs --synthetic, --synthetic-batch-size >= 1 and --mode pvit or mt)"
                )

    @property
    def uses_synthetic(self) -> bool:
        """vpt, np and plain have no synthetic heads, so they read real data only (the paper's baselines)."""
        data = self.data
        return bool(data.synthetic) and data.synthetic_batch_size > 0 and self.model.mode in ("pvit", "mt")

    def flat(self) -> dict[str, Any]:
        """`{"section.field": value}` for every section field and `{"field": value}` for the run-wide ones."""
        out = {f"{section}.{k}": v for section in SECTIONS for k, v in vars(getattr(self, section)).items()}
        out.update(
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in SECTIONS}
        )
        return out


# ----------------------------------------------------------------------------- value checks


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


def _at_least(flag: str, value: float, low: float) -> None:
    if not value >= low or not math.isfinite(value):  # NaN fails both ways
        raise ValueError(f"{flag} must be >= {low:g}, got {value!r}")


def _positive(flag: str, value: float) -> None:
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{flag} must be > 0, got {value!r}")


def _fraction(flag: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{flag} must be in [0, 1], got {value!r}")


def _resolved_tasks(value: tuple[str, ...] | str) -> tuple[str, ...]:
    try:
        return resolve_tasks(names(value))  # "S1" -> its tasks, in the model's task order
    except ValueError as error:
        raise ValueError(f"--tasks: {error}") from None


def names(value: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    """Comma-separated or listed names, stripped, empty ones dropped."""
    if isinstance(value, str):
        value = value.split(",")
    return tuple(part.strip() for item in value for part in str(item).split(",") if part.strip())


def parse_weighted(items: tuple[str, ...]) -> list[tuple[str, float]]:
    """`("hypersim:2", "surreact")` -> `[("hypersim", 2.0), ("surreact", 1.0)]`."""
    out = []
    for item in items:
        name, _, weight = item.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"source weight in {item!r} is not a number") from None
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"source weight in {item!r} must be positive")
        out.append((name, value))
    return out


def loss_weight_text(value: str | dict) -> str:
    """A recipe's `loss_weights` mapping (`{depth: 0.05}`) as the flag's text (`depth=0.05`)."""
    if isinstance(value, dict):
        return ",".join(f"{task}={weight}" for task, weight in value.items()) or "paper"
    return str(value).strip() or "paper"


def parse_loss_weights(text: str) -> tuple[str, dict[str, float]]:
    """`--loss-weights`: ("paper" | "equal", {}) or ("paper", {task: lambda}) for NAME=VALUE overrides."""
    if text in LOSS_WEIGHT_RULES:
        return text, {}
    overrides: dict[str, float] = {}
    for part in names(text):
        task, sep, value = part.partition("=")
        if not sep or task not in TASKS:
            rules = " | ".join(LOSS_WEIGHT_RULES)
            raise ValueError(
                f"--loss-weights {part!r}: expected {rules} or TASK=VALUE with a task of {', '.join(TASKS)}"
            )
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not weight >= 0 or not math.isfinite(weight):
            raise ValueError(f"--loss-weights {part!r}: the weight must be a number >= 0")
        overrides[task] = weight
    return "paper", overrides


# ----------------------------------------------------------------------------- flags and recipes


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def section_fields() -> Iterator[tuple[str | None, dataclasses.Field]]:
    """(section or None for run-wide, field) for every setting a flag or a recipe key can set."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in SECTIONS:
            yield from ((f.name, sub) for sub in dataclasses.fields(SECTIONS[f.name]))
        elif f.name != "extra":
            yield None, f


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not a 24-line usage block
        raise ValueError(f"{message} (see {self.prog} --help)")


def program_name() -> str:
    """How the trainer was started, for its usage and error lines: `pvit-train` or `train/main.py`."""
    return "pvit-train" if Path(sys.argv[0]).name == "pvit-train" else "train/main.py"


@functools.cache
def field_comments() -> dict[str, str]:
    """Each setting's trailing `# comment` (units, sentinels), read once from its class's source.

    The comments are the settings' documentation; reading them keeps `--help` and the dataclasses one text.
    """
    out = {}
    for cls in (TrainConfig, *SECTIONS.values()):
        out.update(_trailing_comments(cls))
    return out


def _trailing_comments(cls: type) -> dict[str, str]:
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    out = {}
    for item in node.body:
        # The comment that ends the field's (last) line; a comment line above a field is not its own.
        text = comments.get(item.end_lineno or item.lineno, "")
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and text:
            out[item.target.id] = text
    return out


def _default(f: dataclasses.Field) -> Any:
    factory = f.default_factory
    return f.default if f.default is not dataclasses.MISSING else factory() if callable(factory) else None


def build_parser() -> argparse.ArgumentParser:
    """One flag per setting; unset flags stay absent so a recipe's value survives."""
    parser = _Parser(
        prog=program_name(),
        description="Train PViT on real + synthetic shards (docs/training.md). A recipe (--recipe FILE) sets "
        "settings by section (optim: {lr: ...}); flags given here override it.",
        argument_default=argparse.SUPPRESS,
    )
    groups = {name: parser.add_argument_group(name, cls.__doc__) for name, cls in SECTIONS.items()}
    for section, f in section_fields():
        default = _default(f)
        comment = field_comments().get(f.name, "")
        help_text = (f"{comment} (default: {default!r})" if comment else f"default: {default!r}").replace(
            "%", "%%"
        )
        target = groups[section] if section else parser
        if isinstance(default, bool):
            target.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, help=help_text)
        elif f.name == "betas":
            target.add_argument(flag(f.name), type=float, nargs=2, help=help_text)
        elif f.name == "storage_options":  # repeatable, as pvit-pipeline's (a value may hold commas)
            target.add_argument("--storage-option", dest=f.name, action="append", metavar="KEY=VALUE",
                                help=help_text)  # fmt: skip
        elif f.name == "train_scale":
            target.add_argument(flag(f.name), type=int, nargs=2, metavar=("MIN", "MAX"), help=help_text)
        elif isinstance(default, tuple):
            target.add_argument(flag(f.name), type=str, help=f"comma-separated; {help_text}")
        else:
            target.add_argument(flag(f.name), type=type(default), help=help_text)
    return parser


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe's settings as `{field: value}` (flat, like the flags), each checked against its section."""
    data = _read_yaml(path)
    where = {f.name: section for section, f in section_fields()}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "extra":
            flat["extra"] = value
        elif key in SECTIONS:
            flat.update(_section_values(path, key, value))
        elif where.get(key, "") is None:  # a run-wide field
            flat[key] = _checked(path, key, value)
        elif key in where:
            raise ValueError(f"{path}: '{key}' is now '{where[key]}.{key}' (recipes nest keys in sections: "
                             f"{where[key]}: {{{key}: ...}})")  # fmt: skip
        else:
            raise ValueError(f"{path}: unknown recipe key '{key}' (sections: {', '.join(SECTIONS)})")
    return flat


def _read_yaml(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(
            f"--recipe {path}: cannot read it ({getattr(error, 'strerror', None) or error})"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ValueError(f"--recipe {path}: not valid YAML{line} ({problem})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping of sections (model, data, optim, ...)")
    return data


def _section_values(path: str | Path, section: str, values: object) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValueError(f"{path}: '{section}' is a section: a mapping of its settings")
    known = {f.name for f in dataclasses.fields(SECTIONS[section])}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)} in section '{section}'")
    return {key: _checked(path, key, value, section) for key, value in values.items()}


def _checked(path: str | Path, key: str, value: object, section: str | None = None) -> object:
    """A recipe value of the wrong type is one line naming the key, not a TypeError deep in training."""
    f = next(f for s, f in section_fields() if f.name == key)
    default = _default(f)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = _is_number(value)
    elif key in ("betas", "train_scale"):
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value)
    elif isinstance(default, tuple):
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    elif key == "loss_weights":
        ok = isinstance(value, (str, dict))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kind = "a list of two numbers" if key in ("betas", "train_scale") else type(default).__name__
        name = f"{section}.{key}" if section else key
        raise ValueError(f"{path}: {name} should be {kind}, got {value!r}")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def make_config(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from flat `{field: value}` settings (flags and recipe keys), each into its section."""
    where = {f.name: section for section, f in section_fields()}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    for key, value in values.items():
        section = where.get(key)
        (sections[section] if section else top)[key] = value
    built = {name: SECTIONS[name](**settings) for name, settings in sections.items()}
    return TrainConfig(**built, **top)


def parse_config(argv: list[str] | None) -> TrainConfig:
    """Defaults, then the recipe, then the flags actually given."""
    given = vars(build_parser().parse_args(argv))
    values = load_recipe(given["recipe"]) if given.get("recipe") else {}
    values.update(given)
    return make_config(values)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """The TrainConfig `dataclasses.asdict` gave (a checkpoint's sidecar); unknown keys are refused."""
    flat = {k: v for k, v in data.items() if k not in SECTIONS}
    for section in SECTIONS:
        flat.update(data.get(section) or {})
    return make_config(flat)

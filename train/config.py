"""The trainer's configuration: one dataclass, filled from a YAML recipe and then from command-line flags.

Precedence is dataclass default < recipe (`--recipe FILE`, keys are field names) < flags given on the command
line, so a recipe pins the paper's setting and a flag changes one thing for one run.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import sys
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import yaml
from pvit.config import REAL_PROMPT_TASKS, resolve_tasks

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
MODE_CHOICES = ("pvit", "mt", "vpt", "np", "plain")
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
    mode: str = "pvit"  # pvit | mt | vpt | np | plain (vpt, np and plain train on real data only)
    # Model-side ablations (paper Table 4a/4c, Fig. 4, §A.2); pvit.PViT's docstring says what each changes.
    one_prompt: bool = False  # OP: one prompt group shared by every synthetic task (pvit, vpt, np)
    freeze_backbone: bool = False  # frozen backbone, trained prompts/heads (pvit: "PViT VPT"); vpt implies it
    prompts_per_task: int = 1  # prompt tokens per task (§A.2 tries 20)
    tasks: tuple[str, ...] = ()  # synthetic task subset, names and/or S1, S2; () = all synthetic sources have
    real_tasks: tuple[str, ...] = ()  # real-stream labels with their own prompt and head (pvit): boxes
    preset: str = "tiny"  # pvit preset: tiny | mvit_v2_s
    pretrained: str = ""  # "k400" (torchvision K400 mvit_v2_s via torch hub) or a state dict path; "" = none
    num_classes: int = 0  # action classes; 0 = max label in the real manifests + 1
    out: str = "runs/train"  # checkpoints, metrics.jsonl and TensorBoard events go here
    steps: int = 0  # optimiser steps; 0 = epochs x the real stream's steps per epoch
    epochs: float = 1.0  # passes over the real stream (used when steps is 0)
    batch_size: int = 8  # real clips per step, all ranks together
    synthetic_batch_size: int = 8  # synthetic clips per step, all ranks together (paper: 64 + 64)
    max_synthetic_ratio: float = 3.0  # refuse synthetic_batch_size > this x batch_size (paper: at most 3x)
    # Data-side ablations (paper §A.2, Fig. 4b); train/plan.py and train/data.py apply them.
    shuffle_synthetic_labels: bool = False  # control: each synthetic task's labels permuted across the batch
    synthetic_fraction: float = 1.0  # use this nested, id-chosen fraction of each synthetic source's videos
    synthetic_only: bool = False  # pretrain stage 1: task heads on the synthetic stream only, no real stream
    init_from: str = ""  # a checkpoint of this trainer whose backbone (only) initialises this run (stage 2)
    optimizer: str = "adamw"  # adamw | adam (L2 weight decay) | sgd (momentum, Nesterov)
    momentum: float = 0.9  # sgd only
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.01  # the cosine ends at lr x this
    warmup_steps: int = 0  # linear warmup from 0; counted in optimiser steps
    weight_decay: float = 0.05  # not applied to biases, norms and the model's no_weight_decay() names
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw moment decay rates (beta1, beta2)
    clip_grad: float = 1.0  # max global grad norm; 0 = no clipping
    label_smoothing: float = 0.0  # action cross-entropy
    # MViTv2-S's real-stream augmentation (PySlowFast; train/realaug.py), on real clips with an action label
    # only, never on synthetic or AVA/Ego4D clips. All off by default. With mixup or cutmix, label_smoothing
    # goes into the soft targets.
    mixup: float = 0.0  # mixup alpha (timm Mixup); 0 = off (MViTv2: 0.8)
    cutmix: float = 0.0  # cutmix alpha, one box for all frames; 0 = off (MViTv2: 1.0)
    mixup_prob: float = 1.0  # probability a batch is mixed at all (MViTv2: 1.0)
    mixup_switch_prob: float = 0.5  # probability of cutmix rather than mixup when both are on (MViTv2: 0.5)
    rand_augment: str = ""  # timm RandAugment, all frames alike; "" = off (MViTv2: rand-m7-n4-mstd0.5-inc1)
    random_erasing: float = 0.0  # probability of one pixel-noise box, the same in all frames (MViTv2: 0.25)
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
        self._check_model_switches()
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
        self._check_ablations()
        if self.batch_size < 1 or self.synthetic_batch_size < 0:
            raise ValueError("--batch-size must be >= 1 and --synthetic-batch-size >= 0")
        if (
            self.uses_synthetic
            and not self.synthetic_only  # no real batch to compare with
            and self.synthetic_batch_size > self.max_synthetic_ratio * self.batch_size
        ):
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
        self._check_real_augment()

    def _check_real_augment(self) -> None:
        """MViTv2's augmentation fields: alphas >= 0, probabilities in [0, 1], a RandAugment timm parses."""
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError(f"--mixup and --cutmix are alphas >= 0, got {self.mixup:g} and {self.cutmix:g}")
        probabilities = {"--mixup-prob": self.mixup_prob, "--mixup-switch-prob": self.mixup_switch_prob,
                         "--random-erasing": self.random_erasing}  # fmt: skip
        for flag, value in probabilities.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{flag} is a probability in [0, 1], got {value:g}")
        if self.rand_augment:
            from train.realaug import check_rand_augment  # imports timm: only when asked for

            check_rand_augment(self.rand_augment)

    def _check_ablations(self) -> None:
        """The data-side ablation switches: each one must have the stream it changes."""
        if not 0.0 < self.synthetic_fraction <= 1.0:
            raise ValueError(f"--synthetic-fraction must be in (0, 1], got {self.synthetic_fraction:g}")
        if self.synthetic_only:
            if self.mode not in ("pvit", "mt"):
                raise ValueError(
                    f"--synthetic-only trains the task heads: --mode must be pvit or mt, not {self.mode}"
                )
            if not self.synthetic or self.synthetic_batch_size < 1:
                raise ValueError("--synthetic-only needs --synthetic sources and --synthetic-batch-size >= 1")
        elif not self.real:
            raise ValueError("--real names no source: the action task needs a real stream")
        switches = {"--shuffle-synthetic-labels": self.shuffle_synthetic_labels,
                    "--synthetic-fraction": self.synthetic_fraction < 1.0}  # fmt: skip
        for flag, on in switches.items():
            if on and not self.uses_synthetic:
                raise ValueError(
                    f"{flag} changes the synthetic stream, but this run has none "
                    "(it needs --synthetic, --synthetic-batch-size >= 1 and --mode pvit or mt)"
                )

    def _check_model_switches(self) -> None:
        """The model-side ablation switches: each needs a mode with what it changes."""
        try:
            self.tasks = resolve_tasks(self.tasks)  # "S1" -> its tasks, in the model's task order
        except ValueError as error:
            raise ValueError(f"--tasks: {error}") from None
        self.real_tasks = _names(self.real_tasks)
        prompts = ("pvit", "vpt", "np")
        without = f"a mode with prompts (pvit, vpt or np), not {self.mode}"
        if self.one_prompt and self.mode not in prompts:
            raise ValueError(f"--one-prompt needs {without}")
        if self.prompts_per_task < 1:
            raise ValueError(f"--prompts-per-task must be >= 1, got {self.prompts_per_task}")
        if self.prompts_per_task > 1 and self.mode not in prompts:
            raise ValueError(f"--prompts-per-task > 1 needs {without}")
        if self.tasks and self.mode == "plain":
            raise ValueError("--tasks needs a mode with prompts or task heads, not plain")
        unknown = sorted(set(self.real_tasks) - set(REAL_PROMPT_TASKS))
        if unknown:
            supported = ", ".join(REAL_PROMPT_TASKS)
            raise ValueError(f"--real-tasks: unknown {', '.join(unknown)}; supported: {supported}")
        if self.real_tasks and self.mode != "pvit":
            raise ValueError(f"--real-tasks (prompts for real labels) needs --mode pvit, not {self.mode}")

    @property
    def uses_synthetic(self) -> bool:
        """vpt, np and plain have no synthetic heads, so they read real data only (the paper's baselines)."""
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


def program_name() -> str:
    """How the trainer was started, for its usage and error lines: `pvit-train` or `train/main.py`."""
    return "pvit-train" if Path(sys.argv[0]).name == "pvit-train" else "train/main.py"


@functools.cache
def field_comments() -> dict[str, str]:
    """Each TrainConfig field's trailing `# comment` (units, sentinels), read once from the class source.

    The comments are the fields' documentation; reading them keeps `--help` and the dataclass one text.
    """
    source = textwrap.dedent(inspect.getsource(TrainConfig))
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    (cls,) = ast.parse(source).body
    assert isinstance(cls, ast.ClassDef)
    out = {}
    for node in cls.body:
        # The comment that ends the field's (last) line; a comment line above a field is not its own.
        text = comments.get(node.end_lineno or node.lineno, "")
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and text:
            out[node.target.id] = text
    return out


def _help(name: str, default: object) -> str:
    """The field's comment and its default; `%` escaped, since argparse formats help strings with it."""
    comment = field_comments().get(name, "")
    text = f"{comment} (default: {default!r})" if comment else f"default: {default!r}"
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field; unset flags stay absent so a recipe's value survives."""
    parser = _Parser(
        prog=program_name(),
        description="Train PViT on real + synthetic shards (DESIGN.md section 6). "
        "A recipe (--recipe FILE) sets fields by name; flags given here override it.",
        argument_default=argparse.SUPPRESS,
    )
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("extra", "loss_weights"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = _help(f.name, default)
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

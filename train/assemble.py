"""A training run's parts, built from its config before the first step: sources, streams, model, optimiser.

`prepare(cfg, dist)` opens every source and refuses any disagreement before a model or a worker exists, then
builds the model the config and the sources call for, the two streams (real and synthetic) and the
optimiser with its schedule. The result is a `Run`, which the loop (`train.main`), checkpoints
(`train.checkpoint`) and evaluation (`train.evaluate`) share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import cast

import pvit
import torch
from torch.nn.parallel import DistributedDataParallel

from pipeline.labelspace import load_label_space
from pipeline.schema import SYNTHETIC_TASKS
from train.augment import Protocol
from train.config import VERIFY_AUTO_BYTES, TrainConfig, parse_loss_weights, parse_weighted
from train.data import Geometry, StreamSpec
from train.distributed import Dist
from train.logger import print0
from train.optim import FiniteGuard, WarmupCosine, make_optimizer
from train.plan import StreamPlan, video_subset
from train.sources import (
    ShardMismatch,
    SourceData,
    check_compatible,
    has_task,
    num_action_classes,
    open_source,
    verify_shards,
)

STREAM_IDS = {"real": 0, "synthetic": 1}
Sources = dict[str, list[SourceData]]  # role ("real", "synthetic") -> its opened sources


@dataclasses.dataclass
class Run:
    """What the loop needs, built once before the first step."""

    cfg: TrainConfig
    dist: Dist
    model: pvit.PViT  # the raw model (DDP and compile wrap it in `train_model`)
    train_model: torch.nn.Module
    loss_fn: pvit.MultiTaskLoss
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine  # timm's cosine, stepped after every optimiser step
    scaler: torch.amp.GradScaler
    streams: list[StreamSpec]
    sources: Sources
    geometry: Geometry
    num_seg: int
    total_steps: int
    autocast: Callable[[], contextlib.AbstractContextManager]
    label_spaces: dict[str, str | None]  # {"segm": space, "boxes": space} the synthetic heads predict in
    ddp: DistributedDataParallel | None = None  # the DDP wrapper across ranks (no_sync between micro-batches)
    start_step: int = 0
    guard: FiniteGuard | None = None  # set by the loop; None = check every step's norm at once

    def source_hashes(self) -> dict[str, str]:
        """Every opened source's build config hash: a checkpoint records them, a resume compares them."""
        return {s.name: s.config_hash for group in self.sources.values() for s in group}


def open_streams(cfg: TrainConfig, d: Dist) -> tuple[Sources, dict[str, list[float]], dict]:
    """Open every source and refuse any disagreement before a model or a worker exists."""
    data = cfg.data
    # --synthetic-only (pretrain stage 1) opens no real source: no real stream, no action loss or metric.
    roles = {"real": [] if data.synthetic_only else parse_weighted(data.real)}
    if data.synthetic_only and data.real:
        print0(d.rank, f"note: --synthetic-only: the real source(s) {', '.join(data.real)} are not read")
    if cfg.uses_synthetic:
        roles["synthetic"] = parse_weighted(data.synthetic)
    settings = data.read_settings()  # storage options and the shard cache of a URL --shards
    sources = {
        role: [open_source(data.shards, n, settings) for n, _ in named] for role, named in roles.items()
    }
    weights = {role: [w for _, w in named] for role, named in roles.items()}
    unique = list({s.name: s for group in sources.values() for s in group}.values())
    note = verify_shards(unique, data.verify_shards, VERIFY_AUTO_BYTES)  # every rank: all refuse alike
    if note:
        print0(d.rank, note)
    label_stride = pvit.get_config(cfg.model.preset).label_stride
    # Label spaces: only the synthetic stream's labels feed the synthetic heads (real boxes have their own).
    everything = [s for group in sources.values() for s in group]
    geometry = check_compatible(everything, label_stride, labelled=sources.get("synthetic", []))
    return sources, weights, geometry


def build_model(cfg: TrainConfig, sources: Sources, geometry: dict) -> pvit.PViT:
    """The model section, whole, with the sizes the opened sources give (label spaces, frames, classes)."""
    real = sources["real"]
    model = pvit.build_model(
        cfg.model.preset,
        # Ego4D/AVA alone: a 1-way action head, never trained
        num_classes=num_action_classes(real, cfg.model.num_classes) if classifies(real) else 1,
        num_seg_classes=_classes(geometry.get("segm_space")),
        num_box_classes=_classes(geometry.get("box_space")),
        num_box_slots=geometry["max_objects"],
        num_frames=geometry["frames"],
        downstream=tuple(t for t in pvit.task_names("downstream") if any(t in s.tasks for s in real)),
        num_real_box_classes=real_box_classes(cfg, real),
        **{**cfg.model.switches(), "tasks": synthetic_tasks(cfg, sources.get("synthetic", []))},
    )
    if cfg.model.pretrained:
        pvit.load_pretrained(model, cfg.model.pretrained)  # a name ("k400", torch hub cache) or a path
    return model


def classifies(real: list[SourceData]) -> bool:
    """Whether the CLS action loss trains: some real source carries action labels."""
    return any("action" in source.tasks for source in real)


def _classes(space: str | None) -> int:
    return load_label_space(space).num_classes if space else 1


def synthetic_tasks(cfg: TrainConfig, synthetic: list[SourceData]) -> tuple[str, ...]:
    """--tasks, or every synthetic task the synthetic sources carry (all of them when none is read).

    A task in --tasks that no synthetic source read by this run carries would get a head that never trains.
    """
    carried = tuple(t for t in SYNTHETIC_TASKS if any(t in s.tasks for s in synthetic))
    if not cfg.model.tasks:
        return carried or SYNTHETIC_TASKS
    missing = [t for t in cfg.model.tasks if t not in carried]
    if cfg.uses_synthetic and missing:
        raise ValueError(
            f"--tasks {','.join(missing)}: no --synthetic source carries it "
            f"(they carry {','.join(carried) or 'no synthetic task'})"
        )
    return cfg.model.tasks


def real_box_classes(cfg: TrainConfig, real: list[SourceData]) -> int:
    """Classes of the real stream's boxes for --real-tasks boxes (Something-Else: hand, object), else 0."""
    if "boxes" not in cfg.model.real_tasks:
        return 0
    labelled = [s for s in real if "train" in s.splits and has_task(s.splits["train"].mask, "boxes").any()]
    if not labelled:
        raise ValueError("--real-tasks boxes: no --real source has box labels in its train split")
    spaces = {s.box_space for s in labelled if s.box_space}
    if len(spaces) > 1:
        listing = ", ".join(sorted(spaces))
        raise ShardMismatch(f"--real-tasks boxes: the real sources' box spaces differ ({listing})")
    return load_label_space(spaces.pop()).num_classes if spaces else 1


def make_streams(cfg: TrainConfig, d: Dist, sources: Sources, weights: dict) -> list[StreamSpec]:
    """One stream per role that has sources, each with its share of the global batch on this rank."""
    return [_stream(cfg, d, role, group, weights[role]) for role, group in sources.items() if group]


def _stream(
    cfg: TrainConfig, d: Dist, role: str, group: list[SourceData], weights: list[float]
) -> StreamSpec:
    data = cfg.data
    global_batch = data.batch_size if role == "real" else data.synthetic_batch_size
    if global_batch % d.world:
        raise ValueError(f"{role} batch {global_batch} is not divisible by the {d.world} ranks")
    if global_batch // d.world % cfg.optim.grad_accum:
        raise ValueError(
            f"{role} batch {global_batch // d.world} per rank is not divisible into --grad-accum "
            f"{cfg.optim.grad_accum} micro-batches"
        )
    tables = [s.split("train") for s in group]
    views = [t.view_matrix() for t in tables]
    synthetic = role == "synthetic"
    if synthetic and data.synthetic_fraction < 1.0:  # Fig. 4b: the plan (and its epoch) sees only these
        views = [
            video_subset(v, t.group, data.synthetic_fraction) for v, t in zip(views, tables, strict=True)
        ]
    plan = StreamPlan(tuple(t.shard for t in tables), tuple(weights), cfg.seed, STREAM_IDS[role],
                      data.shuffle_window, views=tuple(views))  # fmt: skip
    stream = StreamSpec(role, plan, group, tables, global_batch // d.world, d.world, d.rank,
                        shuffle_labels=synthetic and data.shuffle_synthetic_labels,
                        label_tasks=cfg.model.real_tasks if role == "real" else ())  # fmt: skip
    if stream.batches_per_epoch < 1:
        raise ValueError(f"{role} stream: {plan.per_rank(d.world)} samples per rank, fewer than one batch")
    return stream


def autocast_for(cfg: TrainConfig, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the forward pass's autocast context (bf16 on GPU with --amp auto; none on CPU)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    if cfg.amp == "auto" and device.type == "cuda":
        dtype = torch.bfloat16
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def geometry_for(cfg: TrainConfig, label_stride: int, max_objects: int) -> Geometry:
    """The spatial protocol of a run (crop, scale jitter, flip, label grid) and its box slots."""
    augment = cfg.augment
    protocol = Protocol(
        augment.crop_size, augment.train_scale, augment.flip, label_stride, augment.rand_augment
    )
    return Geometry(protocol, max_objects)


def prepare(cfg: TrainConfig, d: Dist) -> Run:
    """Every part of a run, on every rank alike (the same seed gives the same initial weights)."""
    torch.manual_seed(cfg.seed)
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast (loss, fp32 heads)
        torch.backends.cudnn.allow_tf32 = True
    sources, weights, geometry = open_streams(cfg, d)
    model = build_model(cfg, sources, geometry).to(d.device)
    streams = make_streams(cfg, d, sources, weights)
    total = cfg.optim.steps or math.ceil(cfg.optim.epochs * streams[0].batches_per_epoch)
    optimizer = make_optimizer(cfg.optim, model, d.device)
    scheduler = WarmupCosine.for_run(optimizer, cfg.optim, total)
    scaler = torch.amp.GradScaler(d.device.type, enabled=cfg.amp == "fp16")
    loss_fn = pvit.MultiTaskLoss(weights=cfg_loss_weights(cfg), max_depth=cfg.optim.max_depth,
                                 action_label_smoothing=cfg.optim.label_smoothing)  # fmt: skip
    num_seg = _classes(geometry.get("segm_space"))
    spaces = {"segm": geometry["segm_space"], "boxes": geometry["box_space"]}
    ddp = DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None) \
        if d.world > 1 else None  # fmt: skip
    return Run(cfg, d, model, compiled(ddp or model, cfg), loss_fn, optimizer, scheduler, scaler, streams,
               sources, geometry_for(cfg, geometry["label_stride"], geometry["max_objects"]), num_seg, total,
               autocast_for(cfg, d.device), spaces, ddp)  # fmt: skip


def cfg_loss_weights(cfg: TrainConfig) -> dict[str, float]:
    """The lambdas the config names over the paper's (the `equal` rule is calibrated after `prepare`)."""
    return parse_loss_weights(cfg.optim.loss_weights)[1]


def compiled(module: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    """The module the loop calls: torch.compile'd with --compile (DDP-wrapped first, as torch recommends);
    the loss and the optimiser stay eager."""
    return cast(torch.nn.Module, torch.compile(module)) if cfg.compile else module

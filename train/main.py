"""Train PViT on real + synthetic shards.

    torchrun --nproc_per_node=N train/main.py --shards shards/ --real ssv2 --synthetic hypersim,surreact \
        [--recipe train/recipes/ssv2_pvit.yaml] [--mode pvit|mt|vpt|np|plain] [--resume latest]

The same trainer: the console script `pvit-train` (`torchrun --no-python pvit-train ...`) and the module
(`torchrun -m train.main ...`). The script form needs the package installed (`make`), which puts `train`
on the path.
Also callable in-process: `from train.main import main; main(["--shards", ..., "--steps", "3"])`.
Flags: `pvit-train --help`. The loop: batch = next(it) -> train_step -> maybe log / eval / save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import cast

import pvit
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.nn.parallel import DistributedDataParallel

from pipeline.labelspace import load_label_space
from pipeline.schema import SYNTHETIC_TASKS
from train import checkpoint
from train.augment import Protocol
from train.config import VERIFY_AUTO_BYTES, TrainConfig, parse_config, parse_weighted, program_name
from train.data import EvalBatches, Geometry, MixedBatches, StreamSpec, make_loader, merge, to_device
from train.distributed import Dist, all_gather_object, mean_over_ranks, setup, teardown
from train.evaluate import evaluate_action, evaluate_ava, evaluate_ego4d, evaluate_tasks
from train.logger import MetricLogger, NullLogger, print0, progress_line
from train.plan import StreamPlan, position, video_subset
from train.realaug import action_rows, batch_augment, batch_seed
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


@dataclasses.dataclass
class Run:
    """What the loop needs, built once before the first step."""

    cfg: TrainConfig
    dist: Dist
    model: pvit.PViT  # the raw model (DDP wraps it in `train_model`)
    train_model: torch.nn.Module
    loss_fn: pvit.MultiTaskLoss
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine  # timm's cosine, stepped after every optimiser step
    scaler: torch.amp.GradScaler
    streams: list[StreamSpec]
    sources: dict[str, list[SourceData]]
    geometry: Geometry
    num_seg: int
    total_steps: int
    start_step: int = 0
    guard: FiniteGuard | None = None  # set by train(); None = check every step's norm at once


# ----------------------------------------------------------------------------- setup


def open_streams(
    cfg: TrainConfig, d: Dist
) -> tuple[dict[str, list[SourceData]], dict[str, list[float]], dict]:
    """Open every source and refuse any disagreement before a model or a worker exists."""
    # --synthetic-only (pretrain stage 1) opens no real source: no real stream, no action loss or metric.
    roles = {"real": [] if cfg.synthetic_only else parse_weighted(cfg.real)}
    if cfg.synthetic_only and cfg.real:
        print0(d.rank, f"note: --synthetic-only: the real source(s) {', '.join(cfg.real)} are not read")
    if cfg.uses_synthetic:
        roles["synthetic"] = parse_weighted(cfg.synthetic)
    sources = {role: [open_source(cfg.shards, name) for name, _ in named] for role, named in roles.items()}
    weights = {role: [w for _, w in named] for role, named in roles.items()}
    unique = list({s.name: s for group in sources.values() for s in group}.values())
    note = verify_shards(unique, cfg.verify_shards, VERIFY_AUTO_BYTES)  # every rank: all refuse alike
    if note:
        print0(d.rank, note)
    label_stride = pvit.get_config(cfg.preset).label_stride
    # Label spaces: only the synthetic stream's labels feed the synthetic heads (real boxes have their own).
    everything = [s for group in sources.values() for s in group]
    geometry = check_compatible(everything, label_stride, labelled=sources.get("synthetic", []))
    return sources, weights, geometry


def build_model(
    cfg: TrainConfig, sources: dict[str, list[SourceData]], geometry: dict
) -> tuple[pvit.PViT, int]:
    """The model the config and the opened sources call for; returns it and its segmentation classes."""
    tasks = synthetic_tasks(cfg, sources.get("synthetic", []))
    num_seg = load_label_space(geometry["segm_space"]).num_classes if geometry.get("segm_space") else 1
    num_box = load_label_space(geometry["box_space"]).num_classes if geometry.get("box_space") else 1
    real = sources["real"]
    downstream = tuple(t for t in pvit.task_names("downstream") if any(t in s.tasks for s in real))
    classifies = any("action" in s.tasks for s in real)  # Ego4D/AVA alone: a 1-way action head, never trained
    model = pvit.build_model(
        cfg.preset, cfg.mode, num_classes=num_action_classes(real, cfg.num_classes) if classifies else 1,
        num_seg_classes=num_seg, num_box_classes=num_box, num_box_slots=geometry["max_objects"],
        tasks=tasks, num_frames=geometry["frames"], downstream=downstream,
        prompts_per_task=cfg.prompts_per_task, one_prompt=cfg.one_prompt, freeze_backbone=cfg.freeze_backbone,
        real_tasks=cfg.real_tasks, num_real_box_classes=real_box_classes(cfg, real),
    )  # fmt: skip
    if cfg.pretrained:
        pvit.load_pretrained(model, cfg.pretrained)  # a name ("k400", torch hub cache) or a path
    return model, num_seg


def synthetic_tasks(cfg: TrainConfig, synthetic: list[SourceData]) -> tuple[str, ...]:
    """--tasks, or every synthetic task the synthetic sources carry (all of them when none is read).

    A task in --tasks that no synthetic source read by this run carries would get a head that never trains.
    """
    carried = tuple(t for t in SYNTHETIC_TASKS if any(t in s.tasks for s in synthetic))
    if not cfg.tasks:
        return carried or SYNTHETIC_TASKS
    missing = [t for t in cfg.tasks if t not in carried]
    if cfg.uses_synthetic and missing:
        raise ValueError(
            f"--tasks {','.join(missing)}: no --synthetic source carries it "
            f"(they carry {','.join(carried) or 'no synthetic task'})"
        )
    return cfg.tasks


def real_box_classes(cfg: TrainConfig, real: list[SourceData]) -> int:
    """Classes of the real stream's boxes for --real-tasks boxes (Something-Else: hand, object), else 0."""
    if "boxes" not in cfg.real_tasks:
        return 0
    labelled = [s for s in real if "train" in s.splits and has_task(s.splits["train"].mask, "boxes").any()]
    if not labelled:
        raise ValueError("--real-tasks boxes: no --real source has box labels in its train split")
    spaces = {s.box_space for s in labelled if s.box_space}
    if len(spaces) > 1:
        listing = ", ".join(sorted(spaces))
        raise ShardMismatch(f"--real-tasks boxes: the real sources' box spaces differ ({listing})")
    return load_label_space(spaces.pop()).num_classes if spaces else 1


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, Adam (the paper's SSv2/Ego4D recipes: L2 weight decay) or SGD with momentum (AVA, SlowFast).

    timm's `create_optimizer_v2` builds the torch optimiser and its weight-decay groups
    (`param_groups_weight_decay`): no decay for 1-d tensors (biases, norms) and for the names the model's
    `no_weight_decay()` lists (prompts, CLS, relative positions); frozen parameters are left out.
    """
    # timm passes extra keywords to the torch class: fused=True is one kernel for all parameters on CUDA.
    fused = True if device.type == "cuda" else None
    if cfg.optimizer == "sgd":
        # timm's "sgd" is Nesterov momentum; "momentum" is classical, i.e. plain SGD at momentum 0 (torch
        # refuses Nesterov without momentum).
        name = "sgd" if cfg.momentum > 0 else "momentum"
        return create_optimizer_v2(
            model, name, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, fused=fused
        )
    return create_optimizer_v2(
        model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas, fused=fused
    )


class WarmupCosine:
    """timm's `CosineLRScheduler` stepped once per optimiser step (`t_in_epochs=False`).

    Linear warmup from 0: step i (0-based) trains at lr x i / warmup; then a cosine from lr at step `warmup`
    down towards `lr_min`, reached at step `total`. timm's scheduler keeps no step count (`step_update`
    takes one), so this class keeps it: the count is what a checkpoint stores, and loading it sets the
    optimiser's lr to exactly what an uninterrupted run would use next.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, warmup: int, lr_min: float) -> None:
        self.timm = CosineLRScheduler(
            optimizer,
            t_initial=max(1, total - warmup),  # the cosine's length, after the warmup (warmup_prefix)
            lr_min=lr_min,
            warmup_t=warmup,
            warmup_lr_init=0.0,
            warmup_prefix=True,
            t_in_epochs=False,
        )
        self.optimizer = optimizer
        self.steps = 0  # optimiser steps taken

    def step(self) -> None:
        """Call after each optimiser step: sets the lr of the next one."""
        self.steps += 1
        self.timm.step_update(self.steps)

    def get_last_lr(self) -> list[float]:
        """The lr the next step uses, per parameter group (torch's LRScheduler name)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"steps": self.steps, "timm": self.timm.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.timm.load_state_dict(state["timm"])
        self.steps = int(state["steps"])
        self.timm.step_update(self.steps)


def make_streams(cfg: TrainConfig, d: Dist, sources: dict, weights: dict) -> list[StreamSpec]:
    streams = []
    for role, group in sources.items():
        if not group:  # the real role under --synthetic-only
            continue
        global_batch = cfg.batch_size if role == "real" else cfg.synthetic_batch_size
        if global_batch % d.world:
            raise ValueError(f"{role} batch {global_batch} is not divisible by the {d.world} ranks")
        tables = [s.split("train") for s in group]
        views = [t.view_matrix() for t in tables]
        synthetic = role == "synthetic"
        if synthetic and cfg.synthetic_fraction < 1.0:  # Fig. 4b: the plan (and its epoch) sees only these
            views = [
                video_subset(v, t.group, cfg.synthetic_fraction) for v, t in zip(views, tables, strict=True)
            ]
        plan = StreamPlan(
            tuple(t.shard for t in tables),
            tuple(weights[role]),
            cfg.seed,
            STREAM_IDS[role],
            cfg.shuffle_window,
            views=tuple(views),
        )
        stream = StreamSpec(role, plan, group, tables, global_batch // d.world, d.world, d.rank,
                            shuffle_labels=synthetic and cfg.shuffle_synthetic_labels,
                            label_tasks=cfg.real_tasks if role == "real" else ())  # fmt: skip
        if stream.batches_per_epoch < 1:
            raise ValueError(
                f"{role} stream: {plan.per_rank(d.world)} samples per rank, fewer than one batch"
            )
        streams.append(stream)
    return streams


def autocast_for(cfg: TrainConfig, device: torch.device):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    if cfg.amp == "auto" and device.type == "cuda":
        dtype = torch.bfloat16
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def prepare(cfg: TrainConfig, d: Dist) -> Run:
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast (loss, fp32 heads)
        torch.backends.cudnn.allow_tf32 = True
    sources, weights, geometry = open_streams(cfg, d)
    model, num_seg = build_model(cfg, sources, geometry)
    if cfg.init_from:  # after --pretrained, so the stage-1 backbone is what this run starts from
        count = init_backbone(model, cfg.init_from)
        print0(d.rank, f"backbone initialised from {cfg.init_from} ({count} tensors); "
                       "the action head, task heads and prompts start fresh")  # fmt: skip
    model.to(d.device)
    streams = make_streams(cfg, d, sources, weights)
    total = cfg.steps or math.ceil(cfg.epochs * streams[0].batches_per_epoch)
    optimizer = make_optimizer(cfg, model, d.device)
    scheduler = WarmupCosine(optimizer, total, cfg.warmup_steps, cfg.lr * cfg.min_lr_ratio)
    scaler = torch.amp.GradScaler(d.device.type, enabled=cfg.amp == "fp16")
    train_model: torch.nn.Module = model
    if d.world > 1:
        train_model = DistributedDataParallel(
            model, device_ids=[d.local_rank] if d.device.type == "cuda" else None
        )
    if cfg.compile:
        # The model only (DDP-wrapped, as torch recommends); the loss and the optimiser stay eager.
        train_model = cast(torch.nn.Module, torch.compile(train_model))
    protocol = Protocol(cfg.crop_size, cfg.train_scale, cfg.flip, geometry["label_stride"], cfg.rand_augment)
    geo = Geometry(protocol, geometry["max_objects"])
    loss_fn = pvit.MultiTaskLoss(
        weights=cfg.loss_weights, max_depth=cfg.max_depth, action_label_smoothing=cfg.label_smoothing
    )
    return Run(cfg, d, model, train_model, loss_fn, optimizer, scheduler, scaler, streams, sources, geo,
               num_seg, total)  # fmt: skip


def is_backbone_key(name: str) -> bool:
    """The encoder's weights in a PViT state dict: `backbone.*` less the prompts and the action head."""
    return name.startswith("backbone.") and not name.startswith(("backbone.prompt_tokens", "backbone.head."))


def init_backbone(model: pvit.PViT, path: str) -> int:
    """Load only the backbone weights of a checkpoint this trainer wrote (pretrain-then-finetune stage 2).

    Unlike --resume nothing else is restored (optimiser, schedule, step, data position, RNG). Returns the
    number of tensors loaded; a file that is not such a checkpoint or a backbone of another shape is one line.
    """
    try:
        # weights_only=False: a trainer checkpoint holds numpy RNG states (as --resume reads it).
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch.load fails in many ways on a non-checkpoint
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--init-from {path}: not a readable checkpoint ({first[:200]})") from None
    weights = state.get("model") if isinstance(state, dict) else None
    theirs = {k: v for k, v in weights.items() if is_backbone_key(k)} if isinstance(weights, dict) else {}
    if not theirs:
        raise ValueError(f"--init-from {path}: no backbone weights in it (not a checkpoint of this trainer)")
    ours = {k: v for k, v in model.state_dict().items() if is_backbone_key(k)}
    for key in sorted(ours.keys() | theirs.keys()):
        have, want = (tuple(t[key].shape) if key in t else "absent" for t in (theirs, ours))
        if have != want:
            raise ValueError(
                f"--init-from {path}: its backbone differs from this model's at {key} ({have} vs {want}); "
                "use the --preset and clip size of the run that wrote it"
            )
    model.load_state_dict(theirs, strict=False)
    return len(theirs)


# ----------------------------------------------------------------------------- checkpoints


def data_position(run: Run, steps_done: int) -> dict:
    return {
        s.role: dataclasses.asdict(position(steps_done, s.batches_per_epoch, s.batch_size))
        for s in run.streams
    }


def save_checkpoint(run: Run, steps_done: int) -> None:
    if run.guard:
        run.guard.check()
    rngs = all_gather_object(checkpoint.rng_state())  # every rank's RNG, so each resumes its own
    if not run.dist.main:
        return
    state = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "step": steps_done,
        "rng": rngs,
        "data": data_position(run, steps_done),
        "world": run.dist.world,
        "seed": run.cfg.seed,
    }
    meta = {
        "config": dataclasses.asdict(run.cfg),
        "data": state["data"],
        "world": run.dist.world,
        "sources": {s.name: s.config_hash for group in run.sources.values() for s in group},
    }
    path = checkpoint.save(run.cfg.out, steps_done, state, meta, run.cfg.keep_checkpoints)
    print0(0, f"saved {path}")


def maybe_resume(run: Run) -> None:
    path = checkpoint.resolve(run.cfg.resume, run.cfg.out)
    if path is None:
        if run.cfg.resume:
            print0(
                run.dist.rank,
                f"--resume {run.cfg.resume}: no checkpoint in {run.cfg.out} yet, starting fresh",
            )
        return
    state = checkpoint.load(path)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.start_step = int(state["step"])
    if state["world"] != run.dist.world or state["seed"] != run.cfg.seed:
        note = f"note: checkpoint was written with world {state['world']} seed {state['seed']}; "
        print0(run.dist.rank, note + "the data order from here differs from an uninterrupted run")
    rngs = state["rng"]
    checkpoint.set_rng_state(rngs[run.dist.rank] if run.dist.rank < len(rngs) else rngs[0])
    print0(run.dist.rank, f"resumed from {path} at step {run.start_step} (data position {state['data']})")


# ----------------------------------------------------------------------------- the loop


def train_step(run: Run, batch: dict, autocast) -> dict[str, torch.Tensor]:
    """One optimiser step on the real + synthetic batch; returns detached losses and the grad norm."""
    parts = [batch[s.role] for s in run.streams]
    video, targets = to_device(merge(parts), run.dist.device)
    augment = batch_augment(run.cfg, run.model.cfg.num_classes)
    if augment.enabled:  # MViTv2's erasing and mixup/cutmix, on the real action clips only (off by default)
        rows = action_rows(parts, [s.role for s in run.streams])
        seed = batch_seed(run.cfg.seed, int(batch["step"]), run.dist.rank)  # any worker count: same batch
        video, targets = augment(video, targets, rows, seed)
    with autocast():
        preds = run.train_model(video, boxes=targets.get("ava_boxes"))
    total, per_task = run.loss_fn({k: v.float() for k, v in preds.items()}, targets)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(total).backward()
    run.scaler.unscale_(run.optimizer)
    params = [p for p in run.model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(
        params, run.cfg.clip_grad if run.cfg.clip_grad > 0 else float("inf")
    )
    # The norm is of all-reduced gradients, so every rank takes the same decision (no DDP hang).
    if not run.scaler.is_enabled():
        (run.guard or FiniteGuard(norm.device, eager=True)).update(norm, total, run.scheduler.steps + 1)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return {
        "loss": total.detach(),
        **{k: v.detach() for k, v in per_task.items()},
        "grad_norm": norm.detach(),
    }


class FiniteGuard:
    """Raises on a non-finite gradient norm without a host sync per step.

    ``update`` folds the step's norm into device tensors (the first bad step and its loss); ``check`` reads
    them, which syncs, so on CUDA the loop calls it only where it syncs anyway (progress lines) and before a
    checkpoint or an evaluation, which thus never see weights from a non-finite step. ``eager`` (on CPU,
    where nothing runs ahead) checks every step at once.
    """

    def __init__(self, device: torch.device, eager: bool = False) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), device=device)
        self.eager = eager

    def update(self, norm: torch.Tensor, loss: torch.Tensor, step: int) -> None:
        new = ~torch.isfinite(norm) & (self.first_bad < 0)
        self.first_bad = torch.where(new, step, self.first_bad)
        self.bad_loss = torch.where(new, loss.detach().float(), self.bad_loss)
        if self.eager:
            self.check()

    def check(self) -> None:
        step = int(self.first_bad)
        if step >= 0:
            raise FloatingPointError(
                f"non-finite gradient norm at step {step} (loss {float(self.bad_loss):.4g}); "
                "lower --lr or check data"
            )


def evaluate(run: Run, autocast, steps_done: int, logger) -> dict[str, float]:
    if run.guard:
        run.guard.check()
    cfg, d, results = run.cfg, run.dist, {}
    for role, group in run.sources.items():
        for source in group:
            if "val" not in source.splits:
                continue
            views = cfg.test_crops if role == "real" else 1
            detection = role == "real" and "ava" in source.tasks
            batches = EvalBatches(
                source, "val", role, d.rank, d.world, cfg.eval_batch_size, run.geometry, views, detection
            )
            loader = make_loader(batches, min(cfg.workers, len(batches)))
            files = Path(cfg.out) / "eval" / f"step_{steps_done:08d}" / source.name
            if role == "synthetic":
                metrics = evaluate_tasks(run.model, loader, d.device, autocast, run.num_seg)
            elif detection:
                metrics = evaluate_ava(run.model, loader, d.device, autocast, files, cfg.ava_annotations)
            elif "oscc" in source.tasks or "pnr" in source.tasks:
                metrics = evaluate_ego4d(run.model, loader, d.device, autocast, files)
            else:
                metrics = evaluate_action(run.model, loader, d.device, autocast)
            results.update({f"{role}/{source.name}/{k}": v for k, v in metrics.items()})
    if d.main:  # the task heads' predictions on real val clips (the paper's Fig. 3/5)
        from train.visualize import figure_at_eval

        figure = figure_at_eval(run, autocast, steps_done, logger)
        if figure is not None:
            print0(d.rank, f"predictions: {figure}")
    run.model.train()
    logger.log(steps_done, "eval", results)
    shown = " | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in results.items())
    print0(d.rank, f"eval step {steps_done:06d} | {shown}")
    return results


class Meter:
    """Running sums between progress lines; `wait` is time spent blocked on the loader."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps, self.wait, self.started = 0, 0.0, time.perf_counter()

    def add(self, metrics: dict[str, torch.Tensor], wait: float) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.float()
        self.steps, self.wait = self.steps + 1, self.wait + wait


def log_progress(run: Run, meter: Meter, steps_done: int, logger, totals: dict) -> None:
    names = sorted(meter.sums)
    means = mean_over_ranks(torch.stack([meter.sums[k] for k in names]) / meter.steps).tolist()
    values = dict(zip(names, means, strict=True))
    elapsed = time.perf_counter() - meter.started
    clips = meter.steps * run.dist.world * sum(s.batch_size for s in run.streams)  # global clips per step
    lr = float(run.scheduler.get_last_lr()[0])
    share = meter.wait / max(elapsed, 1e-9)
    totals["wait"] += meter.wait
    totals["time"] += elapsed
    values.update({"lr": lr, "clips_per_s": clips / elapsed, "data_wait_share": share})
    logger.log(steps_done, "train", values)
    losses = {"loss": values["loss"], **{k: values[k] for k in pvit.TASKS if k in values}}
    print0(run.dist.rank, progress_line(steps_done, run.total_steps, losses, lr, clips / elapsed, share,
                                        1000 * elapsed / meter.steps))  # fmt: skip
    meter.reset()


def train(run: Run) -> dict:
    cfg, d = run.cfg, run.dist
    autocast = autocast_for(cfg, d.device)
    logger = MetricLogger(cfg.out, cfg.tensorboard) if d.main else NullLogger()
    dataset = MixedBatches(run.streams, run.start_step, run.total_steps, run.geometry, cfg.seed)
    loader = iter(make_loader(dataset, cfg.workers))
    meter, totals, results = Meter(), {"wait": 0.0, "time": 0.0}, {}
    run.guard = FiniteGuard(d.device, eager=d.device.type == "cpu")
    run.model.train()
    print0(d.rank, f"training {cfg.mode}/{cfg.preset} for {run.total_steps} steps from step {run.start_step} "
                   f"on {d.world} rank(s), {d.device.type}; streams "
                   + ", ".join(f"{s.role} {s.batch_size}/rank x {s.batches_per_epoch} batches/epoch"
                               for s in run.streams))  # fmt: skip
    for step in range(run.start_step, run.total_steps):
        waited = time.perf_counter()
        batch = next(loader)
        waited = time.perf_counter() - waited
        assert batch["step"] == step, f"loader out of order: got step {batch['step']} at {step}"
        meter.add(train_step(run, batch, autocast), waited)
        done = step + 1
        if done % cfg.log_every == 0 or done == run.total_steps:
            run.guard.check()
            log_progress(run, meter, done, logger, totals)
        if cfg.stop_after and done >= cfg.stop_after and done < run.total_steps:
            print0(d.rank, f"stopping after step {done} (--stop-after), as if interrupted")
            logger.close()
            return {"steps": done, "stopped": True}
        if cfg.eval_every and done % cfg.eval_every == 0 and done < run.total_steps:
            results = evaluate(run, autocast, done, logger)
        if (cfg.save_every and done % cfg.save_every == 0) or done == run.total_steps:
            save_checkpoint(run, done)
    if run.start_step < run.total_steps or not results:
        results = evaluate(run, autocast, run.total_steps, logger)
    share = totals["wait"] / max(totals["time"], 1e-9)
    logger.log(run.total_steps, "summary", {"data_wait_share": share, "train_seconds": totals["time"]})
    logger.close()
    return {
        "steps": run.total_steps,
        "eval": results,
        "data_wait_share": share,
        "train_seconds": totals["time"],
    }


def main(argv: list[str] | None = None) -> dict:
    """Parse flags, build everything, train, evaluate; returns the final metrics (for tests and scripts)."""
    cfg = parse_config(argv)
    check_setup(cfg)
    d = setup(cfg.device)
    try:
        if d.main:
            checkpoint.remove_temporaries(cfg.out)  # a write killed mid-way leaves one behind
        run = prepare(cfg, d)
        maybe_resume(run)
        started = time.perf_counter()
        out = train(run)
        out["wall_seconds"] = time.perf_counter() - started
        out["num_classes"] = run.model.cfg.num_classes
        report_final(run, out)
        return out
    finally:
        teardown()


def check_setup(cfg: TrainConfig) -> None:
    """Refuse, before any process group or model, a device that is not there and an --out that is a file."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu (or auto)")
    if cfg.init_from and not Path(cfg.init_from).is_file():
        raise ValueError(f"--init-from {cfg.init_from}: no such checkpoint file")
    for path in [Path(cfg.out), *Path(cfg.out).parents]:
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"--out {cfg.out}: {path} is a file, not a directory")
            break


FINAL_METRICS = {
    "oscc_accuracy": "OSCC accuracy (%)",
    "pnr_error_s": "PNR error (s)",
    "frame_map": "frame-mAP@0.5 (%)",
}


def report_final(run: Run, out: dict) -> None:
    if out.get("stopped"):
        return
    chance = 100.0 / run.model.cfg.num_classes
    for key, value in out["eval"].items():
        if key.endswith("/top1"):
            print0(run.dist.rank, f"final val top-1 {key.split('/')[1]}: {value:.1f}% (chance {chance:.1f}%)")
        for metric, label in FINAL_METRICS.items():
            if key.endswith(f"/{metric}"):
                print0(run.dist.rank, f"final val {label} {key.split('/')[1]}: {value:.3f}")
    print0(run.dist.rank, f"data-wait share {100 * out['data_wait_share']:.1f}% of training time; "
                          f"training {out['train_seconds']:.0f} s")  # fmt: skip


def cli() -> None:
    """Script entry: a refusal or a bad flag value is one line on stderr and exit code 2, not a traceback."""
    try:
        main()
    except (ShardMismatch, ValueError, FileNotFoundError) as error:
        print(f"{program_name()}: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


def one_line(error: BaseException) -> str:
    """The error's own first line; for one re-raised from a DataLoader worker, the worker's message."""
    text = str(error).strip()
    if "Original Traceback" in text:  # torch's worker re-raise: the real message is the last line
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(error).__name__


if __name__ == "__main__":
    cli()

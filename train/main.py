"""Train PViT on real + synthetic shards.

    torchrun --nproc_per_node=N train/main.py --shards shards/ --real ssv2 --synthetic hypersim,surreact \
        [--recipe train/recipes/ssv2_pvit.yaml] [--mode pvit|mt|vpt|np|plain] [--resume latest]

The same trainer: the console script `pvit-train` (`torchrun --no-python pvit-train ...`) and the module
(`torchrun -m train.main ...`). The script form needs the package installed (`make`), which puts `train`
on the path. Also callable in-process: `from train.main import main; main(["--shards", ..., "--steps", "3"])`.
Flags: `pvit-train --help`.

The run reads top to bottom: `main` parses the config, `train.assemble.prepare` builds the run's parts,
`train.checkpoint` restores one if asked, then `train` loops (batch -> `train_step` -> maybe log, evaluate,
save) and `train.evaluate` scores the result.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import pvit
import torch

from pipeline.fileio import first_line
from train import checkpoint
from train.assemble import Run, prepare
from train.config import TrainConfig, parse_config, program_name
from train.data import MixedBatches, make_loader, merge, to_device
from train.distributed import setup, teardown
from train.evaluate import evaluate
from train.logger import Meter, MetricLogger, NullLogger, Progress, print0
from train.loss_weights import calibrate, trained_weights
from train.optim import FiniteGuard
from train.realaug import BatchAugment, action_rows, batch_seed
from train.scorers import ava_annotation_files
from train.sources import ShardMismatch


def train_step(run: Run, batch: dict, augment: BatchAugment) -> dict[str, torch.Tensor]:
    """One optimiser step on the real + synthetic batch, in `--grad-accum` micro-batches; returns detached
    losses (of the whole batch) and the grad norm."""
    parts, accum = [batch[s.role] for s in run.streams], run.cfg.optim.grad_accum
    # Under accumulation every micro-batch divides by the whole batch's counts, so they sum to its loss.
    counts = run.loss_fn.counts(to_device(merge(parts), run.dist.device)[1]) if accum > 1 else None
    run.optimizer.zero_grad(set_to_none=True)
    sums: dict[str, torch.Tensor] = {}
    for micro, micro_parts in enumerate(split_parts(parts, accum)):
        last = micro == accum - 1
        sync = contextlib.nullcontext() if last or run.ddp is None else run.ddp.no_sync()
        with sync:  # DDP all-reduces the gradients once, after the last micro-batch
            losses = micro_step(run, micro_parts, augment, counts, (int(batch["step"]), micro))
        sums = {k: sums.get(k, 0.0) + v for k, v in losses.items()}
    run.scaler.unscale_(run.optimizer)
    params = [p for p in run.model.parameters() if p.grad is not None]
    clip = run.cfg.optim.clip_grad
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
    # The norm is of all-reduced gradients, so every rank takes the same decision (no DDP hang).
    if not run.scaler.is_enabled():
        (run.guard or FiniteGuard(norm.device, eager=True)).update(
            norm, sums["loss"], run.scheduler.steps + 1
        )
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return {**sums, "grad_norm": norm.detach()}


def micro_step(
    run: Run, parts: list[dict], augment: BatchAugment, counts: dict | None, at: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """Forward and backward of one micro-batch (`at` = step, micro-batch); its detached losses."""
    video, targets = to_device(merge(parts), run.dist.device)
    if augment.enabled:  # MViTv2's erasing and mixup/cutmix, on the real action clips only (off by default)
        rows = action_rows(parts, [s.role for s in run.streams])
        seed = batch_seed(run.cfg.seed, at[0], run.dist.rank, at[1])  # any worker count: same batch
        video, targets = augment(video, targets, rows, seed)
    with run.autocast():
        preds = run.train_model(video, boxes=targets.get("ava_boxes"))
    total, per_task = run.loss_fn({k: v.float() for k, v in preds.items()}, targets, counts)
    run.scaler.scale(total).backward()
    return {"loss": total.detach(), **{k: v.detach() for k, v in per_task.items()}}


def split_parts(parts: list[dict], count: int) -> list[list[dict]]:
    """Each stream's batch cut into `count` equal micro-batches along the batch dimension; micro-batch i
    holds the i-th slice of every stream (the per-rank batches divide evenly, `train.assemble` checks)."""
    if count == 1:
        return [parts]
    sliced = [{k: v.tensor_split(count) for k, v in part.items()} for part in parts]
    return [[{k: v[i] for k, v in part.items()} for part in sliced] for i in range(count)]


def batch_augment(run: Run) -> BatchAugment:
    """The real-stream batch augmentation the config asks for (all off by default)."""
    aug = run.cfg.augment
    return BatchAugment(run.model.cfg.num_classes, aug.mixup, aug.cutmix, aug.mixup_prob,
                        aug.mixup_switch_prob, run.cfg.optim.label_smoothing, aug.random_erasing)  # fmt: skip


def train(run: Run, argv: list[str]) -> dict:
    """Steps `start_step..total_steps`, logging, evaluating and saving on the way; the final metrics."""
    cfg, d = run.cfg, run.dist
    logger = MetricLogger(cfg.out, cfg.log.tensorboard) if d.main else NullLogger()
    dataset = MixedBatches(run.streams, run.start_step, run.total_steps, run.geometry, cfg.seed)
    loader, augment, meter, results = (
        iter(make_loader(dataset, cfg.data.workers)),
        batch_augment(run),
        Meter(),
        {},
    )
    run.guard = FiniteGuard(d.device, eager=d.device.type == "cpu")
    run.model.train()
    print0(d.rank, f"training {cfg.model.mode}/{cfg.model.preset} for {run.total_steps} steps from step "
                   f"{run.start_step} on {d.world} rank(s), {d.device.type}; streams "
                   + ", ".join(f"{s.role} {s.batch_size}/rank x {s.batches_per_epoch} batches/epoch"
                               for s in run.streams))  # fmt: skip
    for step in range(run.start_step, run.total_steps):
        waited = time.perf_counter()
        batch = next(loader)
        waited = time.perf_counter() - waited
        assert batch["step"] == step, f"loader out of order: got step {batch['step']} at {step}"
        meter.add(train_step(run, batch, augment), waited)
        done = step + 1
        if done % cfg.log.log_every == 0 or done == run.total_steps:
            run.guard.check()
            meter.report(progress(run, done), logger, d.rank, pvit.TASKS)
        if cfg.stop_after and done >= cfg.stop_after and done < run.total_steps:
            print0(d.rank, f"stopping after step {done} (--stop-after), as if interrupted")
            logger.close()
            return {"steps": done, "stopped": True}
        if cfg.eval.eval_every and done % cfg.eval.eval_every == 0 and done < run.total_steps:
            results = evaluate(run, done, logger)
        if (cfg.log.save_every and done % cfg.log.save_every == 0) or done == run.total_steps:
            checkpoint.save_run(run, done, argv)
    if run.start_step < run.total_steps or not results:
        results = evaluate(run, run.total_steps, logger)
    summary = {"data_wait_share": meter.wait_share, "train_seconds": meter.totals["time"]}
    logger.log(run.total_steps, "summary", summary)
    logger.close()
    return {"steps": run.total_steps, "eval": results, **summary}


def progress(run: Run, done: int) -> Progress:
    clips = run.dist.world * sum(s.batch_size for s in run.streams)  # global clips per step
    return Progress(done, run.total_steps, float(run.scheduler.get_last_lr()[0]), clips)


def main(argv: list[str] | None = None) -> dict:
    """Parse flags, build everything, train, evaluate; returns the final metrics (for tests and scripts)."""
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(args)
    check_setup(cfg)
    d = setup(cfg.device)
    try:
        if d.main:
            checkpoint.remove_leftovers(
                cfg.out
            )  # a write killed mid-way leaves a temporary or a lone sidecar
        run = prepare(cfg, d)
        if cfg.model.init_from:  # after --pretrained, so the stage-1 backbone is what this run starts from
            count = checkpoint.init_backbone(run.model, cfg.model.init_from)
            print0(d.rank, f"backbone initialised from {cfg.model.init_from} ({count} tensors); "
                           "the action head, task heads and prompts start fresh")  # fmt: skip
        checkpoint.resume_run(run)
        if cfg.optim.loss_weights == "equal" and run.start_step == 0:  # a resumed run keeps its lambdas
            weights = calibrate(run, cfg.optim.calibration_batches)
            shown = ", ".join(f"{name} {value:.4g}" for name, value in weights.items())
            print0(d.rank, f"loss weights (equal scales, from the first {cfg.optim.calibration_batches} "
                           f"batches): {shown}")  # fmt: skip
        started = time.perf_counter()
        out = train(run, args)
        out["wall_seconds"] = time.perf_counter() - started
        out["num_classes"] = run.model.cfg.num_classes
        out["loss_weights"] = trained_weights(run)
        report_final(run, out)
        return out
    finally:
        teardown()


def check_setup(cfg: TrainConfig) -> None:
    """Refuse, before any process group or model, a device that is not there, a missing file, an --out that
    is a file, and AVA annotations that cannot be scored."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu (or auto)")
    if cfg.model.init_from and not Path(cfg.model.init_from).is_file():
        raise ValueError(f"--init-from {cfg.model.init_from}: no such checkpoint file")
    if cfg.eval.ava_annotations:
        ava_annotation_files(Path(cfg.eval.ava_annotations))  # the files the end of the run will need
    for path in [Path(cfg.out), *Path(cfg.out).parents]:
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"--out {cfg.out}: {path} is a file, not a directory")
            break


FINAL_METRICS = {
    "oscc_accuracy": "OSCC accuracy (%)",
    "pnr_error_s": "PNR error (s)",
    "frame_map": "frame-mAP@0.5 (%)",
    "frame_map_top50": "frame-mAP@0.5, top 50 per keyframe (%)",
}


def report_final(run: Run, out: dict) -> None:
    if out.get("stopped"):
        return
    chance = 100.0 / run.model.cfg.num_classes
    for key, value in out["eval"].items():
        source, metric = key.split("/")[1], key.rpartition("/")[2]
        if metric == "top1":
            print0(run.dist.rank, f"final val top-1 {source}: {value:.1f}% (chance {chance:.1f}%)")
        if metric in FINAL_METRICS:
            print0(run.dist.rank, f"final val {FINAL_METRICS[metric]} {source}: {value:.3f}")
    print0(run.dist.rank, f"data-wait share {100 * out['data_wait_share']:.1f}% of training time; "
                          f"training {out['train_seconds']:.0f} s")  # fmt: skip


def cli() -> None:
    """Script entry: a refusal or a bad flag value is one line on stderr and exit code 2, not a traceback."""
    try:
        main()
    except (ShardMismatch, ValueError, FileNotFoundError) as error:
        print(f"{program_name()}: error: {first_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    cli()

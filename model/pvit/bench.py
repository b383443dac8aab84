"""Benchmark: fwd+bwd time of ``pvit`` against ``plain`` in one run, throughput, MFU, parameter counts.

    python -m pvit.bench                            # CPU: 8 x 112^2 clips, batch 1, fp32
    python -m pvit.bench --device cuda [--dtype bf16] [--compile] [--peak-tflops 989]   # 16 x 224^2, batch 16

Timings interleave the models repeat by repeat (so machine load hits both alike) and report medians.
``plain`` runs twice, with the fused (SDPA) and the explicit attention, to give their ratio. FLOPs are the
model's (``torch.utils.flop_counter.FlopCounterMode`` on one fwd+bwd through the explicit path, so every
matmul is counted and the fused kernels' internals are not); MFU = FLOPs / time / ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.video import mvit_v2_s

from .config import get_config
from .losses import MultiTaskLoss
from .model import PViT, build_model
from .tasks import TASKS


def _targets(batch: int, frames: int, label: int, num_classes: int, num_seg: int, slots: int) -> dict:
    g = torch.Generator().manual_seed(0)
    # (corner, axis) pairs sorted over corners: corner 0 is the min -> x1, y1, x2, y2
    boxes = torch.rand(batch, frames, slots, 2, 2, generator=g).sort(dim=3).values
    return {
        "action": torch.randint(0, num_classes, (batch,), generator=g),
        "depth": torch.rand(batch, frames, label, label, generator=g) * 10,
        "normal": torch.nn.functional.normalize(
            torch.randn(batch, frames, label, label, 3, generator=g), dim=-1
        ),
        "segm": torch.randint(0, num_seg, (batch, frames, label, label), generator=g),
        "pose3d": torch.randn(batch, frames, 25, 3, generator=g),
        "boxes": boxes.reshape(batch, frames, slots, 4),
        "boxes_cls": torch.randint(0, 3, (batch, frames, slots), generator=g),
        "mask": torch.ones(batch, len(TASKS), dtype=torch.bool),
    }


CASES = ("plain", "explicit", "pvit", "full")  # --cases: plain (fused), plain explicit, pvit backbone, full


@dataclass
class Case:
    """One timed configuration: a model and whether only its backbone (+ action loss) runs."""

    name: str
    model: PViT
    backbone_only: bool
    forward: Callable[[torch.Tensor], object]  # the (maybe compiled) module that gets the video


def _predict(case: Case, video: torch.Tensor) -> dict:
    # backbone_only: encoder + action head and CE, the part prompts change (task heads skipped).
    out = case.forward(video)
    return {"action": out} if case.backbone_only else out  # type: ignore[return-value]


def _step(case: Case, video: torch.Tensor, targets: dict, loss_fn: MultiTaskLoss, autocast) -> float:
    """One fwd+bwd in seconds; on CUDA the clock stops after the device has finished."""
    sync = torch.cuda.synchronize if video.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    with autocast():
        preds = _predict(case, video)
    loss_fn({k: v.float() for k, v in preds.items()}, targets)[0].backward()
    sync()
    elapsed = time.perf_counter() - start
    case.model.zero_grad(set_to_none=True)
    return elapsed


def _interleaved(fns: dict[str, Callable[[], float]], repeats: int, warmup: int = 1) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(warmup):  # not timed: first-call allocations, autotuning, compilation
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: statistics.median(ts) for name, ts in times.items()}


def conv_backward_flop(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: object,
    _stride: object,
    _padding: object,
    _dilation: object,
    transposed: bool,
    _output_padding: object,
    _groups: int,
    output_mask: list[bool],
    out_shape: object = None,
    **_: object,
) -> int:
    """FLOPs of ``aten.convolution_backward``: each requested gradient costs what the forward did.

    torch's own formula ignores ``groups`` and counts MViT's depthwise pooling convs' backward ``channels``
    times too high (about +27% on a whole MViTv2-S fwd+bwd step), which would inflate the MFU.
    """
    macs_per_output = math.prod(w_shape[1:])  # (C_in / groups) x kernel for a conv, (C_out / groups) x kernel
    forward = (
        2 * macs_per_output * math.prod(x_shape if transposed else grad_out_shape)
    )  # transposed: per input
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def step_flops(case: Case, video: torch.Tensor, targets: dict, loss_fn: MultiTaskLoss) -> int:
    """Model FLOPs of one fwd+bwd of ``case`` on ``video``, counted through the explicit attention path.

    Counted on the uncompiled module in fp32 with dropout etc. as in training; FLOPs do not depend on dtype.
    """
    backbone = case.model.backbone
    saved, backbone.attention = backbone.attention, "explicit"
    plain_case = Case(
        case.name, case.model, case.backbone_only, case.model.backbone if case.backbone_only else case.model
    )
    try:
        mapping = {torch.ops.aten.convolution_backward: conv_backward_flop}
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            _step(plain_case, video, targets, loss_fn, contextlib.nullcontext)
    finally:
        backbone.attention = saved
    return counter.get_total_flops()


def _count(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def param_table(preset: str, num_classes: int, num_seg: int) -> list[tuple[str, int, int]]:
    """(name, total, trainable) rows for torchvision's mvit_v2_s and each mode."""
    rows = [("torchvision mvit_v2_s (K400 head)", _count(mvit_v2_s()), _count(mvit_v2_s()))]
    for mode in ("plain", "pvit", "mt", "vpt"):
        model = build_model(preset, mode, num_classes=num_classes, num_seg_classes=num_seg, num_box_classes=3)
        rows.append((f"{preset} {mode} ({num_classes} classes)", _count(model), _count(model, True)))
        prompts = model.backbone.prompt_tokens
        if mode == "pvit" and prompts is not None:
            rows.append(("  of which prompt tokens", prompts.numel(), 0))
            for task, head in model.heads.items():
                rows.append((f"  of which {task} head", _count(head), 0))
    return rows


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pvit.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mvit_v2_s")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16"), default=None, help="default: bf16 on cuda, else fp32"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="default: 16 on cuda (halved until it fits), 1"
    )
    parser.add_argument("--frames", type=int, default=None, help="default: 16 on cuda, 8 on cpu")
    parser.add_argument("--size", type=int, default=None, help="default: 224 on cuda, 112 on cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (loss outside)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU; 0 = no MFU")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    parser.add_argument("--no-params", action="store_true", help="skip the parameter table")
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated subset of {','.join(CASES)} (plain always runs)",
    )
    parser.add_argument("--json", default="", help="also write the rows and settings to this JSON file")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.batch = args.batch or (16 if cuda else 1)
    args.frames = args.frames or (16 if cuda else 8)
    args.size = args.size or (224 if cuda else 112)
    if min(args.batch, args.frames, args.size, args.repeats) < 1 or args.peak_tflops < 0:
        parser.error("--batch, --frames, --size and --repeats must be >= 1 and --peak-tflops >= 0")
    args.cases = {c.strip() for c in args.cases.split(",") if c.strip()} | {"plain"}
    if args.cases - set(CASES):
        parser.error(f"--cases: unknown {sorted(args.cases - set(CASES))}; choose from {', '.join(CASES)}")
    try:
        get_config(args.preset)
    except ValueError as error:
        parser.error(str(error))
    return args


def _cases(args: argparse.Namespace, device: torch.device, num_classes: int, num_seg: int) -> list[Case]:
    def build(mode: str, **overrides: Any) -> PViT:
        torch.manual_seed(0)
        model = build_model(
            args.preset,
            mode,
            num_classes=num_classes,
            num_seg_classes=num_seg,
            num_box_classes=3,
            **overrides,
        )
        return model.to(device).train()

    wrap = torch.compile if args.compile else (lambda m: m)
    plain = build("plain")
    cases = [Case("plain", plain, True, wrap(plain.backbone))]
    if "explicit" in args.cases:
        explicit = build("plain", attention="explicit")
        explicit.load_state_dict(plain.state_dict())
        cases.append(Case("plain, explicit attention", explicit, True, wrap(explicit.backbone)))
    if args.cases & {"pvit", "full"}:
        pvit_model = build("pvit")
        n = pvit_model.cfg.num_prompts
        if "pvit" in args.cases:
            name = f"pvit backbone ({n} prompts, action loss)"
            cases.append(Case(name, pvit_model, True, wrap(pvit_model.backbone)))
        if "full" in args.cases:
            name = f"pvit full ({n} prompts + heads + all losses)"
            cases.append(Case(name, pvit_model, False, wrap(pvit_model)))
    return cases


def _inputs(args: argparse.Namespace, batch: int, cfg, device: torch.device, num_classes: int, num_seg: int):
    video = torch.randn(
        batch, 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(0)
    )
    label = args.size // cfg.label_stride
    targets = _targets(batch, args.frames, label, num_classes, num_seg, cfg.num_box_slots)
    return video.to(device), {k: v.to(device) for k, v in targets.items()}


def _fit_batch(args, cases: list[Case], device, num_classes: int, num_seg: int, loss_fn, autocast) -> int:
    """The requested batch, halved on CUDA until the largest case (pvit full) runs a step."""
    batch = args.batch
    while True:
        video, targets = _inputs(args, batch, cases[-1].model.cfg, device, num_classes, num_seg)
        try:
            _step(cases[-1], video, targets, loss_fn, autocast)
            return batch
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            cases[-1].model.zero_grad(set_to_none=True)
            del video, targets
            torch.cuda.empty_cache()
            batch //= 2
            print(f"batch {batch * 2} does not fit; trying {batch}", flush=True)


def main(argv: list[str] | None = None) -> list[dict]:
    """Print the timing table (and parameter counts); returns the timing rows for tests and scripts."""
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 parts (loss, norms' stats) may use TF32
        torch.backends.cudnn.allow_tf32 = True
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    num_classes, num_seg = 174, 40
    cases = _cases(args, device, num_classes, num_seg)
    loss_fn = MultiTaskLoss()
    batch = _fit_batch(args, cases, device, num_classes, num_seg, loss_fn, autocast)
    video, targets = _inputs(args, batch, cases[0].model.cfg, device, num_classes, num_seg)
    medians = _interleaved(
        {c.name: partial(_step, c, video, targets, loss_fn, autocast) for c in cases},
        args.repeats,
        warmup=2 if args.compile else 1,
    )
    flops = {c.name: step_flops(c, video, targets, loss_fn) for c in cases}
    rows: list[dict[str, Any]] = [
        {
            "name": c.name,
            "seconds": medians[c.name],
            "clips_per_s": batch / medians[c.name],
            "tflop": flops[c.name] / 1e12,
            "tflops": flops[c.name] / 1e12 / medians[c.name],
        }
        for c in cases
    ]
    for row in rows:
        row["mfu"] = row["tflops"] / args.peak_tflops if args.peak_tflops else None
        row["ratio_to_plain"] = row["seconds"] / rows[0]["seconds"]
    _print_table(args, batch, rows)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "cases"}
        Path(args.json).write_text(
            json.dumps({"settings": {**settings, "batch": batch}, "rows": rows}, indent=1)
        )
    if not args.no_params:
        _print_params(args.preset, num_classes, num_seg)
    return rows


def _print_table(args: argparse.Namespace, batch: int, rows: list[dict]) -> None:
    threads = f", {torch.get_num_threads()} threads" if args.device == "cpu" else ""
    print(
        f"fwd+bwd, preset {args.preset}, input {batch}x3x{args.frames}x{args.size}x{args.size}, "
        f"{args.device} {args.dtype}, compile {'on' if args.compile else 'off'}, "
        f"median of {args.repeats} interleaved repeats{threads}"
    )
    print(
        f"  {'case':<46} {'ms/step':>9} {'clips/s':>8} {'GFLOP/step':>10} {'TFLOP/s':>8} {'MFU':>6} "
        f"{'ratio':>6}"
    )
    for r in rows:
        mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "     -"
        ms, gflop, ratio = 1000 * r["seconds"], 1000 * r["tflop"], r["ratio_to_plain"]
        print(
            f"  {r['name']:<46} {ms:9.1f} {r['clips_per_s']:8.2f} {gflop:10.1f} {r['tflops']:8.3f} "
            f"{mfu:>6} {ratio:6.3f}"
        )
    explicit = next((r for r in rows if "explicit" in r["name"]), None)
    if explicit:
        print(f"explicit / fused attention time (plain backbone): {explicit['ratio_to_plain']:.3f}")
    if args.peak_tflops:
        print(f"MFU against a peak of {args.peak_tflops:g} TFLOP/s (--peak-tflops)")


def _print_params(preset: str, num_classes: int, num_seg: int) -> None:
    print("\nparameters")
    print(f"  {'model':<46} {'total':>12} {'trainable':>12}")
    for name, total, trainable in param_table(preset, num_classes, num_seg):
        print(f"  {name:<46} {total:>12,} {f'{trainable:,}' if trainable else '':>12}")


if __name__ == "__main__":
    main()

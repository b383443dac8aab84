"""Benchmark: fwd+bwd time of model variants against ``plain`` in one run: throughput, MFU, peak memory.

    python -m pvit.bench                            # CPU: 8 x 112^2 clips, batch 1, fp32
    python -m pvit.bench --device cuda [--dtype bf16] [--compile] [--peak-tflops 989]   # 16 x 224^2, batch 16
    python -m pvit.bench --device cuda --cases plain,sdpa,flex,conv,shifts,ckpt,tv [--compile]
    python -m pvit.bench --device cuda --cases plain --repeats 1 --profile      # top 15 CUDA kernels

Cases (``--cases``, comma-separated; ``plain`` always runs first and is the baseline of the ratio column):
``plain`` (mode plain, ``--attention``/``--pool-impl``, default auto); ``explicit``, ``sdpa``, ``folded``,
``flex`` (plain with that attention formulation); ``conv``, ``channels_last``, ``shifts`` (plain with that
pooling formulation); ``ckpt`` (plain with activation checkpointing); ``pvit`` (the backbone with prompts,
action loss); ``full`` (prompts, task heads and every loss); ``tv`` (torchvision's own ``MViT`` with the
preset's settings, randomly initialised: ``mvit_v2_s`` for the default preset; the same-run anchor).

Timings interleave the cases repeat by repeat (so machine load hits all alike) and report medians; the
warm-up (first steps: allocation, autotuning, compilation) is timed separately. A case that fails (e.g. a
formulation this torch cannot compile) is reported and dropped; the others still run. FLOPs are the model's
(``torch.utils.flop_counter.FlopCounterMode`` on one fwd+bwd through the explicit attention and the conv
pooling without checkpointing, so every matmul is counted once and fused kernels' internals are not);
MFU = FLOPs / time / ``--peak-tflops``. Peak memory (CUDA) is what one step of the case needs: parameters,
gradients, activations and workspace (``torch.cuda.max_memory_allocated`` during a step, less the memory
other cases hold, plus this case's parameters); no optimiser state.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.video import mvit as tvm

from .attention import resolve_attention
from .backbone import mvit_kwargs
from .config import ATTENTION, POOLING, PViTConfig, get_config
from .losses import MultiTaskLoss
from .model import PViT, build_model
from .pooling import resolve_pool
from .tasks import TASKS

NUM_CLASSES, NUM_SEG = 174, 40
# --cases: the name each gets in the table, and the PViTConfig overrides of the plain variants.
PLAIN_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "explicit": ("plain, explicit attention", {"attention": "explicit"}),
    "sdpa": ("plain, sdpa attention", {"attention": "sdpa"}),
    "folded": ("plain, folded attention", {"attention": "folded"}),
    "flex": ("plain, flex attention", {"attention": "flex"}),
    "conv": ("plain, conv pooling", {"pool_impl": "conv"}),
    "channels_last": ("plain, channels_last pooling", {"pool_impl": "channels_last"}),
    "shifts": ("plain, shifts pooling", {"pool_impl": "shifts"}),
    "ckpt": ("plain, activation checkpointing", {"act_checkpoint": True}),
}
CASES = ("plain", *PLAIN_VARIANTS, "pvit", "full", "tv")
DEFAULT_CASES = ("plain", "explicit", "pvit", "full")


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


@dataclass
class Case:
    """One timed configuration: a model and whether only its backbone (+ action loss) runs."""

    name: str
    model: torch.nn.Module  # a PViT, or torchvision's MViT (the ``tv`` case)
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


def _interleaved(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
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


@contextlib.contextmanager
def reference_formulation(model: torch.nn.Module) -> Iterator[None]:
    """A PViT switched to explicit attention, conv pooling and no checkpointing for the duration (the
    formulation whose operations the FLOP counter sees one by one); other models unchanged."""
    if not isinstance(model, PViT):
        yield
        return
    backbone = model.backbone
    saved = backbone.attention, backbone.pool_impl, backbone.grad_checkpointing
    backbone.attention, backbone.pool_impl, backbone.grad_checkpointing = "explicit", "conv", False
    try:
        yield
    finally:
        backbone.attention, backbone.pool_impl, backbone.grad_checkpointing = saved


def step_flops(case: Case, video: torch.Tensor, targets: dict, loss_fn: MultiTaskLoss) -> int:
    """Model FLOPs of one fwd+bwd of ``case`` on ``video``, counted through the reference formulation.

    Counted on the uncompiled module in fp32 with dropout etc. as in training; FLOPs do not depend on dtype.
    """
    model = case.model
    module = model.backbone if case.backbone_only and isinstance(model, PViT) else model
    plain_case = Case(case.name, model, case.backbone_only, module)
    mapping = {torch.ops.aten.convolution_backward: conv_backward_flop}
    with reference_formulation(model), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        _step(plain_case, video, targets, loss_fn, contextlib.nullcontext)
    return counter.get_total_flops()


def _count(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def param_table(preset: str, num_classes: int, num_seg: int) -> list[tuple[str, int, int]]:
    """(name, total, trainable) rows for torchvision's mvit_v2_s and each mode."""
    rows = [("torchvision mvit_v2_s (K400 head)", _count(tvm.mvit_v2_s()), _count(tvm.mvit_v2_s()))]
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
    parser.add_argument("--attention", choices=ATTENTION, default="auto", help="the cases' attention")
    parser.add_argument("--pool-impl", choices=POOLING, default="auto", help="the cases' q/k/v pooling")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU; 0 = no MFU")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed first steps (default 1, 2 compiled)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    parser.add_argument("--no-params", action="store_true", help="skip the parameter table")
    parser.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help=f"comma-separated subset of {','.join(CASES)} (plain always runs)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=0.0,
        help="seconds: warm-ups (compilation) after the first case stop this long after the start: a case "
        "not begun is skipped, one running is interrupted; 0 = no limit. Cases warm up in --cases order, so "
        "under a script's time limit the first ones are still timed",
    )
    parser.add_argument("--profile", action="store_true", help="profile the plain case: top kernels by time")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--json", default="", help="also write the rows and settings to this JSON file")
    args = parser.parse_args(argv)
    _defaults(parser, args)
    return args


def _defaults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Device-dependent defaults and validation of the parsed flags."""
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.batch = args.batch or (16 if cuda else 1)
    args.frames = args.frames or (16 if cuda else 8)
    args.size = args.size or (224 if cuda else 112)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.compile else 1)
    if min(args.batch, args.frames, args.size, args.repeats, args.profile_steps) < 1 or args.peak_tflops < 0:
        parser.error("--batch, --frames, --size, --repeats, --profile-steps >= 1 and --peak-tflops >= 0")
    if args.warmup < 0 or args.budget < 0:
        parser.error("--warmup and --budget must be >= 0")
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {unknown}; choose from {', '.join(CASES)}")
    args.cases = ["plain", *dict.fromkeys(c for c in chosen if c != "plain")]  # in the order given
    try:
        get_config(args.preset)
    except ValueError as error:
        parser.error(str(error))


def _torchvision_mvit(cfg: PViTConfig, frames: int, size: int) -> torch.nn.Module:
    """torchvision's own ``MViT`` with the preset's block settings, built for the run's clip size (its
    forward uses the construction-time grid); for the ``mvit_v2_s`` preset this is ``mvit_v2_s``."""
    run_size = {"spatial_size": (size, size), "temporal_size": frames, "num_classes": NUM_CLASSES}
    return tvm.MViT(**{**mvit_kwargs(cfg), **run_size})


def _cases(args: argparse.Namespace, device: torch.device) -> list[Case]:
    """The chosen cases, each a freshly seeded model (plain variants share plain's weights)."""

    def build(mode: str, **overrides: Any) -> PViT:
        torch.manual_seed(0)
        model = build_model(
            args.preset,
            mode,
            num_classes=NUM_CLASSES,
            num_seg_classes=NUM_SEG,
            num_box_classes=3,
            **{"attention": args.attention, "pool_impl": args.pool_impl, **overrides},
        )
        return model.to(device).train()

    wrap = torch.compile if args.compile else (lambda m: m)
    plain = build("plain")
    cases = [Case("plain", plain, True, wrap(plain.backbone))]
    pvit_model: PViT | None = None
    for key in args.cases[1:]:
        if key in PLAIN_VARIANTS:
            name, overrides = PLAIN_VARIANTS[key]
            variant = build("plain", **overrides)
            variant.load_state_dict(plain.state_dict())
            cases.append(Case(name, variant, True, wrap(variant.backbone)))
        elif key in ("pvit", "full"):
            pvit_model = pvit_model or build("pvit")
            n = pvit_model.cfg.num_prompts
            if key == "pvit":
                name = f"pvit backbone ({n} prompts, action loss)"
                cases.append(Case(name, pvit_model, True, wrap(pvit_model.backbone)))
            else:
                name = f"pvit full ({n} prompts + heads + all losses)"
                cases.append(Case(name, pvit_model, False, wrap(pvit_model)))
        else:  # tv
            torch.manual_seed(0)
            tv = _torchvision_mvit(plain.cfg, args.frames, args.size).to(device).train()
            label = "mvit_v2_s" if args.preset == "mvit_v2_s" else f"MViT ({args.preset} settings)"
            cases.append(Case(f"torchvision {label}", tv, True, wrap(tv)))
    return cases


def _inputs(args: argparse.Namespace, batch: int, cfg: PViTConfig, device: torch.device):
    video = torch.randn(
        batch, 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(0)
    )
    label = args.size // cfg.label_stride
    targets = _targets(batch, args.frames, label, NUM_CLASSES, NUM_SEG, cfg.num_box_slots)
    return video.to(device), {k: v.to(device) for k, v in targets.items()}


class _BudgetExceeded(BaseException):
    """Raised by SIGALRM into a warm-up that runs past --budget (a BaseException, so that no ``except
    Exception`` inside the compiler swallows it)."""


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Interrupt the enclosed code in the main thread with ``_BudgetExceeded`` after ``seconds`` (if finite
    and SIGALRM exists): a compilation that would outlast the script's time limit is cut short."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if math.isinf(seconds) or not usable:
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise _BudgetExceeded

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _warm_case(first: bool, run: Callable[[], float], steps: int, deadline: float) -> str | None:
    """Warm one case up; returns why it was dropped, or None. The first case (the baseline) always runs."""
    remaining = math.inf if first else deadline - time.perf_counter()
    if remaining <= 0:
        return "skipped: not warmed up within --budget"
    try:
        with _alarm(remaining):
            for _ in range(max(steps, 1)):
                run()
    except _BudgetExceeded:
        return "interrupted: warm-up (compilation) ran past --budget"
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # one formulation this torch cannot run must not end the whole bench
        if first:
            raise
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
    return None


def _warm_up(
    cases: list[Case], video: torch.Tensor, targets: dict, loss_fn: MultiTaskLoss, autocast, steps: int,
    deadline: float,
) -> tuple[list[Case], dict[str, float], dict[str, str]]:  # fmt: skip
    """Each case's untimed first steps (at least one: the batch must fit), in order. Returns the cases that
    ran, their warm-up seconds (compilation included) and the others' reasons; running out of memory
    propagates. Past ``deadline`` (``time.perf_counter()``) no case begins, a running one is interrupted."""
    kept, seconds, failed = [], {}, {}
    for case in cases:
        start = time.perf_counter()
        run = partial(_step, case, video, targets, loss_fn, autocast)
        why = _warm_case(case is cases[0], run, steps, deadline)
        if why is not None:
            case.model.zero_grad(set_to_none=True)
            failed[case.name] = why
            print(f"case {case.name!r} dropped: {why}", flush=True)
            continue
        seconds[case.name] = time.perf_counter() - start
        print(f"warm-up {case.name}: {seconds[case.name]:.1f} s", flush=True)
        kept.append(case)
    return kept, seconds, failed


def _fit_batch(args, cases: list[Case], cfg: PViTConfig, device, loss_fn, autocast):
    """Warm every case up at the requested batch, halved on CUDA until all of them run a step."""
    batch = args.batch
    deadline = time.perf_counter() + (args.budget or math.inf)
    while True:
        video, targets = _inputs(args, batch, cfg, device)
        try:
            return batch, *_warm_up(cases, video, targets, loss_fn, autocast, args.warmup, deadline)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            for case in cases:
                case.model.zero_grad(set_to_none=True)
            del video, targets
            torch.cuda.empty_cache()
            batch //= 2
            print(f"batch {batch * 2} does not fit; trying {batch}", flush=True)


def _peak_gib(
    case: Case, video: torch.Tensor, targets: dict, loss_fn: MultiTaskLoss, autocast
) -> float | None:
    """GiB one step of ``case`` needs on CUDA: its parameters plus the step's peak above what was allocated
    before it (the other cases' models and inputs stay resident and are not counted); None on CPU."""
    if not video.is_cuda:
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    _step(case, video, targets, loss_fn, autocast)
    params = sum(p.numel() * p.element_size() for p in case.model.parameters())
    return (torch.cuda.max_memory_allocated() - base + params) / 2**30


def _flops_by_architecture(cases: list[Case], video: torch.Tensor, targets: dict, loss_fn) -> dict[str, int]:
    """Model FLOPs per case, counted once per architecture (formulation variants of plain share it)."""
    counted: dict[tuple, int] = {}
    flops = {}
    for case in cases:
        model = case.model
        key = (case.backbone_only, model.cfg.mode) if isinstance(model, PViT) else ("tv",)
        if key not in counted:
            counted[key] = step_flops(case, video, targets, loss_fn)
        flops[case.name] = counted[key]
    return flops


def profile_case(
    case: Case,
    video: torch.Tensor,
    targets: dict,
    loss_fn: MultiTaskLoss,
    autocast,
    steps: int,
    top: int = 15,
) -> dict[str, Any]:
    """torch.profiler over ``steps`` fwd+bwd of ``case``: the ``top`` kernels by device time (CUDA; on CPU the
    operators by self CPU time), and the operators whose own kernels took the most device time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = video.is_cuda
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            _step(case, video, targets, loss_fn, autocast)
    events = prof.key_averages()
    if cuda:
        kernels = [(e.key, e.device_time_total, e.count) for e in events if e.device_type == DeviceType.CUDA]
        ops = [(e.key, e.self_device_time_total, e.count) for e in events if e.device_type == DeviceType.CPU]
    else:
        kernels = [(e.key, e.self_cpu_time_total, e.count) for e in events]
        ops = []
    total = sum(t for _, t, _ in kernels) or 1

    def table(rows: list[tuple[str, float, int]]) -> list[dict[str, Any]]:
        rows = sorted((r for r in rows if r[1] > 0), key=lambda r: -r[1])[:top]
        return [
            {"name": k, "ms_per_step": t / 1e3 / steps, "share": t / total, "calls_per_step": n / steps}
            for k, t, n in rows
        ]

    unit = "CUDA kernels" if cuda else "operators (self CPU time)"
    return {"case": case.name, "what": unit, "ms_per_step": total / 1e3 / steps, "top": table(kernels),
            "ops": table(ops)}  # fmt: skip


def _rows(cases, batch: int, medians, flops, peaks, warmups, peak_tflops: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for c in cases:
        seconds = medians[c.name]
        tflops = flops[c.name] / 1e12 / seconds
        rows.append(
            {
                "name": c.name,
                "seconds": seconds,
                "clips_per_s": batch / seconds,
                "tflop": flops[c.name] / 1e12,
                "tflops": tflops,
                "mfu": tflops / peak_tflops if peak_tflops else None,
                "ratio_to_plain": seconds / medians[cases[0].name],
                "peak_gib": peaks[c.name],
                "warmup_s": warmups[c.name],
            }
        )
    return rows


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
    cases = _cases(args, device)
    cfg: PViTConfig = cases[0].model.cfg  # type: ignore[assignment]
    loss_fn = MultiTaskLoss()
    batch, cases, warmups, failed = _fit_batch(args, cases, cfg, device, loss_fn, autocast)
    video, targets = _inputs(args, batch, cfg, device)
    steps: dict[str, Callable[[], float]] = {
        c.name: partial(_step, c, video, targets, loss_fn, autocast) for c in cases
    }
    medians = _interleaved(steps, args.repeats)
    peaks = {c.name: _peak_gib(c, video, targets, loss_fn, autocast) for c in cases}
    flops = _flops_by_architecture(cases, video, targets, loss_fn)
    rows = _rows(cases, batch, medians, flops, peaks, warmups, args.peak_tflops)
    _print_table(args, batch, rows, failed, device)
    report = None
    if args.profile:
        report = profile_case(cases[0], video, targets, loss_fn, autocast, args.profile_steps)
        _print_profile(report, args.profile_steps)
    if args.json:
        settings = {**vars(args), "batch": batch}
        payload = {"settings": settings, "rows": rows, "failed": failed, "profile": report}
        Path(args.json).write_text(json.dumps(payload, indent=1))
    if not args.no_params:
        _print_params(args.preset, NUM_CLASSES, NUM_SEG)
    return rows


def _print_table(args: argparse.Namespace, batch: int, rows: list[dict], failed: dict, device) -> None:
    threads = f", {torch.get_num_threads()} threads" if args.device == "cpu" else ""
    print(
        f"fwd+bwd, preset {args.preset}, input {batch}x3x{args.frames}x{args.size}x{args.size}, "
        f"{args.device} {args.dtype}, compile {'on' if args.compile else 'off'}, "
        f"median of {args.repeats} interleaved repeats{threads}"
    )
    attention, pool = resolve_attention(args.attention, device), resolve_pool(args.pool_impl, device)
    print(f"cases use attention {attention} and pooling {pool} unless their name says otherwise")
    print(
        f"  {'case':<46} {'ms/step':>9} {'clips/s':>8} {'GFLOP/step':>10} {'TFLOP/s':>8} {'MFU':>6} "
        f"{'ratio':>6} {'peak GiB':>8} {'warm-up s':>9}"
    )
    for r in rows:
        mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "     -"
        peak = f"{r['peak_gib']:8.2f}" if r["peak_gib"] is not None else "       -"
        ms, gflop, ratio = 1000 * r["seconds"], 1000 * r["tflop"], r["ratio_to_plain"]
        print(
            f"  {r['name']:<46} {ms:9.1f} {r['clips_per_s']:8.2f} {gflop:10.1f} {r['tflops']:8.3f} "
            f"{mfu:>6} {ratio:6.3f} {peak} {r['warmup_s']:9.1f}"
        )
    for name, error in failed.items():
        print(f"  {name:<46} failed: {error}")
    explicit = next((r for r in rows if "explicit" in r["name"]), None)
    if explicit:
        print(f"explicit / {attention} attention time (plain backbone): {explicit['ratio_to_plain']:.3f}")
    if args.peak_tflops:
        print(f"MFU against a peak of {args.peak_tflops:g} TFLOP/s (--peak-tflops)")


def _print_profile(report: dict[str, Any], steps: int) -> None:
    head = f"\nprofile of {report['case']!r} over {steps} steps: {report['ms_per_step']:.1f} ms per step"
    print(f"{head} in all {report['what']}; top {len(report['top'])}:")
    for title, rows in (("", report["top"]), ("operators by their own kernels' time", report["ops"])):
        if not rows:
            continue
        if title:
            print(f"{title}:")
        print(f"  {'ms/step':>8} {'share':>6} {'calls':>6}  name")
        for r in rows:
            name = r["name"] if len(r["name"]) <= 110 else r["name"][:107] + "..."
            print(f"  {r['ms_per_step']:8.2f} {100 * r['share']:5.1f}% {r['calls_per_step']:6.0f}  {name}")


def _print_params(preset: str, num_classes: int, num_seg: int) -> None:
    print("\nparameters")
    print(f"  {'model':<46} {'total':>12} {'trainable':>12}")
    for name, total, trainable in param_table(preset, num_classes, num_seg):
        print(f"  {name:<46} {total:>12,} {f'{trainable:,}' if trainable else '':>12}")


if __name__ == "__main__":
    main()

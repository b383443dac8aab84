"""Benchmark: forward+backward time of ``pvit`` against ``plain`` in one run, and parameter counts.

Run ``python -m pvit.bench`` (or ``python model/bench.py``); ``--help`` lists the clip/preset options.
Timings interleave the models repeat by repeat (so machine load hits both alike) and report medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.models.video import mvit_v2_s

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


def _step(
    model: PViT, video: torch.Tensor, targets: dict, loss_fn: MultiTaskLoss, backbone_only: bool
) -> float:
    start = time.perf_counter()
    # backbone_only: encoder + action head and CE, the part prompts change (task heads skipped).
    preds = {"action": model.backbone(video)} if backbone_only else model(video)
    loss_fn(preds, targets)[0].backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def _interleaved(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up, not timed
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: statistics.median(ts) for name, ts in times.items()}


def _count(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def param_table(preset: str, num_classes: int, num_seg: int) -> list[tuple[str, int, int]]:
    """(name, total, trainable) rows for torchvision's mvit_v2_s and each mode."""
    rows = [("torchvision mvit_v2_s (K400 head)", _count(mvit_v2_s()), _count(mvit_v2_s()))]
    for mode in ("plain", "pvit", "mt", "vpt"):
        model = build_model(preset, mode, num_classes=num_classes, num_seg_classes=num_seg, num_box_classes=3)
        rows.append((f"{preset} {mode} ({num_classes} classes)", _count(model), _count(model, True)))
        if mode == "pvit":
            rows.append(("  of which prompt tokens", model.backbone.prompt_tokens.numel(), 0))
            for task, head in model.heads.items():
                rows.append((f"  of which {task} head", _count(head), 0))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mvit_v2_s")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    num_classes, num_seg = 174, 40
    torch.manual_seed(0)
    models = {
        m: build_model(args.preset, m, num_classes=num_classes, num_seg_classes=num_seg, num_box_classes=3)
        for m in ("plain", "pvit")
    }
    plain, pvit_model = models["plain"].train(), models["pvit"].train()
    video = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    label = args.size // pvit_model.cfg.label_stride
    targets = _targets(args.batch, args.frames, label, num_classes, num_seg, pvit_model.cfg.num_box_slots)
    loss_fn = MultiTaskLoss()
    medians = _interleaved(
        {
            "plain": lambda: _step(plain, video, targets, loss_fn, True),
            "pvit backbone (5 prompts, action loss only)": lambda: _step(
                pvit_model, video, targets, loss_fn, True
            ),
            "pvit full (5 prompts + 5 heads + all losses)": lambda: _step(
                pvit_model, video, targets, loss_fn, False
            ),
        },
        args.repeats,
    )
    print(
        f"fwd+bwd, preset {args.preset}, input {args.batch}x3x{args.frames}x{args.size}x{args.size}, "
        f"median of {args.repeats} interleaved repeats, {torch.get_num_threads()} threads"
    )
    base = medians["plain"]
    for name, seconds in medians.items():
        print(f"  {name:<46} {seconds * 1000:8.1f} ms   ratio to plain {seconds / base:5.3f}")
    print("\nparameters")
    print(f"  {'model':<46} {'total':>12} {'trainable':>12}")
    for name, total, trainable in param_table(args.preset, num_classes, num_seg):
        print(f"  {name:<46} {total:>12,} {f'{trainable:,}' if trainable else '':>12}")


if __name__ == "__main__":
    main()

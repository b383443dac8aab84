"""`--grad-accum N`: N micro-batches make exactly the update of the batch they split, masked multi-task
losses included (each micro-batch divides by the whole batch's element counts, not its own)."""

from __future__ import annotations

from pathlib import Path

import pvit
import pytest
import torch

from pipeline.labelspace import load_label_space
from pipeline.sources.procedural import ACTIONS, SEGM_SPACE
from tests.train.conftest import train_args
from train.augment import Protocol
from train.data import Geometry, MixedBatches, StreamSpec, merge, to_device
from train.main import main, split_parts
from train.plan import StreamPlan
from train.sources import open_source

CPU = torch.device("cpu")


def _stream(source, role: str, stream_id: int, batch_size: int) -> StreamSpec:
    table = source.split("train")
    plan = StreamPlan((table.shard,), (1.0,), seed=0, stream_id=stream_id, views=(table.view_matrix(),))
    return StreamSpec(role, plan, [source], [table], batch_size, world=1, rank=0)


def _parts(procedural_build: Path) -> list[dict]:
    """One real (action only) and one synthetic (scene labels) batch of 8: every task, masks that differ."""
    source = open_source(procedural_build.parent, "procedural")
    protocol = Protocol(crop_size=32, train_scale=(32, 40), flip=True, label_stride=4)
    streams = [_stream(source, "real", 0, 8), _stream(source, "synthetic", 1, 8)]
    step = MixedBatches(streams, 0, 1, Geometry(protocol, 8), seed=0).batch(0)
    return [step["real"], step["synthetic"]]


def _model() -> pvit.PViT:
    torch.manual_seed(0)
    space = load_label_space(SEGM_SPACE).num_classes
    sizes = {"num_seg_classes": space, "num_box_classes": space, "num_box_slots": 8, "num_frames": 4}
    return pvit.build_model("tiny", "pvit", num_classes=len(ACTIONS), real_tasks=("boxes",), **sizes)


def _gradients(model: pvit.PViT, batches: list[list[dict]], counts: dict | None) -> tuple[dict, dict]:
    """Summed gradients and per-task losses of `batches` (micro-batches of one step, or one whole batch)."""
    loss_fn = pvit.MultiTaskLoss()
    model.zero_grad(set_to_none=True)
    sums: dict[str, torch.Tensor] = {}
    for parts in batches:
        video, targets = to_device(merge(parts), CPU)
        total, per_task = loss_fn(model(video), targets, counts)
        total.backward()
        for name, value in {"total": total, **per_task}.items():
            sums[name] = sums.get(name, 0.0) + value.detach()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, sums


def test_four_micro_batches_give_the_gradient_of_the_whole_batch(procedural_build: Path) -> None:
    parts = _parts(procedural_build)
    model = _model().train()
    whole_grads, whole_losses = _gradients(model, [parts], None)
    counts = pvit.MultiTaskLoss().counts(to_device(merge(parts), CPU)[1])
    assert {"action", "depth", "normal", "segm", "pose3d", "boxes.l1", "boxes.cls", "real_boxes.giou"} <= set(
        counts
    )
    micro_grads, micro_losses = _gradients(model, split_parts(parts, 4), counts)
    assert set(micro_losses) == set(whole_losses) >= {"action", "depth", "boxes", "real_boxes"}
    for name, value in whole_losses.items():
        assert micro_losses[name] == pytest.approx(float(value), rel=1e-5), name
    assert set(micro_grads) == set(whole_grads)
    # Float sums in another order differ by rounding on the scale of the largest gradient, not of each
    # element: some tensors' true gradient is zero (a key-pooling norm's bias shifts every logit of a query
    # alike) and holds only rounding noise. Measured on an Intel Xeon, 1 and 2 threads, ATen native
    # (AVX-512), AVX2 and scalar kernels: every element within 3.3e-7 x the largest; the mean-of-means
    # control is 3.0 x off.
    scale = max(float(grad.abs().max()) for grad in whole_grads.values())
    for name, grad in whole_grads.items():
        torch.testing.assert_close(micro_grads[name], grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_without_the_whole_batch_counts_the_micro_batches_differ(procedural_build: Path) -> None:
    """The control: dividing each micro-batch by its own counts (a mean of means) is not the batch's loss."""
    parts = _parts(procedural_build)
    model = _model().train()
    _, whole = _gradients(model, [parts], None)
    _, own = _gradients(model, split_parts(parts, 4), None)
    assert float(own["depth"]) / 4 != pytest.approx(float(whole["depth"]), rel=1e-3)


@pytest.mark.slow  # multi-process or several runs: the second CI step runs it
def test_the_trainer_with_grad_accum_makes_the_update_of_the_whole_batch(
    shards_dir: Path, tmp_path: Path
) -> None:
    # SGD: its update is the gradient itself. (Adam's first step is about lr x sign(gradient), which turns the
    # float rounding of a near-zero gradient into a full-size difference.)
    flags = ["--steps", "1", "--batch-size", "16", "--synthetic-batch-size", "16", "--optimizer", "sgd",
             "--momentum", "0", "--lr", "0.1"]  # fmt: skip
    main(train_args(shards_dir, tmp_path / "whole", *flags))
    main(train_args(shards_dir, tmp_path / "micro", *flags, "--grad-accum", "4"))
    whole, micro = (
        torch.load(tmp_path / run / "checkpoints" / "step_00000001.pt", weights_only=True)["model"]
        for run in ("whole", "micro")
    )
    for name, weight in whole.items():
        torch.testing.assert_close(micro[name], weight, rtol=1e-4, atol=1e-6, msg=name)


def test_a_batch_that_does_not_divide_into_micro_batches_is_refused(shards_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not divisible into --grad-accum 3 micro-batches"):
        main(train_args(shards_dir, tmp_path, "--steps", "1", "--grad-accum", "3"))

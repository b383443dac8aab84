"""The task table (architecture.md §5): a task added as one pvit entry plus one trainer entry, and nothing
else, gets a prompt and a head in the model, a term in the loss, a label in collate/merge/to_device and a
metric."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import pvit
import pytest
import torch
import torch.nn as nn
from pvit.config import resolve_tasks

from pipeline.schema import TASK_BIT, TASKS
from train.data import collate, merge, sample_arrays, to_device
from train.evaluate import evaluate_tasks
from train.tasks import (
    TRAIN_TASKS,
    LabelKey,
    TrainTask,
    ratio_metric,
    read_member,
    register_train_task,
    unregister_train_task,
)

TOY_BIT = len(TASKS)  # the first bit after the schema's tasks
FRAMES, SIZE, STRIDE = 4, 64, 4


class ToyHead(nn.Module):
    """A per-clip scalar (say, mean scene brightness) from the task token."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 1)

    def forward(self, token: torch.Tensor, feats: pvit.Features, size: tuple[int, int, int]) -> dict:
        return {"toy": self.fc(token)[:, 0]}


def toy_loss(
    preds: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], rows: torch.Tensor, crit: object
) -> torch.Tensor:
    valid = rows & torch.isfinite(targets["toy"])
    err = torch.where(valid, (preds["toy"] - targets["toy"].nan_to_num()) ** 2, 0.0)
    return err.sum() / valid.sum().clamp(min=1)


def toy_update(preds: dict, targets: dict, rows: torch.Tensor, sums: dict) -> None:
    valid = rows & torch.isfinite(targets["toy"])
    sums["toy_err"] += float((preds["toy"] - targets["toy"]).abs()[valid].sum())
    sums["toy_n"] += float(valid.sum())


@contextlib.contextmanager
def toy_task() -> Iterator[None]:
    """The whole of adding a task: one entry in each table (restored afterwards)."""
    pvit.register_task(
        pvit.TaskSpec("toy", "token", toy_loss, weight=2.0, head=lambda ctx: ToyHead(ctx.dim), column=TOY_BIT)
    )
    register_train_task(
        TrainTask(
            "toy",
            (LabelKey("toy", float("nan")),),
            read_member("toy", "toy.npy"),
            metric=ratio_metric("toy_abs_err", "toy_err", "toy_n", 1.0, toy_update),
            bit=TOY_BIT,
        )
    )
    try:
        yield
    finally:
        pvit.unregister_task("toy")
        unregister_train_task("toy")


def decoded(seed: int, toy: float | None) -> dict:
    """A decoded sample as the loader sees it: depth always, the toy label when ``toy`` is given."""
    rng = np.random.default_rng(seed)
    h = SIZE // STRIDE
    sample = {
        "video": rng.integers(0, 256, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8),
        "meta": {"mask": 1 << TASK_BIT["depth"] | (1 << TOY_BIT if toy is not None else 0)},
        "depth.npy": rng.uniform(1, 5, (FRAMES, h, h)).astype(np.float16),
    }
    if toy is not None:
        sample["toy.npy"] = np.float32(toy)
    return sample


def test_a_registered_task_is_built_scored_collated_and_evaluated() -> None:
    allowed = (1 << (TOY_BIT + 1)) - 1
    with toy_task():
        torch.manual_seed(0)
        model = pvit.build_model("tiny", "pvit", num_classes=3, tasks="depth,toy", label_stride=STRIDE)
        assert set(model.heads) == {"depth", "toy"} and model.cfg.num_prompts == 2

        items = [
            sample_arrays(decoded(0, 0.5), allowed, box_slots=4),
            sample_arrays(decoded(1, None), allowed, 4),
        ]
        batch = collate(items)
        assert batch["mask"][:, TOY_BIT].tolist() == [True, False]
        assert batch["toy"][0] == 0.5 and batch["toy"][1].isnan()  # the entry's placeholder
        video, targets = to_device(batch, torch.device("cpu"))
        assert "toy" in targets

        preds = model.train()(video)
        assert preds["toy"].shape == (2,)
        total, parts = pvit.MultiTaskLoss()(preds, targets)
        assert torch.allclose(parts["toy"], (preds["toy"][0] - 0.5) ** 2)  # the unlabelled row does not count
        assert set(parts) == {"depth", "toy"}  # no action labels in this batch
        assert torch.allclose(total, 2.0 * parts["toy"] + 0.5 * parts["depth"])  # the entry's weight
        total.backward()
        assert model.heads["toy"].fc.weight.grad.abs().sum() > 0

        without = collate([sample_arrays(decoded(2, None), allowed & ~(1 << TOY_BIT), 4)])
        assert "toy" not in without and merge([batch, without])["toy"][2].isnan()

        batch["valid"] = torch.tensor([True, True])
        metrics = evaluate_tasks(model, [batch], torch.device("cpu"), contextlib.nullcontext, num_seg=0)
        with torch.no_grad():
            expected = float((model.eval()(video)["toy"][0] - 0.5).abs())
        assert metrics["toy_abs_err"] == pytest.approx(expected, rel=1e-5)
        assert "depth_absrel" in metrics

    assert "toy" not in pvit.TASK_SPECS and "toy" not in TRAIN_TASKS  # the tables are as they were
    with pytest.raises(ValueError, match="unknown task"):
        resolve_tasks("toy")


def test_built_in_entries_agree_with_the_task_names() -> None:
    assert (
        list(pvit.TASK_SPECS)[: len(pvit.TASKS)] == list(pvit.TASKS) == list(TRAIN_TASKS)[: len(pvit.TASKS)]
    )
    assert pvit.task_names("dense") == pvit.DENSE_TASKS and pvit.task_names("token") == pvit.TOKEN_TASKS
    assert pvit.task_names("downstream") == pvit.DOWNSTREAM_TASKS
    for name, spec in pvit.TASK_SPECS.items():
        assert spec.column == pvit.TASK_INDEX[name] == TRAIN_TASKS[name].bit == TASK_BIT[name]

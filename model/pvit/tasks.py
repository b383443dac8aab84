"""Task names and their bit order, mirrored by name from ``pipeline.schema`` (which must stay torch-free),
and the task table (``TaskSpec``, ``TASK_SPECS``, ``register_task``); ``pvit.registry`` holds the built-in
entries.

Column ``i`` of the trainer's ``mask`` tensor ``[B, len(TASKS)]`` is the availability of ``TASKS[i]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

TASKS: tuple[str, ...] = ("action", "depth", "normal", "segm", "pose3d", "boxes", "oscc", "pnr", "ava")
SYNTHETIC_TASKS: tuple[str, ...] = TASKS[1:6]
DOWNSTREAM_TASKS: tuple[str, ...] = ("oscc", "pnr", "ava")  # real-data heads besides action, opt-in per model
DENSE_TASKS: tuple[str, ...] = ("depth", "normal", "segm")
TOKEN_TASKS: tuple[str, ...] = ("pose3d", "boxes")
TASK_INDEX: dict[str, int] = {name: i for i, name in enumerate(TASKS)}

SEGM_IGNORE: int = 65535  # segm label meaning "no label for this pixel"
NUM_JOINTS: int = 25  # Kinect V2 joint order
NUM_AVA_CLASSES: int = 60  # the AVA v2.2 evaluation subset (ava_action_list_v2.2_for_activitynet_2019.pbtxt)


# --- the task table (architecture.md §5: one entry per task, iterated by the model and the loss) ------------

KINDS: tuple[str, ...] = ("action", "dense", "token", "downstream")
SYNTHETIC_KINDS: tuple[str, ...] = ("dense", "token")  # heads on a task token; scored on synthetic rows
_BUILTIN_KINDS: dict[str, tuple[str, ...]] = {
    "action": ("action",),
    "dense": DENSE_TASKS,
    "token": TOKEN_TASKS,
    "downstream": DOWNSTREAM_TASKS,
}

# The table's callables (written out in ``pvit.registry``): a head factory maps a ``pvit.heads.HeadContext``
# (the config and the backbone's dims) to a module; a head call maps (head, ``pvit.heads.HeadInput``) to
# predictions (None: ``pvit.heads.call_token_head``); a loss maps (predictions, targets, rows, criterion) to a
# scalar, the criterion (``MultiTaskLoss``) carrying the loss options (max depth, box matching, smoothing); a
# count maps (targets, rows, criterion) to each loss term's number of valid elements ({"": n} for a loss of
# one term; {"l1": .., "giou": ..} for several), from the targets alone: the divisors a whole batch gives its
# micro-batches under gradient accumulation, read back with ``criterion.count(term)``. Their argument types
# are named here, not imported: the model, heads and losses all read this table, so it imports none of them.
HeadFactory = Callable[..., "nn.Module"]  # (HeadContext) -> nn.Module
HeadCall = Callable[..., dict[str, "torch.Tensor"]]  # (nn.Module, HeadInput) -> predictions
LossFn = Callable[..., "torch.Tensor"]  # (predictions, targets, rows, MultiTaskLoss) -> scalar
CountFn = Callable[..., dict[str, "torch.Tensor"]]  # (targets, rows, MultiTaskLoss) -> {term: count}


@dataclass(frozen=True)
class TaskSpec:
    """One task: its kind, head, loss and default weight, the keys it predicts and reads, and its loss's
    element counts (``count``).

    ``kind``: ``action`` (the backbone's own classifier on CLS; ``head`` None), ``dense``/``token`` (a
    synthetic task: one prompt group and a head on its token, chosen by ``cfg.tasks``; ``dense`` heads also
    read the tapped blocks) or ``downstream`` (a real-data head on the encoder's outputs, chosen by
    ``cfg.downstream``; ``call`` says how it is called, since their signatures differ).
    ``column`` is the task's column of ``targets["mask"]`` (its bit, ``TASK_INDEX`` for the built-in tasks).
    The task is scored when ``pred_keys[0]`` is predicted and ``target_keys[0]`` is in the targets.
    """

    name: str
    kind: str
    loss: LossFn
    weight: float = 1.0  # default loss weight (lambda)
    head: HeadFactory | None = None
    call: HeadCall | None = None  # None: call_token_head(head, inputs)
    pred_keys: tuple[str, ...] = ()  # default (name,)
    target_keys: tuple[str, ...] = ()  # default (name,)
    column: int = -1  # default TASK_INDEX[name]
    count: CountFn | None = (
        None  # None: under gradient accumulation each micro-batch divides by its own count
    )

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind {self.kind!r} not in {KINDS}")
        if (self.head is None) != (self.kind == "action"):
            raise ValueError(f"task {self.name!r}: every kind but action needs a head factory")
        column = self.column if self.column >= 0 else TASK_INDEX.get(self.name, -1)
        if column < 0:
            raise ValueError(f"task {self.name!r} is not in TASKS: give its mask column")
        object.__setattr__(self, "column", column)  # frozen: resolve the defaults once, here
        object.__setattr__(self, "pred_keys", self.pred_keys or (self.name,))
        object.__setattr__(self, "target_keys", self.target_keys or (self.name,))

    @property
    def synthetic(self) -> bool:
        """Whether a batch's real rows (``targets["real"]``) are left out of this task's loss."""
        return self.kind in SYNTHETIC_KINDS


# Insertion order is the order the loss sums in (``TASKS`` for the built-in entries, which ``pvit.registry``
# adds); a new task appends with ``register_task``.
TASK_SPECS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec, replace: bool = False) -> TaskSpec:
    """Add ``spec`` to the table (the model, ``MultiTaskLoss`` and the config's name checks read it)."""
    if spec.name in TASK_SPECS and not replace:
        raise ValueError(f"task {spec.name!r} is already registered")
    taken = {s.column: s.name for s in TASK_SPECS.values() if s.name != spec.name}
    if spec.column in taken:
        raise ValueError(f"task {spec.name!r}: mask column {spec.column} is {taken[spec.column]!r}'s")
    TASK_SPECS[spec.name] = spec
    return spec


def unregister_task(name: str) -> TaskSpec:
    """Remove a task from the table (tests that add a toy task restore the table with it)."""
    return TASK_SPECS.pop(name)


def task_names(*kinds: str) -> tuple[str, ...]:
    """Names of the tasks of ``kinds``: the built-in ones in ``TASKS`` order, then registered ones.

    The built-in names come from the constants above, so the config can check names while ``pvit`` is still
    importing (its presets are built before the table is filled).
    """
    names = [t for t in TASKS if any(t in _BUILTIN_KINDS[k] for k in kinds)]
    return (*names, *(s.name for s in TASK_SPECS.values() if s.kind in kinds and s.name not in names))


def default_loss_weights() -> dict[str, float]:
    """Every registered task's default weight (the paper's lambdas for the built-in tasks)."""
    return {s.name: s.weight for s in TASK_SPECS.values()}

"""Masked multi-task losses (architecture.md §5).

Every loss is masked twice: per sample by the availability mask (``targets["mask"]``, column order
``TASKS``) and per element (NaN depth/normal pixels, segm 65535, NaN joints, NaN box rows). Invalid
entries are replaced *before* the arithmetic and selected away with ``torch.where``, so they contribute
exactly zero value and exactly zero gradient, and a task with no valid element gives ``0.0``, never NaN.
Each task's loss is a mean over its valid elements in the batch. Which loss scores which prediction is
the task table's (``pvit.tasks.TASK_SPECS``, built-in entries in ``pvit.registry``), which
``MultiTaskLoss`` iterates.

Which elements are valid depends on the targets alone (the ``*_valid`` functions), so the element counts
of a whole batch are known before any forward pass. Gradient accumulation uses that: each micro-batch's
loss is divided by the whole batch's counts (``MultiTaskLoss.counts``, then ``forward(..., counts=...)``),
so N micro-batches give exactly the gradient of the batch they split, per-task normalisation included.

Real-world prompts (§A.2): a batch mixing real and synthetic rows may carry ``targets["real"]``, a bool
``[B]`` marking the real stream's rows. Synthetic tasks then count only the other rows, and a real task's
head (``real_boxes``) is scored against the same label keys (``boxes``/``boxes_cls``) on the real rows only,
so the two box heads never see each other's rows. Without ``real`` every row counts as synthetic.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou, generalized_box_iou_loss

from .config import REAL_PREFIX, REAL_PROMPT_TASKS
from .tasks import SEGM_IGNORE, TASK_SPECS, TaskSpec, default_loss_weights


def _masked_mean(
    values: torch.Tensor, valid: torch.Tensor, count: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of ``values`` where ``valid``; 0 (with a zero gradient) when nothing is valid.

    ``count`` replaces the number of valid elements as the divisor (a whole batch's, for one of its
    micro-batches)."""
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / (valid.sum() if count is None else count).clamp(min=1)


def _sample_mask(valid_samples: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample bool ``[B]`` against ``like`` ``[B, ...]``."""
    return valid_samples.reshape(-1, *([1] * (like.dim() - 1)))


Count = torch.Tensor | None  # a whole batch's count of valid elements, or None: this batch's own


def depth_valid(target: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(target) & _sample_mask(sample_mask, target)


def depth_loss(
    pred: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor, max_depth: float, count: Count = None
) -> torch.Tensor:
    """MSE on ``[B, T, h, w]`` metres; the target is clipped at ``max_depth`` to focus on near surfaces."""
    valid = depth_valid(target, sample_mask)
    clean = torch.where(valid, target, torch.zeros_like(target)).clamp(max=max_depth)
    return _masked_mean((pred - clean) ** 2, valid, count)


def vector_valid(target: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """Elements of ``[..., 3]`` targets (normals, joints) whose vector is finite, shaped like the target."""
    return (torch.isfinite(target).all(-1, keepdim=True) & _sample_mask(sample_mask, target)).expand_as(
        target
    )


def normal_loss(
    pred: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor, count: Count = None
) -> torch.Tensor:
    """MSE on ``[B, T, h, w, 3]`` unit normals; a pixel counts when all three components are finite."""
    valid = vector_valid(target, sample_mask)
    clean = torch.where(valid, target, torch.zeros_like(target))
    return _masked_mean((pred - clean) ** 2, valid, count)


def segm_valid(target: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    return (target >= 0) & (target != SEGM_IGNORE) & _sample_mask(sample_mask, target)


def segm_loss(
    logits: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor, count: Count = None
) -> torch.Tensor:
    """Pixel cross-entropy; ``logits`` ``[B, K, T, h, w]``, ``target`` ``[B, T, h, w]`` (65535 = ignore)."""
    valid = segm_valid(target, sample_mask)
    clean = torch.where(valid, target, torch.zeros_like(target)).long()
    return _masked_mean(F.cross_entropy(logits, clean, reduction="none"), valid, count)


def pose_loss(
    pred: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor, count: Count = None
) -> torch.Tensor:
    """MSE on ``[B, T, J, 3]`` joints in metres; a joint counts when its row is finite."""
    valid = vector_valid(target, sample_mask)
    clean = torch.where(valid, target, torch.zeros_like(target))
    return _masked_mean((pred - clean) ** 2, valid, count)


def class_valid(target: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """Rows with a class label: an int label >= 0, or a soft row that is finite with a positive sum."""
    if target.is_floating_point():
        return sample_mask & torch.isfinite(target).all(-1) & (target.nan_to_num().sum(-1) > 0)
    return (target >= 0) & sample_mask


def action_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    sample_mask: torch.Tensor,
    label_smoothing: float = 0.0,
    count: Count = None,
) -> torch.Tensor:
    """Cross-entropy on ``[B, C]`` logits against int labels ``[B]`` (-1 = missing) or ``[B, C]`` soft ones.

    Soft targets (class probabilities per row, e.g. mixup's) count where ``sample_mask`` is set and the row is
    finite with a positive sum; an all-zero row is missing.
    """
    valid = class_valid(target, sample_mask)
    if target.is_floating_point():
        target = target.to(logits.dtype)
        clean = torch.where(valid[:, None], target, torch.zeros_like(target))
    else:
        clean = torch.where(valid, target, torch.zeros_like(target)).long()
    ce = F.cross_entropy(logits, clean, reduction="none", label_smoothing=label_smoothing)
    return _masked_mean(ce, valid, count)


def pnr_valid(target: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """Samples with a state change: a negative clip's target is all zeros (``pnr.npy``)."""
    return sample_mask & (torch.where(torch.isfinite(target), target, torch.zeros_like(target)).sum(-1) > 0)


def pnr_loss(
    logits: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor, count: Count = None
) -> torch.Tensor:
    """Cross-entropy over the frames, ``logits`` ``[B, T]`` against the one-hot ``target`` ``[B, T]``."""
    clean = torch.where(torch.isfinite(target), target, torch.zeros_like(target))
    ce = F.cross_entropy(logits.float(), clean.argmax(-1), reduction="none")
    return _masked_mean(ce, pnr_valid(target, sample_mask), count)


def ava_valid(target: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """Entries of ``[B, P, C]`` that are a real person's: a row with a negative entry is padding."""
    return ((target >= 0).all(-1, keepdim=True) & _sample_mask(sample_mask, target)).expand_as(target)


def ava_loss(
    logits: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor, count: Count = None
) -> torch.Tensor:
    """Binary cross-entropy per person and class (SlowFast's AVA loss), mean over the real persons' entries.

    ``logits`` and ``target`` are ``[B, P, C]``; a target row with a negative entry is padding (the collate
    pads with -1), and so are all rows of a sample whose ``ava`` bit is unset.
    """
    valid = ava_valid(target, sample_mask)
    clean = torch.where(valid, target.float(), torch.zeros_like(target, dtype=torch.float32))
    bce = F.binary_cross_entropy_with_logits(logits.float(), clean, reduction="none")
    return _masked_mean(bce, valid, count)


def box_real(
    target: torch.Tensor, target_cls: torch.Tensor | None, sample_mask: torch.Tensor
) -> torch.Tensor:
    """``[B, T, O]``: the real target boxes (finite rows, a class >= 0) of the rows ``sample_mask``."""
    real = torch.isfinite(target).all(-1) & _sample_mask(sample_mask, target[..., 0])
    return real & (target_cls >= 0) if target_cls is not None else real


def box_slot_weights(real: torch.Tensor, sample_mask: torch.Tensor, noobj_weight: float) -> torch.Tensor:
    """Each slot's weight in the slot classification: 1 for a real box, ``noobj_weight`` for padding."""
    return torch.where(real, 1.0, noobj_weight) * _sample_mask(sample_mask, real)


def box_counts(
    target: torch.Tensor,
    target_cls: torch.Tensor | None,
    sample_mask: torch.Tensor,
    noobj_weight: float = 0.1,
) -> dict[str, torch.Tensor]:
    """The divisors of ``box_losses``' terms, from the targets alone: coordinates, boxes, slot weights."""
    real = box_real(target, target_cls, sample_mask)
    out = {"l1": 4 * real.sum(), "giou": real.sum()}
    if target_cls is not None:
        out["cls"] = box_slot_weights(real, sample_mask, noobj_weight).sum()
    return out


def box_losses(
    boxes: torch.Tensor,
    logits: torch.Tensor | None,
    target: torch.Tensor,
    target_cls: torch.Tensor | None,
    sample_mask: torch.Tensor,
    noobj_weight: float = 0.1,
    counts: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """L1, GIoU and slot classification losses, slot ``i`` predicting target row ``i`` (the fixed order).

    ``boxes``/``target`` are ``[B, T, O, 4]`` xyxy in [0, 1]; target rows with a NaN are padding. L1 is the
    mean absolute coordinate error and GIoU the mean ``1 - GIoU`` over real boxes. With ``logits``
    ``[B, T, O, C + 1]``, every slot of a labelled sample is classified, padding slots as "no object" (the
    last class), down-weighted by ``noobj_weight`` as in DETR. ``counts`` (``box_counts`` of a whole batch)
    replace this batch's divisors.
    """
    counts = counts or {}
    real = box_real(target, target_cls, sample_mask)  # [B, T, O]
    # Padding rows get a harmless unit box so GIoU stays finite; where() then drops them.
    filler = torch.tensor([0.0, 0.0, 1.0, 1.0], device=target.device, dtype=target.dtype)
    clean = torch.where(real[..., None], target, filler)
    out = {
        "l1": _masked_mean((boxes - clean).abs(), real[..., None].expand_as(boxes), counts.get("l1")),
        "giou": _masked_mean(
            generalized_box_iou_loss(boxes, clean, reduction="none"), real, counts.get("giou")
        ),
    }
    if logits is not None and target_cls is not None:
        noobj = logits.shape[-1] - 1
        cls = torch.where(real, target_cls, torch.full_like(target_cls, noobj)).long()
        ce = F.cross_entropy(logits.flatten(0, -2), cls.flatten(), reduction="none").view_as(cls)
        weight = box_slot_weights(real, sample_mask, noobj_weight)
        total = weight.sum() if counts.get("cls") is None else counts["cls"]
        out["cls"] = (ce * weight).sum() / total.clamp(min=1e-6)
    return out


@torch.no_grad()
def match_boxes(
    boxes: torch.Tensor,
    logits: torch.Tensor | None,
    target: torch.Tensor,
    target_cls: torch.Tensor | None,
    l1_weight: float = 1.0,
    giou_weight: float = 1.0,
    cls_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hungarian matching (scipy) of predicted slots to real target boxes, per sample and frame.

    Returns the targets re-ordered into prediction-slot order (unmatched slots become padding: NaN rows and
    class -1), so ``box_losses`` can then be applied as in the fixed order.
    """
    from scipy.optimize import linear_sum_assignment  # optional dependency, only needed here

    lead = target.shape[:-2]
    num_slots = boxes.shape[-2]
    flat_pred, flat_tgt = boxes.reshape(-1, num_slots, 4), target.reshape(-1, target.shape[-2], 4)
    flat_cls = None if target_cls is None else target_cls.reshape(-1, target_cls.shape[-1])
    flat_prob = None if logits is None else logits.reshape(-1, num_slots, logits.shape[-1]).softmax(-1)
    matched = torch.full(
        (flat_pred.shape[0], num_slots, 4), float("nan"), dtype=target.dtype, device=target.device
    )
    matched_cls = torch.full((flat_pred.shape[0], num_slots), -1, dtype=torch.long, device=target.device)
    for i in range(flat_pred.shape[0]):
        real = torch.isfinite(flat_tgt[i]).all(-1)
        if flat_cls is not None:
            real &= flat_cls[i] >= 0
        gt = flat_tgt[i][real]
        if gt.shape[0] == 0:
            continue
        cost = l1_weight * torch.cdist(flat_pred[i].float(), gt.float(), p=1)
        cost = cost - giou_weight * generalized_box_iou(flat_pred[i].float(), gt.float())
        if flat_prob is not None and flat_cls is not None:
            cost = cost - cls_weight * flat_prob[i][:, flat_cls[i][real].long()]
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        rows_t, cols_t = (
            torch.as_tensor(rows, device=target.device),
            torch.as_tensor(cols, device=target.device),
        )
        matched[i, rows_t] = gt[cols_t]
        if flat_cls is not None:
            matched_cls[i, rows_t] = flat_cls[i][real][cols_t].long()
    out_cls = None if target_cls is None else matched_cls.reshape(*lead, num_slots)
    return matched.reshape(*lead, num_slots, 4), out_cls


class MultiTaskLoss(nn.Module):
    """``loss(predictions, targets) -> (total, {task: loss})``.

    ``predictions`` is ``PViT``'s output; ``targets`` the trainer's batch (see the package docstring).
    The per-task losses are unweighted; ``total = sum(weights[task] * loss[task])``, over the task table
    (``TASK_SPECS``) in its order. A task is scored when it is both predicted and present in ``targets``; a
    task predicted but absent from ``targets`` adds ``0 * prediction`` so its head stays in the autograd
    graph (DDP needs every parameter used). Weights default to each entry's ``weight``.
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        max_depth: float = 20.0,  # metres; depth targets beyond are clipped
        box_matching: str = "fixed",  # "fixed" (the paper's slot order) or "hungarian"
        box_l1_weight: float = 1.0,
        box_giou_weight: float = 1.0,
        box_cls_weight: float = 1.0,  # 0 disables the slot classification term
        box_noobj_weight: float = 0.1,  # weight of padding slots in the slot classification
        action_label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if box_matching not in ("fixed", "hungarian"):
            raise ValueError(f"box_matching must be 'fixed' or 'hungarian', got {box_matching!r}")
        self.weights = {**default_loss_weights(), **(weights or {})}
        self.max_depth, self.box_matching = max_depth, box_matching
        self.box_weights = (box_l1_weight, box_giou_weight, box_cls_weight)
        self.box_noobj_weight, self.action_label_smoothing = box_noobj_weight, action_label_smoothing
        self._counts: Mapping[str, torch.Tensor] = {}  # the divisors forward() was given, by term
        self._scoring = ""  # the entry forward() is scoring (its name, or real_<task>)

    def forward(
        self,
        predictions: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        counts: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``counts`` (``self.counts`` of a whole batch) divide each loss instead of this batch's own counts:
        the micro-batches of one step then sum to that batch's loss, term by term."""
        losses: dict[str, torch.Tensor] = {}
        anchor = next(iter(predictions.values()))
        total = anchor.new_zeros(())
        self._counts = counts or {}
        for spec, name, own in self._entries(predictions):
            if spec.target_keys[0] not in targets:
                total = total + 0.0 * own[spec.pred_keys[0]].sum()  # keep the head in the graph, contribute 0
                continue
            self._scoring = name
            losses[name] = spec.loss(own, targets, self._rows(spec, name, targets), self)
            total = total + self.weight(name) * losses[name]
        self._counts, self._scoring = {}, ""
        return total, losses

    def weight(self, name: str) -> float:
        """The lambda of loss ``name``. §A.2 gives a real head no lambda of its own: ``real_boxes`` takes
        ``boxes``'s unless the weights name it."""
        return self.weights.get(name, self.weights.get(name.removeprefix(REAL_PREFIX), 1.0))

    def _entries(self, predictions: Mapping[str, torch.Tensor]) -> Iterator[tuple[TaskSpec, str, Mapping]]:
        """(entry, loss name, its predictions under the entry's keys) of every predicted task: the table's
        entries, then the real-world prompts' heads (same labels, real rows only; real_boxes -> boxes)."""
        for spec in TASK_SPECS.values():
            if spec.pred_keys[0] in predictions:
                yield spec, spec.name, predictions
        for task in REAL_PROMPT_TASKS:
            spec = TASK_SPECS[task]
            if REAL_PREFIX + spec.pred_keys[0] in predictions:
                own = {
                    k: predictions[REAL_PREFIX + k] for k in spec.pred_keys if REAL_PREFIX + k in predictions
                }
                yield spec, REAL_PREFIX + task, own

    def _rows(self, spec: TaskSpec, name: str, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self._sample_mask(spec, targets, stream="real" if name != spec.name else "synthetic")

    def counts(self, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each loss term's count of valid elements in ``targets`` (``"depth"``, ``"boxes.l1"``, ...), every
        entry's and every real-world head's, from the targets alone: a whole batch's counts are known before
        any of its micro-batches runs (and are the sums of theirs)."""
        out: dict[str, torch.Tensor] = {}
        names = [*TASK_SPECS, *(REAL_PREFIX + task for task in REAL_PROMPT_TASKS)]
        for name in names:
            spec = TASK_SPECS[name.removeprefix(REAL_PREFIX)]
            if spec.count is None or spec.target_keys[0] not in targets:
                continue
            for term, count in spec.count(targets, self._rows(spec, name, targets), self).items():
                out[f"{name}.{term}" if term else name] = count
        return out

    def count(self, term: str = "") -> torch.Tensor | None:
        """The divisor ``forward`` was given for a term of the entry it is scoring; None: the batch's own."""
        key = f"{self._scoring}.{term}" if term else self._scoring
        return self._counts.get(key)

    def _sample_mask(
        self, spec: TaskSpec, targets: Mapping[str, torch.Tensor], stream: str = "synthetic"
    ) -> torch.Tensor:
        """Rows whose label counts: the task's mask column, and for a synthetic task (or a real task's head,
        ``stream="real"``) only the rows of that stream when ``targets["real"]`` says which rows are real."""
        target = targets[spec.target_keys[0]]
        if "mask" not in targets:
            rows = torch.ones(target.shape[0], dtype=torch.bool, device=target.device)
        else:
            # The mask may carry more columns than TASKS (downstream tasks append bits); ours come first.
            rows = targets["mask"][:, spec.column].to(device=target.device, dtype=torch.bool)
        real = targets.get("real")
        if stream == "real":
            return rows & real.to(rows.device, torch.bool) if real is not None else torch.zeros_like(rows)
        if spec.synthetic and real is not None:
            rows = rows & ~real.to(rows.device, torch.bool)
        return rows

    def box_loss(
        self,
        predictions: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        sample_mask: torch.Tensor,
    ) -> torch.Tensor:
        """The box loss of ``boxes``/``boxes_cls`` with this criterion's matching and term weights."""
        l1_w, giou_w, cls_w = self.box_weights
        boxes, target = predictions["boxes"].float(), targets["boxes"].float()
        logits = predictions.get("boxes_cls") if cls_w > 0 else None
        target_cls = targets.get("boxes_cls")
        if self.box_matching == "hungarian":
            # Rows this head does not score are padding to the matcher too: another head's rows (real vs
            # synthetic boxes) may carry class ids outside this head's box space.
            rows = _sample_mask(sample_mask, target[..., 0])
            target = torch.where(rows[..., None], target, torch.full_like(target, float("nan")))
            if target_cls is not None:
                target_cls = torch.where(rows, target_cls, torch.full_like(target_cls, -1))
            target, target_cls = match_boxes(boxes, logits, target, target_cls, l1_w, giou_w, cls_w)
        counts = {term: c for term in ("l1", "giou", "cls") if (c := self.count(term)) is not None}
        parts = box_losses(boxes, logits, target, target_cls, sample_mask, self.box_noobj_weight, counts)
        loss = l1_w * parts["l1"] + giou_w * parts["giou"]
        return loss + cls_w * parts["cls"] if "cls" in parts else loss

"""pvit: PromptonomyViT (Herzig et al., WACV 2024) on torchvision's video MViTv2-S.

Build a model, run it, score it::

    import pvit

    model = pvit.build_model("tiny", "pvit", num_classes=174, num_seg_classes=40, num_box_classes=10)
    preds = model(video)                       # video: (B, 3, T, H, W) float, Kinetics-normalised
    loss_fn = pvit.MultiTaskLoss()             # weights default to the paper's lambdas
    total, per_task = loss_fn(preds, targets)  # targets: dict of tensors + "mask" [B, len(TASKS)]

``preds`` keys: ``action`` ``[B, C]``; ``depth`` ``[B, T, h, w]``; ``normal`` ``[B, T, h, w, 3]``;
``segm`` logits ``[B, K, T, h, w]``; ``pose3d`` ``[B, T, 25, 3]``; ``boxes`` ``[B, T, O, 4]`` xyxy in [0, 1];
``boxes_cls`` logits ``[B, T, O, num_box_classes + 1]`` (last = no object). ``h, w = H, W // label_stride``.
With ``downstream=("oscc", "pnr", "ava")`` (any subset, any mode): ``oscc`` logits ``[B, 2]``; ``pnr`` logits
``[B, T]`` over the frames; ``ava`` logits ``[B, P, 60]`` for ``model(video, boxes)``, ``boxes`` ``[B, P, 4]``
xyxy normalised to the full frame, NaN rows padding (``pad_per_clip``; ``ava_training_boxes`` adds the
IoU > 0.9 proposals in training).

``targets`` (missing labels filled with placeholders): ``action`` int64 ``[B]`` (-1 missing); ``depth``
``[B, T, h, w]`` metres, NaN invalid; ``normal`` ``[B, T, h, w, 3]`` OpenCV camera frame, NaN invalid;
``segm`` int64 ``[B, T, h, w]``, 65535 ignore; ``pose3d`` ``[B, T, 25, 3]``, NaN row = missing joint;
``boxes`` ``[B, T, O, 4]``, NaN rows padding; ``boxes_cls`` int64 ``[B, T, O]``, -1 padding; ``mask`` bool
``[B, len(TASKS)]`` per-sample availability in ``TASKS`` order (extra trailing columns are ignored);
``oscc`` int64 ``[B]`` (-1 missing); ``pnr`` float ``[B, T]`` one-hot (zeros = no state change, not scored);
``ava`` ``[B, P, 60]`` multi-hot, -1 rows padding.

Modes: ``pvit``, ``mt``, ``vpt``, ``plain`` (see ``PViT``). Presets: ``mvit_v2_s`` (the paper's, K400
weights load with ``load_kinetics_pretrained``) and ``tiny`` (CPU tests). ``model.no_weight_decay()`` names
the prompt, CLS and relative-position parameters. ``python -m pvit.bench`` times pvit against plain.
"""

from .backbone import Features, PromptMViT
from .config import MODES, PRESETS, PViTConfig, get_config
from .heads import ava_training_boxes, pad_per_clip
from .losses import DEFAULT_LOSS_WEIGHTS, MultiTaskLoss, ava_loss, box_losses, match_boxes, pnr_loss
from .model import LoadReport, PViT, PViTFeatures, build_model, load_kinetics_pretrained
from .tasks import (
    DENSE_TASKS,
    DOWNSTREAM_TASKS,
    NUM_AVA_CLASSES,
    SEGM_IGNORE,
    SYNTHETIC_TASKS,
    TASK_INDEX,
    TASKS,
    TOKEN_TASKS,
)

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "DENSE_TASKS",
    "DOWNSTREAM_TASKS",
    "MODES",
    "NUM_AVA_CLASSES",
    "PRESETS",
    "SEGM_IGNORE",
    "SYNTHETIC_TASKS",
    "TASKS",
    "TASK_INDEX",
    "TOKEN_TASKS",
    "Features",
    "LoadReport",
    "MultiTaskLoss",
    "PViT",
    "PViTConfig",
    "PViTFeatures",
    "PromptMViT",
    "ava_loss",
    "ava_training_boxes",
    "box_losses",
    "build_model",
    "get_config",
    "load_kinetics_pretrained",
    "match_boxes",
    "pad_per_clip",
    "pnr_loss",
]

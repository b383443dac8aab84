"""pvit: PromptonomyViT (Herzig et al., WACV 2024) on torchvision's video MViTv2-S.

Build a model, run it, score it::

    import pvit

    model = pvit.build_model("tiny", "pvit", num_classes=174, num_seg_classes=40, num_box_classes=10)
    preds = model(video)                       # video: (B, 3, T, H, W) float, Kinetics-normalised:
                                               # (rgb / 255 - KINETICS_MEAN) / KINETICS_STD per channel
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

Modes: ``pvit``, ``mt``, ``vpt``, ``np``, ``plain``; ablation switches ``one_prompt``, ``freeze_backbone``,
``tasks`` (``"S1"``, ``"S2"``), ``real_tasks`` (see ``PViT``). Presets: ``mvit_v2_s`` (the paper's, K400
weights load with ``load_kinetics_pretrained``) and ``tiny`` (CPU tests). ``load_pretrained(model, "k400")``
fetches torchvision's K400 weights by name into the torch hub cache. ``model.no_weight_decay()`` names
the prompt, CLS and relative-position parameters. ``python -m pvit.bench`` times pvit against plain.

Tasks are one table (``TASK_SPECS``, built-in entries in ``pvit.registry``): each ``TaskSpec`` names its kind,
head factory, head call, loss, default weight and keys; the model and ``MultiTaskLoss`` iterate it, and
``register_task`` adds one.
"""

from .backbone import Features, PromptMViT
from .config import MODES, PRESETS, PViTConfig, get_config
from .heads import HeadContext, HeadInput, ava_training_boxes, pad_per_clip
from .losses import MultiTaskLoss, ava_loss, box_losses, match_boxes, pnr_loss
from .model import LoadReport, PViT, PViTFeatures, build_model, load_kinetics_pretrained
from .normalize import KINETICS_MEAN, KINETICS_STD
from .registry import DEFAULT_LOSS_WEIGHTS
from .tasks import (
    DENSE_TASKS,
    DOWNSTREAM_TASKS,
    NUM_AVA_CLASSES,
    SEGM_IGNORE,
    SYNTHETIC_TASKS,
    TASK_INDEX,
    TASK_SPECS,
    TASKS,
    TOKEN_TASKS,
    TaskSpec,
    register_task,
    task_names,
    unregister_task,
)
from .weights import PRETRAINED_WEIGHTS, hub_cache_path, load_pretrained, named_state_dict, resolve_pretrained

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "DENSE_TASKS",
    "DOWNSTREAM_TASKS",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "MODES",
    "NUM_AVA_CLASSES",
    "PRESETS",
    "PRETRAINED_WEIGHTS",
    "SEGM_IGNORE",
    "SYNTHETIC_TASKS",
    "TASKS",
    "TASK_INDEX",
    "TASK_SPECS",
    "TOKEN_TASKS",
    "Features",
    "HeadContext",
    "HeadInput",
    "LoadReport",
    "MultiTaskLoss",
    "PViT",
    "PViTConfig",
    "PViTFeatures",
    "PromptMViT",
    "TaskSpec",
    "ava_loss",
    "ava_training_boxes",
    "box_losses",
    "build_model",
    "get_config",
    "hub_cache_path",
    "load_kinetics_pretrained",
    "load_pretrained",
    "match_boxes",
    "named_state_dict",
    "pad_per_clip",
    "pnr_loss",
    "register_task",
    "resolve_pretrained",
    "task_names",
    "unregister_task",
]

"""``PViT``: the prompt-aware MViTv2 with its task heads, the paper's baselines as modes, and K400 loading."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .backbone import Features, PromptMViT, spatial_stride_until
from .config import REAL_PREFIX, PViTConfig, get_config, resolve_tasks
from .heads import HeadContext, HeadInput, call_token_head
from .registry import BUILTIN_TASKS  # noqa: F401 - fills the task table the model builds its heads from
from .tasks import SYNTHETIC_TASKS, TASK_SPECS


class PViT(nn.Module):
    """PromptonomyViT and its baselines, chosen by ``cfg.mode``:

    - ``pvit``: ``prompts_per_task`` prompt tokens per task ride next to CLS; each task head reads its
      prompts' (averaged) output, the action head reads CLS.
    - ``mt``: no prompts; every task head reads the CLS output (the paper's "MViTv2 MT").
    - ``vpt``: prompts, no task heads, backbone frozen and kept in eval mode; only the prompts and the action
      head train (the paper's "MViTv2 VPT", real data only). Same as ``np`` with ``freeze_backbone``.
    - ``np``: "neutral prompts": the prompts of ``pvit`` (one group per task), no task heads, so no synthetic
      supervision; the whole model trains on real data only.
    - ``plain``: torchvision's MViTv2 with a new action head.

    Ablation switches (paper Table 4a, §A.2), orthogonal to the mode:

    - ``one_prompt`` (OP; pvit, vpt, np): one group of ``prompts_per_task`` tokens shared by every synthetic
      task; every task head reads that one token.
    - ``freeze_backbone``: the encoder is frozen and runs in eval mode except the prompts and the action head;
      task and downstream heads still train. With ``pvit`` this is the paper's "PViT VPT" row.
    - ``tasks``: the synthetic subset with a prompt and a head; other tasks get neither (and so no loss).
    - ``real_tasks`` (pvit; ``("boxes",)``): a real-stream label with its own prompt group (after the
      synthetic ones) and its own head, predicting ``real_boxes``/``real_boxes_cls`` (§A.2: Something-Else's
      hand/object boxes); ``MultiTaskLoss`` scores it on real rows only.

    ``forward(video)`` takes ``(B, 3, T, H, W)`` normalised clips and returns predictions keyed by task:
    ``action`` ``(B, num_classes)``, ``depth`` ``(B, T, h, w)``, ``normal`` ``(B, T, h, w, 3)``,
    ``segm`` ``(B, num_seg_classes, T, h, w)``, ``pose3d`` ``(B, T, J, 3)``, ``boxes`` ``(B, T, O, 4)`` and
    ``boxes_cls`` ``(B, T, O, num_box_classes + 1)``, with ``h, w = H, W // label_stride``.

    Downstream heads (``cfg.downstream``, any mode, trainable in ``vpt`` too) add ``oscc`` ``(B, 2)``
    logits (CLS), ``pnr`` ``(B, T)`` per-frame keyframe logits and ``ava`` ``(B, P, num_ava_classes)``
    logits (sigmoid = scores) for ``forward(video, boxes)``'s person boxes ``(B, P, 4)``, xyxy normalised
    to the full input frame, NaN rows padding (``heads.pad_per_clip``). Without ``boxes``, ``ava`` is
    ``(B, 0, classes)``, which keeps the head in the autograd graph for DDP.
    """

    def __init__(self, cfg: PViTConfig) -> None:
        super().__init__()
        cfg.check_heads()
        self.cfg = cfg
        self.backbone = PromptMViT(cfg, cfg.num_prompts)
        # Heads come from the task table (``pvit.tasks.TASK_SPECS``), whatever the task.
        dense = any(TASK_SPECS[t].kind == "dense" for t in cfg.head_tasks)
        self.taps = cfg.taps if dense else ()
        self.heads = nn.ModuleDict({task: self._make_head(task) for task in cfg.head_tasks})
        # Real-world prompts' heads, keyed by their prediction name (``real_boxes``); only boxes for now.
        self.real_heads = nn.ModuleDict(
            {REAL_PREFIX + t: self._make_head(t, real=True) for t in cfg.real_tasks}
        )
        self.downstream = nn.ModuleDict({task: self._make_head(task) for task in cfg.downstream})
        if cfg.frozen:
            for name, p in self.backbone.named_parameters():
                p.requires_grad_(name == "prompt_tokens" or name.startswith("head."))

    def _make_head(self, task: str, real: bool = False) -> nn.Module:
        """``task``'s head, from its table entry's factory."""
        factory = TASK_SPECS[task].head
        if factory is None:
            raise ValueError(f"task {task!r} has no head of its own (the action head is the backbone's)")
        channels = self.backbone.block_channels
        ctx = HeadContext(
            cfg=self.cfg,
            dim=channels[-1],
            tap_channels=tuple(channels[i] for i in self.taps),
            tap_strides=tuple(spatial_stride_until(self.cfg, i) for i in self.taps),
            real=real,
        )
        return factory(ctx)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per backbone block (timm's method; ``PViTConfig.act_checkpoint`` sets it
        at construction): each block's activations are recomputed in backward instead of kept, which trades
        about one extra forward of the encoder for most of its activation memory. Heads are not recomputed."""
        self.backbone.set_grad_checkpointing(enable)

    def train(self, mode: bool = True) -> PViT:
        super().train(mode)
        if self.cfg.frozen:
            # The frozen encoder runs deterministically (no drop-path); its classifier still trains.
            self.backbone.eval()
            self.backbone.head.train(mode)
        return self

    def forward_features(self, video: torch.Tensor) -> PViTFeatures:
        """Encoder outputs plus one token per task: its prompt group's mean (pvit, vpt, np; the one shared
        group with ``one_prompt``) or CLS (mt). Real tasks' tokens are keyed ``real_<task>``."""
        cfg = self.cfg
        feats = self.backbone.forward_features(video, self.taps)
        tokens: dict[str, torch.Tensor] = {}
        if cfg.mode == "mt":
            tokens = {task: feats.cls for task in cfg.tasks}
        elif cfg.prompt_groups > 0:
            b, _, c = feats.prompts.shape
            groups = feats.prompts.reshape(b, cfg.prompt_groups, cfg.prompts_per_task, c).mean(2)
            synthetic = cfg.prompt_groups - len(cfg.real_tasks)
            tokens = {task: groups[:, 0 if cfg.one_prompt else i] for i, task in enumerate(cfg.tasks)}
            tokens.update({REAL_PREFIX + t: groups[:, synthetic + i] for i, t in enumerate(cfg.real_tasks)})
        return PViTFeatures(feats.cls, feats.prompts, feats.patches, feats.thw, feats.taps, tokens)

    def label_size(self, video: torch.Tensor) -> tuple[int, int, int]:
        """(T, h, w) of the label maps for ``video``: full T, H and W divided by ``label_stride``."""
        t, h, w = video.shape[2:]
        return t, h // self.cfg.label_stride, w // self.cfg.label_stride

    def forward_head(
        self,
        feats: PViTFeatures,
        label_size: tuple[int, int, int],
        boxes: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        preds = {"action": self.backbone.head(feats.cls)}  # the backbone's classifier (K400 weights load)
        for heads, prefix in ((self.heads, ""), (self.real_heads, REAL_PREFIX), (self.downstream, "")):
            for name, head in heads.items():
                spec = TASK_SPECS[name.removeprefix(prefix)]
                x = HeadInput(feats, feats.task_tokens.get(name), label_size, boxes)
                out = (spec.call or call_token_head)(head, x)
                preds.update({prefix + key: value for key, value in out.items()})  # boxes -> real_boxes
        return preds

    def forward(self, video: torch.Tensor, boxes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Predictions keyed by task; ``boxes`` ``(B, P, 4)`` (NaN rows padding) feed the AVA head."""
        if boxes is not None and (boxes.dim() != 3 or boxes.shape[::2] != (video.shape[0], 4)):
            raise ValueError(f"boxes must be (B, P, 4) for B = {video.shape[0]}, got {tuple(boxes.shape)}")
        return self.forward_head(self.forward_features(video), self.label_size(video), boxes)

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exempt from weight decay: prompts, CLS and relative positions (timm's hook)."""
        return {
            name
            for name, _ in self.named_parameters()
            if name.endswith(("prompt_tokens", "pos_encoding.class_token")) or ".rel_pos_" in name
        }


@dataclass
class PViTFeatures(Features):
    """``Features`` plus ``task_tokens``: task name -> ``(B, C)`` token its head reads."""

    task_tokens: dict[str, torch.Tensor] = field(default_factory=dict)


def build_model(
    preset: str = "tiny",
    mode: str = "pvit",
    *,
    num_classes: int,
    num_seg_classes: int | None = None,
    num_box_slots: int = 8,
    num_box_classes: int | None = None,
    prompts_per_task: int = 1,
    tasks: tuple[str, ...] | str = SYNTHETIC_TASKS,
    one_prompt: bool = False,
    freeze_backbone: bool = False,
    real_tasks: tuple[str, ...] = (),
    num_real_box_classes: int | None = None,
    **overrides: object,
) -> PViT:
    """The one constructor. ``preset`` is a key of ``PRESETS``; ``overrides`` replace any config field.

    ``num_seg_classes``/``num_box_classes`` come from the unified label spaces and are required only when
    ``segm``/``boxes`` get a head (modes ``pvit`` and ``mt``); ``num_real_box_classes`` is the real stream's
    box space (``real_tasks=("boxes",)``; default ``num_box_classes``). ``tasks`` takes task names and the
    paper's named subsets (``"S1"``, ``"S2"``, see ``resolve_tasks``). The ablation switches ``one_prompt``,
    ``freeze_backbone`` and ``real_tasks`` are described in ``PViT``'s docstring.
    """
    cfg = get_config(
        preset,
        mode=mode,
        num_classes=num_classes,
        num_seg_classes=num_seg_classes or 0,
        num_box_slots=num_box_slots,
        num_box_classes=num_box_classes or 0,
        prompts_per_task=prompts_per_task,
        tasks=resolve_tasks(tasks),
        one_prompt=one_prompt,
        freeze_backbone=freeze_backbone,
        real_tasks=tuple(real_tasks),
        num_real_box_classes=num_real_box_classes or 0,
        **overrides,
    )
    return PViT(cfg)


@dataclass
class LoadReport:
    """What ``load_kinetics_pretrained`` did, with names in the loaded model's namespace."""

    new_keys: list[str]  # parameters/buffers not in the checkpoint (prompts, new action head, task heads)
    dropped_keys: list[str]  # checkpoint entries deliberately not loaded (the K400 classifier)


def _read_state_dict(source: str | os.PathLike | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = source if isinstance(source, dict) else torch.load(source, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict", "model_state"):  # common training-checkpoint wrappers
        if wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_kinetics_pretrained(
    model: PViT | PromptMViT,
    path_or_state_dict: str | os.PathLike | dict[str, torch.Tensor],
    keep_head: bool = False,
) -> LoadReport:
    """Load torchvision's K400 ``mvit_v2_s`` checkpoint (``mvit_v2_s-ae3be167.pth`` or a state dict).

    The 400-class classifier is dropped and the model's own (``num_classes``) head is freshly initialised,
    unless ``keep_head``. Raises if the checkpoint has keys the model lacks or shapes differ (the model must
    be built at 224 x 16, as the ``mvit_v2_s`` preset is; it still runs at any clip size).
    """
    state = _read_state_dict(path_or_state_dict)
    backbone = model.backbone if isinstance(model, PViT) else model
    prefix = "backbone." if isinstance(model, PViT) else ""
    dropped = [] if keep_head else sorted(k for k in state if k.startswith("head."))
    state = {k: v for k, v in state.items() if k not in dropped}
    result = backbone.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"checkpoint keys the backbone does not have: {result.unexpected_keys}")
    if not keep_head:
        linear = backbone.head[1]
        nn.init.trunc_normal_(linear.weight, std=0.02)  # torchvision's init for Linear layers
        nn.init.zeros_(linear.bias)
    new = [prefix + k for k in result.missing_keys]
    if isinstance(model, PViT):
        new += [k for k in model.state_dict() if not k.startswith("backbone.")]
    return LoadReport(new_keys=sorted(new), dropped_keys=dropped)

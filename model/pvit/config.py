"""Model configuration: one dataclass plus named presets (``PRESETS``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .tasks import NUM_AVA_CLASSES, SYNTHETIC_KINDS, SYNTHETIC_TASKS, task_names

MODES: tuple[str, ...] = ("pvit", "mt", "vpt", "np", "plain")
PROMPT_MODES: tuple[str, ...] = ("pvit", "vpt", "np")  # modes whose sequence carries task prompts
REAL_PROMPT_TASKS: tuple[str, ...] = ("boxes",)  # real-stream labels that may get their own prompt (§A.2)
REAL_PREFIX = "real_"  # a real task's prediction keys: boxes -> real_boxes, boxes_cls -> real_boxes_cls
# Attention formulations (pvit.attention): auto = folded on CUDA, sdpa elsewhere (see resolve_attention).
ATTENTION: tuple[str, ...] = ("auto", "sdpa", "folded", "flex", "explicit")
# q/k/v pooling formulations (pvit.pooling): auto = channels_last on CUDA, conv elsewhere (resolve_pool).
POOLING: tuple[str, ...] = ("auto", "conv", "channels_last", "shifts")
# The paper's named task subsets (Fig. 4, Table 4c).
TASK_SUBSETS: dict[str, tuple[str, ...]] = {
    "S1": ("boxes", "segm", "depth"),
    "S2": ("pose3d", "normal", "segm"),
}


def resolve_tasks(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Task names and named subsets (``"S1"``, ``"depth,normal"``, ``("S2", "boxes")``) as synthetic tasks
    in ``SYNTHETIC_TASKS`` order (then registered ones), each once; an unknown name is a one-line
    ``ValueError``."""
    synthetic = task_names(*SYNTHETIC_KINDS)
    parts = names.split(",") if isinstance(names, str) else [p for n in names for p in str(n).split(",")]
    chosen: set[str] = set()
    for part in (p.strip() for p in parts if p.strip()):
        if part in TASK_SUBSETS:
            chosen.update(TASK_SUBSETS[part])
        elif part in synthetic:
            chosen.add(part)
        else:
            known = ", ".join((*synthetic, *TASK_SUBSETS))
            raise ValueError(f"unknown task {part!r}; choose from {known}")
    return tuple(t for t in synthetic if t in chosen)


@dataclass(frozen=True)
class PViTConfig:
    """Everything that fixes the model's parameters. Sizes are construction sizes, not run-time limits."""

    # --- backbone (MViTv2) ---
    img_size: int = 224  # construction H = W in px; sizes the rel-pos tables (K400 shapes), any input runs
    num_frames: int = 16  # construction clip length T; also the frame count the FC heads predict
    embed_dim: int = 96  # width of stage 1; every later stage doubles it
    depths: tuple[int, ...] = (1, 2, 11, 2)  # blocks per stage; stages 2.. start with a 2x spatial q-pool
    num_heads: tuple[int, ...] = (1, 2, 4, 8)  # attention heads per stage
    kv_stride: int = 8  # spatial k/v pool stride in stage 1, divided by each q-pool (MViTv2 adaptive kv)
    drop_path: float = 0.2  # stochastic depth of the last block, linear from 0 over blocks
    head_dropout: float = 0.5  # dropout before the action classifier (torchvision's head[0])
    attention: str = "auto"  # one of ATTENTION (same weights, a run-time switch): sdpa = SDPA with the
    #                          rel-pos bias as its mask; folded = the bias folded into q and k as extra
    #                          channels, one mask-free SDPA; flex = FlexAttention adding the bias in
    #                          score_mod (no CPU backward); explicit = torchvision's matmul, softmax, matmul
    pool_impl: str = "auto"  # one of POOLING, how the 3x3x3 depthwise q/k/v pooling runs (same weights):
    #                          conv = nn.Conv3d on a contiguous copy; channels_last = on the tokens'
    #                          own channels-last layout (cuDNN on CUDA); shifts = 27 shifted multiply-adds
    act_checkpoint: bool = False  # recompute each block's activations in backward (timm's
    #                               set_grad_checkpointing, PySlowFast MODEL.ACT_CHECKPOINT)
    num_classes: int = 400  # action classes of the real (downstream) task

    # --- prompts and task heads ---
    mode: str = "pvit"  # one of MODES: pvit | mt | vpt | np | plain (see PViT's docstring)
    tasks: tuple[str, ...] = (
        SYNTHETIC_TASKS  # synthetic tasks with a prompt (pvit, vpt, np) and/or a head (pvit, mt)
    )
    prompts_per_task: int = 1  # prompt tokens per task; their outputs are averaged into the task token
    one_prompt: bool = False  # OP (paper Table 4a): one prompt group shared by every synthetic task
    freeze_backbone: bool = (
        False  # backbone frozen, in eval mode, but prompts and action head; vpt implies it
    )
    real_tasks: tuple[str, ...] = ()  # real-stream tasks with their own prompt and head (pvit; §A.2): "boxes"
    num_real_box_classes: int = 0  # classes of the real stream's boxes (real_tasks); 0 = num_box_classes
    prompt_init_std: float = 0.02  # trunc-normal std of the prompt tokens, like torchvision's class token
    num_seg_classes: int = 0  # segmentation classes of the unified label space; required if "segm" in tasks
    num_box_slots: int = 8  # O, box slots per frame
    num_box_classes: int = 1  # object classes; the box head adds one "no object" logit after them
    num_joints: int = 25  # 3D pose joints (Kinect V2)
    label_stride: int = 4  # label map = input H, W // label_stride (224 -> 56); label T = input T
    dense_taps: tuple[int, ...] | None = None  # block indices feeding the dense heads; None = last block of
    #                                            each of the last three stages
    dense_dim: int = 64  # channels of each upsampled tap and of the projected task token
    dense_hidden: int = 256  # hidden width of the per-pixel MLP of a dense head
    dense_dropout: float = 0.1  # dropout on the upsampled taps

    # --- downstream heads besides action (any mode) ---
    downstream: tuple[str, ...] = ()  # subset of DOWNSTREAM_TASKS: oscc (Ego4D), pnr (Ego4D), ava (AVA)
    num_ava_classes: int = NUM_AVA_CLASSES  # AVA action classes (the 60 evaluated ones)
    ava_roi_size: int = 7  # RoIAlign output side on the last stage (SlowFast DETECTION.ROI_XFORM_RESOLUTION)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} not in {MODES}")
        if self.attention not in ATTENTION:
            raise ValueError(f"attention {self.attention!r} not in {ATTENTION}")
        if self.pool_impl not in POOLING:
            raise ValueError(f"pool_impl {self.pool_impl!r} not in {POOLING}")
        synthetic = task_names(*SYNTHETIC_KINDS)  # the task table's (pvit.tasks.TASK_SPECS)
        unknown = set(self.tasks) - set(synthetic)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; synthetic tasks are {synthetic}")
        if len(self.depths) != len(self.num_heads) or not self.depths or min(self.depths) < 1:
            raise ValueError("depths and num_heads need one positive entry per stage")
        if self.prompts_per_task < 1:
            raise ValueError(f"prompts_per_task must be >= 1, got {self.prompts_per_task}")
        if self.prompts_per_task > 1 and self.mode not in PROMPT_MODES:
            raise ValueError(
                f"prompts_per_task > 1 needs a mode with prompts ({', '.join(PROMPT_MODES)}), not {self.mode}"
            )
        if self.one_prompt and self.mode not in PROMPT_MODES:
            raise ValueError(
                f"one_prompt needs a mode with prompts ({', '.join(PROMPT_MODES)}), not {self.mode}"
            )
        unknown_real = sorted(set(self.real_tasks) - set(REAL_PROMPT_TASKS))
        if unknown_real:
            raise ValueError(f"unknown real_tasks {unknown_real}; supported: {REAL_PROMPT_TASKS}")
        if self.real_tasks and self.mode != "pvit":
            raise ValueError(f"real_tasks (prompts for real-world labels) need mode pvit, not {self.mode}")
        if self.has_heads and set(self.tasks) & set(task_names("dense")) and len(self.depths) < 3:
            raise ValueError("dense heads need at least three stages")
        if self.label_stride < 1 or self.num_classes < 1:
            raise ValueError("label_stride and num_classes must be >= 1")
        downstream = task_names("downstream")
        unknown_downstream = sorted(set(self.downstream) - set(downstream))
        if unknown_downstream:
            raise ValueError(f"unknown downstream heads {unknown_downstream}; choose from {downstream}")
        if self.num_ava_classes < 1 or self.ava_roi_size < 1:
            raise ValueError("num_ava_classes and ava_roi_size must be >= 1")

    def check_heads(self) -> None:
        """Checks the label-space sizes; run when a model is built (presets leave them unset)."""
        if self.has_heads and "segm" in self.tasks and self.num_seg_classes < 1:
            raise ValueError("num_seg_classes must be set (from the label space) when 'segm' is a task")
        box_classes = []
        if self.has_heads and "boxes" in self.tasks:
            box_classes.append(self.num_box_classes)
        if "boxes" in self.real_tasks:
            box_classes.append(self.num_real_box_classes or self.num_box_classes)
        if box_classes and (self.num_box_slots < 1 or min(box_classes) < 1):
            raise ValueError("num_box_slots and num_box_classes must be >= 1 when 'boxes' is a task")

    @property
    def num_blocks(self) -> int:
        return sum(self.depths)

    @property
    def prompt_groups(self) -> int:
        """Groups of ``prompts_per_task`` prompt tokens: one per synthetic task (one in all with
        ``one_prompt``), then one per real task; 0 in modes without prompts."""
        if self.mode not in PROMPT_MODES:
            return 0
        synthetic = min(len(self.tasks), 1) if self.one_prompt else len(self.tasks)
        return synthetic + len(self.real_tasks)

    @property
    def num_prompts(self) -> int:
        """Prompt tokens in the sequence (pvit, vpt and np only)."""
        return self.prompt_groups * self.prompts_per_task

    @property
    def has_heads(self) -> bool:
        """Whether synthetic task heads exist (pvit: on prompts, mt: on CLS); vpt and np have none."""
        return self.mode in ("pvit", "mt") and bool(self.tasks)

    @property
    def frozen(self) -> bool:
        """Whether the backbone is frozen (``freeze_backbone``, or mode vpt, which implies it)."""
        return self.freeze_backbone or self.mode == "vpt"

    @property
    def head_tasks(self) -> tuple[str, ...]:
        return self.tasks if self.has_heads else ()

    @property
    def taps(self) -> tuple[int, ...]:
        """Block indices tapped for the dense heads (one per each of the last three stages)."""
        if self.dense_taps is not None:
            return tuple(self.dense_taps)
        ends = [sum(self.depths[: i + 1]) - 1 for i in range(len(self.depths))]
        return tuple(ends[-3:])


PRESETS: dict[str, PViTConfig] = {
    # torchvision's mvit_v2_s (K400 weights load); taps = the paper's layers 2, 12, 15 (0-based blocks).
    "mvit_v2_s": PViTConfig(dense_taps=(2, 12, 15)),
    # A CPU-test model: 4 blocks, widths 16..128, built for 4 x 64 x 64 clips.
    "tiny": PViTConfig(
        img_size=64,
        num_frames=4,
        embed_dim=16,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 4, 8),
        kv_stride=4,
        drop_path=0.0,
        head_dropout=0.0,
        dense_dim=16,
        dense_hidden=32,
        dense_dropout=0.0,
    ),
}


def get_config(preset: str = "tiny", **overrides: Any) -> PViTConfig:
    """A preset with fields replaced by ``overrides`` (validated again)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[preset], **overrides)


__all__ = [
    "ATTENTION",
    "MODES",
    "POOLING",
    "PRESETS",
    "PROMPT_MODES",
    "REAL_PREFIX",
    "REAL_PROMPT_TASKS",
    "TASK_SUBSETS",
    "PViTConfig",
    "get_config",
    "resolve_tasks",
]

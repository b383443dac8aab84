"""MViTv2-S's augmentation of the real stream, from timm: RandAugment, random erasing, mixup/cutmix.

The values PySlowFast trains MViTv2-S 16x4 with (facebookresearch/SlowFast `configs/SSv2/MVITv2_S_16x4.yaml`,
keys in `slowfast/config/defaults.py`): `AUG.AA_TYPE: rand-m7-n4-mstd0.5-inc1`, `AUG.RE_PROB: 0.25`,
`AUG.RE_MODE: pixel`, `AUG.RE_COUNT: 1`, `MIXUP.ALPHA: 0.8`, `MIXUP.CUTMIX_ALPHA: 1.0`, `MIXUP.PROB: 1.0`,
`MIXUP.SWITCH_PROB: 0.5`, `MIXUP.LABEL_SMOOTH_VALUE: 0.1` (`MVITV2_S` below). They are MViTv2's, not the
PViT paper's: the paper only says its recipes come from MViTv2-S.

Only real clips that carry an action label are augmented: a synthetic clip's dense labels would not follow a
RandAugment shear or a cutmix paste, and AVA/Ego4D clips are scored per person or per frame.

- RandAugment (`rand_augment_clip`) runs in the data workers on the uint8 crop, with the same ops and
  magnitudes for every frame of a clip, seeded from the sample's own augmentation rng (so a batch does not
  depend on the worker count). PySlowFast applies it before its crop; here it runs on the crop, which is
  cheaper and draws from the same op distribution.
- Random erasing and mixup/cutmix (`BatchAugment`) run in the training process on the normalised batch, on
  the device, seeded from (seed, step, rank). A clip `[C, T, H, W]` is seen as `[C*T, H, W]`, so the erased
  box and the cutmix box are the same in every frame (PySlowFast's erasing "cube").
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.schema import TASK_BIT

# PySlowFast's MViTv2-S 16x4 values, as config fields (augment section; label_smoothing is optim's).
MVITV2_S: dict[str, float | str] = {
    "mixup": 0.8,
    "cutmix": 1.0,
    "mixup_prob": 1.0,
    "mixup_switch_prob": 0.5,
    "label_smoothing": 0.1,
    "rand_augment": "rand-m7-n4-mstd0.5-inc1",
    "random_erasing": 0.25,
}
FILL = (115, 115, 115)  # RandAugment's fill colour: the Kinetics mean 0.45 in uint8 (timm passes img_mean)
ACTION = TASK_BIT["action"]


# ----------------------------------------------------------------------------- RandAugment (workers)


@functools.lru_cache(maxsize=8)
def rand_augment(config: str, size: int) -> Callable[[Image.Image], Image.Image]:
    """timm's RandAugment for a timm config string; `size` is the frame's short side (translations)."""
    from timm.data.auto_augment import rand_augment_transform  # timm imports in seconds: only when used

    hparams = {
        "translate_const": int(size * 0.45),
        "img_mean": FILL,
        "interpolation": Image.Resampling.BICUBIC,  # PySlowFast AUG.INTERPOLATION
    }
    return rand_augment_transform(config, hparams)


def check_rand_augment(config: str) -> None:
    """A one-line ValueError for a config string timm cannot parse."""
    if not config.startswith("rand"):
        raise ValueError(f"--rand-augment {config!r}: a timm RandAugment config starts with 'rand-'")
    try:
        rand_augment(config, 224)
    except Exception as error:  # noqa: BLE001 - timm asserts, or raises KeyError/ValueError on a bad part
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"--rand-augment {config!r}: not a timm RandAugment config ({detail}); "
            "e.g. rand-m7-n4-mstd0.5-inc1"
        ) from None


@contextlib.contextmanager
def _global_rngs_kept() -> Iterator[None]:
    """timm's augmentations draw from `random` and `np.random`; leave both as they were found."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def rand_augment_clip(video: np.ndarray, config: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 `[T, H, W, 3]` -> the clip with one RandAugment draw (ops, magnitudes) applied to every frame.

    timm's transform draws its ops from `np.random` and each op's probability, magnitude and sign from
    `random`, in an order that does not depend on the image, so resetting both to the same state before
    each frame repeats the same draw frame after frame.
    """
    transform = rand_augment(config, min(video.shape[1:3]))
    seed = int(rng.integers(2**32))
    frames = []
    with _global_rngs_kept():
        for frame in video:
            random.seed(seed)
            np.random.seed(seed)
            frames.append(np.asarray(transform(Image.fromarray(frame))))
    return np.stack(frames)


def rand_augment_sample(sample: dict, config: str, allowed: int, rng: np.random.Generator) -> dict:
    """A real training sample after its crop: its clip RandAugmented if it has an action label among the
    `allowed` mask bits (not an AVA/Ego4D clip); anything else unchanged, with no draw from `rng`."""
    if not (int(sample["meta"]["mask"]) & allowed) >> ACTION & 1:
        return sample
    return dict(sample, video=rand_augment_clip(sample["video"], config, rng))


# ----------------------------------------------------------------------------- erasing and mixup (device)


def action_rows(parts: Sequence[dict], roles: Sequence[str]) -> torch.Tensor:
    """Rows of the merged batch (`parts` concatenated in order) that are real clips with an action label.

    Computed on the CPU tensors of the collated batches, so selecting them on the device needs no sync.
    """
    rows, offset = [], 0
    for part, role in zip(parts, roles, strict=True):
        count = part["video"].shape[0]
        if role == "real" and "action" in part:
            keep = part["mask"][:, ACTION] & (part["action"] >= 0)
            rows.append(torch.nonzero(keep).flatten() + offset)
        offset += count
    return torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)


def batch_seed(seed: int, step: int, rank: int, micro: int = 0) -> int:
    """A 32-bit seed for one step's batch augmentation, from the run's seed, the step, the rank and, under
    gradient accumulation, the micro-batch (0, the whole batch, draws what it always drew)."""
    entropy = [seed, step, rank, 0x5245414C, *([micro] if micro else [])]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Every RNG timm's batch augmentations draw from (`random`, `np.random`, torch's generator on
    `device`) seeded with `seed` inside, and restored on the way out."""
    cuda = device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with _global_rngs_kept(), torch.random.fork_rng(devices=[index] if cuda else []):
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


@dataclass(frozen=True)
class BatchAugment:
    """Random erasing then mixup/cutmix on the chosen rows of a normalised `[B, C, T, H, W]` batch.

    The order is PySlowFast's: erasing is per clip in its loader, mixup per batch in its training loop.
    With mixup or cutmix on, `targets["action"]` becomes soft `[B, num_classes]` (label smoothing included,
    rows of other clips all zero); otherwise it stays as it was.
    """

    num_classes: int
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.0
    random_erasing: float = 0.0

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    @property
    def enabled(self) -> bool:
        return self.mixes or self.random_erasing > 0

    def __call__(
        self, video: torch.Tensor, targets: dict[str, torch.Tensor], rows: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.enabled or rows.numel() == 0:
            return video, targets
        from timm.data.random_erasing import RandomErasing  # timm imports in seconds: only when used

        index = rows.to(video.device, non_blocking=True)
        clips = video.index_select(0, index)
        flat = clips.view(clips.shape[0], -1, *clips.shape[-2:])  # [n, C*T, H, W]: one box for all frames
        with seeded(seed, video.device):
            if self.random_erasing > 0:
                RandomErasing(self.random_erasing, mode="pixel", max_count=1, device=video.device)(flat)
            if self.mixes:
                targets = dict(targets, action=self._mix(flat, targets["action"], index))
        video = video.index_copy(0, index, clips)
        return video, targets

    def _mix(self, flat: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Mix the clips in place (timm's batch mode: row i with row n-1-i) and return soft targets."""
        from timm.data.mixup import Mixup, mixup_target

        mixer = Mixup(
            mixup_alpha=self.mixup,
            cutmix_alpha=self.cutmix,
            prob=self.mixup_prob,
            switch_prob=self.mixup_switch_prob,
            label_smoothing=self.label_smoothing,
            num_classes=self.num_classes,
        )
        # Every labelled row gets its (smoothed) one-hot target; the mixed rows are then overwritten.
        soft = mixup_target(labels.clamp(min=0), self.num_classes, 1.0, self.label_smoothing)
        soft = torch.where((labels >= 0)[:, None], soft, torch.zeros_like(soft))
        even = flat.shape[0] // 2 * 2  # timm mixes pairs; an odd clip out stays unmixed
        if even:
            _, mixed = mixer(flat[:even], labels.index_select(0, index[:even]))
            soft = soft.index_copy(0, index[:even], mixed.to(soft.dtype))
        return soft

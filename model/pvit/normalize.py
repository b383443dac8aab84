"""The input normalisation the pretrained backbone expects: ``(video / 255 - KINETICS_MEAN) / KINETICS_STD``.

These belong to the weights, not to a data loader: torchvision's ``MViT_V2_S_Weights.KINETICS400_V1``
(ported from PySlowFast) was trained on frames in [0, 1] normalised with them, per RGB channel. Every caller
that feeds ``PViT`` (the trainer, the visualiser) takes them from here.
"""

from __future__ import annotations

KINETICS_MEAN: tuple[float, float, float] = (0.45, 0.45, 0.45)
KINETICS_STD: tuple[float, float, float] = (0.225, 0.225, 0.225)

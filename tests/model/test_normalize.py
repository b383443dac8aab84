"""pvit's input normalisation is the one the torchvision weights it loads were trained with."""

from __future__ import annotations

import pvit
import pytest
from torchvision.models.video import MViT_V2_S_Weights


def test_kinetics_mean_and_std_are_the_mvit_v2_s_weights_own() -> None:
    transforms = MViT_V2_S_Weights.KINETICS400_V1.transforms()
    assert list(pvit.KINETICS_MEAN) == pytest.approx(transforms.mean)
    assert list(pvit.KINETICS_STD) == pytest.approx(transforms.std)

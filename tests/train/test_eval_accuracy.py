"""Action top-1/top-5 per video (timm's accuracy over the videos' averaged softmax), and the input scaling."""

from __future__ import annotations

import pvit
import pytest
import torch

from train.data import to_device
from train.scorers import ScoreContext, score_action

CPU = torch.device("cpu")


class PixelLogits(torch.nn.Module):
    """A model whose class scores are the first pixel row of frame 0 (red channel): one pixel per class."""

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"action": video[:, 0, 0, 0, :]}


def _batch(scores: list[list[int]], labels: list[int], groups: list[str], valid: list[bool]) -> dict:
    video = torch.zeros(len(scores), 1, 1, len(scores[0]), 3, dtype=torch.uint8)
    video[:, 0, 0, :, 0] = torch.tensor(scores, dtype=torch.uint8)
    return {"video": video, "action": torch.tensor(labels), "groups": groups, "views": 1, "valid": valid}


def test_top1_and_top5_count_videos_on_their_averaged_clips() -> None:
    batch = _batch(
        scores=[
            [0, 0, 255, 0, 0, 0],  # video a, clip 1: class 2
            [128, 0, 0, 0, 0, 0],  # video a, clip 2: class 0, less sure; the average still says 2
            [255, 200, 0, 0, 150, 0],  # video b: its label 4 ranks third
            [0, 0, 0, 0, 255, 0],  # a padding repeat of b (not valid): would make b a top-1 hit
            [0, 0, 0, 0, 0, 255],  # no action label: not scored
        ],
        labels=[2, 2, 4, 4, -1],
        groups=["a", "a", "b", "b", "c"],
        valid=[True, True, True, False, True],
    )
    out = score_action(PixelLogits(), [batch], ScoreContext(CPU))
    assert out == {"top1": 50.0, "top5": 100.0, "videos": 2, "clips": 3, "views_per_video": 1.5}


def test_top5_of_fewer_than_five_classes_is_every_video() -> None:
    batch = _batch(
        scores=[[255, 100, 0], [0, 255, 100]], labels=[2, 1], groups=["a", "b"], valid=[True, True]
    )
    out = score_action(PixelLogits(), [batch], ScoreContext(CPU))
    assert (out["top1"], out["top5"]) == (50.0, 100.0)


def test_clips_are_scaled_with_the_pretrained_weights_normalisation() -> None:
    video = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1, 1).expand(2, 1, 1, 1, 3)
    normalised, _ = to_device({"video": video}, CPU)
    assert normalised.shape == (2, 3, 1, 1, 1)
    for channel, (mean, std) in enumerate(zip(pvit.KINETICS_MEAN, pvit.KINETICS_STD, strict=True)):
        assert normalised[:, channel].flatten().tolist() == pytest.approx([-mean / std, (1 - mean) / std])

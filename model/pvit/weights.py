"""Pretrained backbone weights by name (``"k400"``) or by path, through torchvision's own weights API.

A name resolves to a torchvision ``WeightsEnum`` member; its file is fetched with ``weights.get_state_dict``,
i.e. ``torch.hub.load_state_dict_from_url``, which keeps it in the hub cache
(``$TORCH_HOME/hub/checkpoints/<file name of weights.url>``) and reads it from there on later runs. Without
network access and without the cached file the error is one line naming the file, where to put it and where
to get it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.error import URLError

import torch
import torch.hub
from torchvision.models import WeightsEnum
from torchvision.models.video import MViT_V2_S_Weights

from .backbone import PromptMViT
from .model import LoadReport, PViT, load_kinetics_pretrained

# Names the trainer's ``--pretrained`` accepts besides a path. All are torchvision ``mvit_v2_s`` weights, the
# backbone ``load_kinetics_pretrained`` loads.
PRETRAINED_WEIGHTS: dict[str, WeightsEnum] = {"k400": MViT_V2_S_Weights.KINETICS400_V1}


def hub_cache_path(weights: WeightsEnum) -> Path:
    """Where torch hub keeps (and looks for) the file of ``weights``: ``<hub dir>/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def named_state_dict(name: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """The state dict of the weights called ``name``, from the hub cache or downloaded into it.

    Raises a one-line ``ValueError`` for an unknown name, and for a file that is neither cached nor
    downloadable (offline): the message gives the exact cache path and the URL.
    """
    weights = PRETRAINED_WEIGHTS.get(name)
    if weights is None:
        raise ValueError(f"unknown pretrained weights {name!r}; known names: {', '.join(PRETRAINED_WEIGHTS)}")
    try:
        # check_hash verifies a download against the hash in the file name (as torchvision's builders do).
        return weights.get_state_dict(
            progress=progress, check_hash=True, map_location="cpu", weights_only=True
        )
    except (URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error.strerror or type(error).__name__
        raise ValueError(
            f"pretrained weights {name!r} are not in the torch hub cache and cannot be downloaded "
            f"({reason}): put {weights.url} at {hub_cache_path(weights)}"
        ) from None


def resolve_pretrained(name_or_path: str | os.PathLike) -> dict[str, torch.Tensor] | Path:
    """A known name's state dict, or the path of an existing checkpoint file; anything else is one line."""
    text = os.fspath(name_or_path)
    if text in PRETRAINED_WEIGHTS:
        return named_state_dict(text)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if os.sep not in text and not path.suffix:  # reads as a name, not as a file
        known = ", ".join(PRETRAINED_WEIGHTS)
        raise ValueError(f"pretrained {text!r} is neither a file nor a known weights name ({known})")
    raise ValueError(f"pretrained {text!r}: no such file")


def load_pretrained(
    model: PViT | PromptMViT, name_or_path: str | os.PathLike, keep_head: bool = False
) -> LoadReport:
    """``load_kinetics_pretrained`` from a weights name (``"k400"``) or a checkpoint path."""
    return load_kinetics_pretrained(model, resolve_pretrained(name_or_path), keep_head=keep_head)

"""Checkpoints: `out/checkpoints/step_XXXXXXXX.pt` plus a readable `.json` sidecar, written atomically.

A checkpoint holds everything a bit-exact continuation needs: model, optimizer, scheduler (its step count
and timm's settings) and grad-scaler state, the step, every rank's RNG states, and the data position of each
stream. The loader is a pure function of (seed, step), so the data position is recorded for people and
checked on resume, not replayed.
"""

from __future__ import annotations

import json
import os
import random
import re
import uuid
from pathlib import Path

import numpy as np
import torch

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save(out: str | Path, step: int, state: dict, meta: dict, keep: int) -> Path:
    """Write step `step`'s checkpoint and sidecar, then prune all but the newest `keep`."""
    directory = checkpoint_dir(out)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:08d}.pt"
    _atomic_write(path, lambda tmp: torch.save(state, tmp))
    text = json.dumps({"step": step, **meta}, indent=2, sort_keys=True, default=str) + "\n"
    _atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(text))
    for old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return path


def remove_temporaries(out: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a killed run never renamed into place.

    Call it on one rank before training starts; the names never match a finished checkpoint.
    """
    directory = checkpoint_dir(out)
    stray = sorted(directory.glob(".*.tmp")) if directory.is_dir() else []
    for path in stray:
        path.unlink(missing_ok=True)
    return stray


def list_checkpoints(out: str | Path) -> list[Path]:
    """Finished checkpoints, oldest first (temporary files never match the name pattern)."""
    directory = checkpoint_dir(out)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def resolve(resume: str, out: str | Path) -> Path | None:
    """`latest` -> the newest checkpoint in `out` (None when there is none yet), else the given path."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(out)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint")
    return path


REQUIRED = ("model", "optimizer", "scheduler", "scaler", "step", "rng", "world", "seed")


class CheckpointError(ValueError):
    """A file given to --resume is not a checkpoint this trainer wrote; one line."""


def load(path: Path) -> dict:
    """A checkpoint's state; `CheckpointError` when the file is not one (truncated, foreign, garbage)."""
    try:
        # weights_only=False: the file holds RNG states (numpy tuples) and was written by this trainer.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch.load fails in many ways on a non-checkpoint
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"--resume {path}: not a readable checkpoint ({first[:200]})") from None
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing:
        lacks = ", ".join(missing)
        raise CheckpointError(f"--resume {path}: not a checkpoint of this trainer (lacks {lacks})")
    if not isinstance(state["scheduler"], dict) or "steps" not in state["scheduler"]:
        # Before timm's scheduler (train.main.WarmupCosine) the state was torch's LambdaLR's, and the
        # optimiser's parameter groups were in another order: neither restores into this trainer.
        raise CheckpointError(f"--resume {path}: written by an older version of this trainer; start afresh")
    return state

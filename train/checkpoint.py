"""Checkpoints: `out/checkpoints/step_XXXXXXXX.pt` plus a readable `.json` sidecar, written atomically.

A checkpoint holds everything a bit-exact continuation needs: model, optimizer, scheduler (its step count and
timm's settings) and grad-scaler state, the step, every rank's RNG states, the data position of each stream,
the run's config, the model's `PViTConfig` and the build hash of every source it read. The loader is a pure
function of (seed, step), so the data position is recorded for people and checked on resume, not replayed.

Nothing from disk runs code: a checkpoint holds only what `torch.load(weights_only=True)` accepts (tensors,
plain containers, numbers, strings; numpy's RNG state is stored as a tensor), and it is always loaded so.

The sidecar is written first and the `.pt` last: a `.pt` is the commit of its step, so a run killed between
the two leaves an orphan sidecar (removed at the next start), never a checkpoint without its sidecar.

`--resume` refuses a checkpoint whose run-defining settings differ from this run's (one line naming the
setting); only the settings in `CHANGEABLE` (logging, evaluation, loader workers, where the shards are read
from, how the model runs) may change on resume.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pvit
import torch

from pipeline.fileio import atomic_write, atomic_write_text, first_line, is_temporary
from train.assemble import Run
from train.config import TrainConfig, config_from_dict, flag
from train.distributed import all_gather_object
from train.logger import print0
from train.plan import position

_NAME = re.compile(r"^step_(\d{8})\.pt$")
FORMAT = 2  # 2: weights-only safe (numpy RNG as a tensor), config and model config inside
# Settings a resumed run may change: how a run is watched, evaluated and fed, never what it trains.
CHANGEABLE = ("log.", "eval.", "data.workers", "data.verify_shards", "data.shards", "data.storage_options",
              "data.cache_dir", "data.cache_limit", "model.attention", "model.pool_impl",
              "model.act_checkpoint", "out", "resume", "stop_after", "recipe", "extra", "device",
              "compile")  # fmt: skip
REQUIRED = ("format", "model", "optimizer", "scheduler", "scaler", "step", "rng", "world", "config")


class CheckpointError(ValueError):
    """A file that is not a checkpoint this trainer wrote, or one another run's settings made; one line."""


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


# ----------------------------------------------------------------------------- RNG states, safe forms


def rng_state() -> dict:
    """This process's RNG states as tensors and plain numbers (numpy's MT19937 key as an int64 tensor)."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),  # (version, tuple of 625 ints, None)
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    saved = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
            "has_gauss": saved["has_gauss"],
            "gauss": saved["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- files


def save(out: str | Path, step: int, state: dict, meta: dict, keep: int) -> Path:
    """Write step `step`'s sidecar, then its checkpoint (the commit), then prune all but the newest `keep`."""
    directory = checkpoint_dir(out)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:08d}.pt"
    text = json.dumps({"step": step, **meta}, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_text(path.with_suffix(".json"), text)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return path


def remove_leftovers(out: str | Path) -> list[Path]:
    """Delete what a killed run left half-way: temporary files never renamed, sidecars whose `.pt` never came.

    Call it on one rank before training starts; neither ever names a finished checkpoint.
    """
    directory = checkpoint_dir(out)
    if not directory.is_dir():
        return []
    stray = [p for p in directory.iterdir() if is_temporary(p)]
    stray += [p for p in directory.glob("step_*.json") if not p.with_suffix(".pt").is_file()]
    for path in stray:
        path.unlink(missing_ok=True)
    return sorted(stray)


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


def read_weights_only(path: Path, what: str) -> object:
    """`torch.load(weights_only=True)`: tensors and plain containers only, never code from a pickle."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails in many ways on a non-checkpoint or a hostile pickle
        reason = first_line(error, 200)
        raise CheckpointError(f"{what} {path}: not a readable checkpoint ({reason})") from None


def load(path: Path, what: str = "--resume") -> dict:
    """A checkpoint's state, loaded weights-only; `CheckpointError` when the file is not one of ours."""
    state = read_weights_only(path, what)
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing or not isinstance(state, dict):
        raise CheckpointError(f"{what} {path}: not a checkpoint of this trainer (lacks {', '.join(missing)})")
    if state["format"] != FORMAT:
        raise CheckpointError(f"{what} {path}: written by another version of this trainer; start afresh")
    return state


def read_sidecar(path: Path) -> dict | None:
    """The `.json` next to a checkpoint, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------- a run's checkpoints


def save_run(run: Run, steps_done: int, argv: list[str]) -> None:
    """Every rank's RNG states gathered; rank 0 writes the checkpoint of `steps_done` steps."""
    if run.guard:
        run.guard.check()
    rngs = all_gather_object(rng_state())  # every rank's RNG, so each resumes its own
    if not run.dist.main:
        return
    data = {s.role: dataclasses.asdict(position(steps_done, s.batches_per_epoch, s.batch_size))
            for s in run.streams}  # fmt: skip
    meta = {
        "config": dataclasses.asdict(run.cfg),
        "model_config": dataclasses.asdict(run.model.cfg),
        "data": data,
        "world": run.dist.world,
        "sources": run.source_hashes(),
        "label_spaces": run.label_spaces,
        "loss_weights": dict(
            run.loss_fn.weights
        ),  # the lambdas in use (calibrated ones with --loss-weights equal)
        "argv": argv,
    }
    state = {
        "format": FORMAT,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "step": steps_done,
        "rng": rngs,
        **meta,
    }
    path = save(run.cfg.out, steps_done, state, meta, run.cfg.log.keep_checkpoints)
    print0(0, f"saved {path}")


def resume_run(run: Run) -> None:
    """Restore the newest (or the given) checkpoint into `run`, after checking it belongs to this run."""
    path = resolve(run.cfg.resume, run.cfg.out)
    if path is None:
        if run.cfg.resume:
            print0(
                run.dist.rank,
                f"--resume {run.cfg.resume}: no checkpoint in {run.cfg.out} yet, starting fresh",
            )
        return
    state = load(path)
    refuse_other_settings(path, state, run)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.loss_fn.weights = dict(state["loss_weights"])
    run.start_step = int(state["step"])
    if state["world"] != run.dist.world:
        note = f"note: checkpoint was written with {state['world']} rank(s); "
        print0(run.dist.rank, note + "the data order from here differs from an uninterrupted run")
    rngs = state["rng"]
    set_rng_state(rngs[run.dist.rank] if run.dist.rank < len(rngs) else rngs[0])
    print0(run.dist.rank, f"resumed from {path} at step {run.start_step} (data position {state['data']})")


def refuse_other_settings(path: Path, state: dict, run: Run) -> None:
    """One line naming the first run-defining setting (or source build) that differs from the checkpoint's."""
    theirs = config_from_dict(state["config"]).flat()
    for name, value in run.cfg.flat().items():
        if name.startswith(CHANGEABLE) or theirs.get(name) == value:
            continue
        raise CheckpointError(
            f"--resume {path}: it was trained with {flag(name.rpartition('.')[2])} {theirs.get(name)!r}, "
            f"this run asks for {value!r}; resume with the same setting or start afresh (a new --out). "
            "Only logging, evaluation, where the shards are read from, --workers, --device, --compile and "
            "how the model runs (--attention, --pool-impl, --act-checkpoint) may change"
        )
    for name, config_hash in run.source_hashes().items():
        if state["sources"].get(name) not in (None, config_hash):
            raise CheckpointError(
                f"--resume {path}: source {name} was rebuilt with another config since this checkpoint "
                "(its build hash differs); resume on the shards it trained on or start afresh"
            )


# ----------------------------------------------------------------------------- models from checkpoints


def load_model(path: str | Path, what: str = "--checkpoint") -> tuple[pvit.PViT, TrainConfig]:
    """The trained model of a checkpoint (eval mode, CPU) and the config of its run; opens no source."""
    state = load(Path(path), what)
    try:
        model_cfg = pvit.PViTConfig(**state["model_config"])
        model = pvit.PViT(model_cfg)
        model.load_state_dict(state["model"])
        cfg = config_from_dict(state["config"])
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise CheckpointError(f"{what} {path}: its model does not build ({first_line(error, 200)})") from None
    return model.eval(), cfg


def is_backbone_key(name: str) -> bool:
    """The encoder's weights in a PViT state dict: `backbone.*` less the prompts and the action head."""
    return name.startswith("backbone.") and not name.startswith(("backbone.prompt_tokens", "backbone.head."))


def init_backbone(model: pvit.PViT, path: str) -> int:
    """Load only the backbone weights of a checkpoint this trainer wrote (pretrain-then-finetune stage 2).

    Unlike --resume nothing else is restored (optimiser, schedule, step, data position, RNG). Returns the
    number of tensors loaded; a file that is not such a checkpoint or a backbone of another shape is one line.
    """
    state = read_weights_only(Path(path), "--init-from")
    weights = state.get("model") if isinstance(state, dict) else None
    theirs = {k: v for k, v in weights.items() if is_backbone_key(k)} if isinstance(weights, dict) else {}
    if not theirs:
        raise CheckpointError(
            f"--init-from {path}: no backbone weights in it (not a checkpoint of this trainer)"
        )
    ours = {k: v for k, v in model.state_dict().items() if is_backbone_key(k)}
    for key in sorted(ours.keys() | theirs.keys()):
        have, want = (tuple(t[key].shape) if key in t else "absent" for t in (theirs, ours))
        if have != want:
            raise CheckpointError(
                f"--init-from {path}: its backbone differs from this model's at {key} ({have} vs {want}); "
                "use the --preset and clip size of the run that wrote it"
            )
    model.load_state_dict(theirs, strict=False)
    return len(theirs)

"""`--compile`: the trainer torch.compiles the model it trains (DDP-wrapped first; loss, optimiser eager).

Inductor's C++ build takes minutes on a CPU, so the test compiles with the `aot_eager` backend: the same
Dynamo capture and AOT-autograd graphs of forward and backward, run without code generation. The full
compile is what `scripts/gpu_check.sh` runs on a GPU (and a CPU run of `--compile` with inductor trains too:
about 5 minutes of compilation for the tiny model here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.train.conftest import train_args
from train.main import main


@pytest.mark.slow  # two runs, one compiled
def test_a_compiled_run_trains_like_the_eager_one(shards_dir: Path, tmp_path: Path, monkeypatch) -> None:
    compiled: list[torch.nn.Module] = []
    real_compile = torch.compile

    def aot_eager(module, **kwargs):
        compiled.append(module)
        return real_compile(module, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", aot_eager)
    flags = ["--steps", "2", "--optimizer", "sgd", "--momentum", "0", "--lr", "0.05"]
    with_compile = main(train_args(shards_dir, tmp_path / "compiled", *flags, "--compile"))
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "PViT"  # the model, not the loss
    eager = main(train_args(shards_dir, tmp_path / "eager", *flags))
    for key in ("real/procedural/top1", "synthetic/procedural/depth_absrel"):
        assert with_compile["eval"][key] == pytest.approx(eager["eval"][key], rel=1e-4, abs=1e-4), key

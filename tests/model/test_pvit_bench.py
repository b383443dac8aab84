"""``python -m pvit.bench`` at a tiny size on CPU, and its FLOP count."""

from __future__ import annotations

import json
import time

import pytest
import torch
from pvit.bench import _warm_case, conv_backward_flop, main
from torch.utils.flop_counter import FlopCounterMode

TINY = ["--preset", "tiny", "--frames", "4", "--size", "32", "--batch", "2", "--repeats", "1", "--no-params"]


def test_bench_runs_on_cpu_and_reports_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    rows = main([*TINY, "--peak-tflops", "1"])
    names = [r["name"] for r in rows]
    assert names[:2] == ["plain", "plain, explicit attention"] and len(rows) == 4
    assert all(r["seconds"] > 0 and r["clips_per_s"] > 0 and r["mfu"] is not None for r in rows)
    # Both attention paths are the same model: the same model FLOPs; prompts and heads only add.
    assert rows[0]["tflop"] == rows[1]["tflop"] < rows[2]["tflop"] < rows[3]["tflop"]
    assert all(r["peak_gib"] is None for r in rows)  # no peak memory on CPU
    assert "explicit / sdpa attention time" in capsys.readouterr().out


def test_bench_runs_every_formulation_and_the_torchvision_anchor(tmp_path, capsys) -> None:
    """Every case runs (flex has no CPU backward: reported as failed, the rest still run); the plain
    variants share plain's FLOPs; torchvision's MViT with the same settings has them too; --profile
    prints the top operators and the JSON carries them and the failure."""
    cases = "plain,sdpa,folded,flex,conv,channels_last,shifts,ckpt,tv"
    rows = main(
        [*TINY, "--cases", cases, "--profile", "--profile-steps", "1", "--json", str(tmp_path / "b.json")]
    )
    names = [r["name"] for r in rows]
    assert names == [
        "plain",
        "plain, sdpa attention",
        "plain, folded attention",
        "plain, conv pooling",
        "plain, channels_last pooling",
        "plain, shifts pooling",
        "plain, activation checkpointing",
        "torchvision MViT (tiny settings)",
    ]
    assert len({r["tflop"] for r in rows}) == 1  # same architecture, counted through the same formulation
    out = capsys.readouterr().out
    assert "plain, flex attention" in out and "backward on CPU" in out
    assert "profile of 'plain'" in out and "aten::" in out
    saved = json.loads((tmp_path / "b.json").read_text())
    assert list(saved["failed"]) == ["plain, flex attention"]
    assert len(saved["profile"]["top"]) == 15 and saved["profile"]["top"][0]["share"] > 0


def test_bench_cases_subset_and_json(tmp_path) -> None:
    rows = main([*TINY, "--cases", "pvit", "--json", str(tmp_path / "bench.json")])
    assert [r["name"].split(" ")[0] for r in rows] == ["plain", "pvit"]
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["settings"]["batch"] == 2 and [r["name"] for r in saved["rows"]] == [r["name"] for r in rows]
    with pytest.raises(SystemExit):
        main([*TINY, "--cases", "plain,nope"])


def test_bench_budget_skips_cases_not_yet_warmed_up(tmp_path) -> None:
    """Past --budget no further case is warmed up (compiled); plain always runs, in the order given."""
    rows = main([*TINY, "--cases", "tv,plain,ckpt", "--budget", "1e-9", "--json", str(tmp_path / "b.json")])
    assert [r["name"] for r in rows] == ["plain"]
    failed = json.loads((tmp_path / "b.json").read_text())["failed"]
    assert list(failed) == ["torchvision MViT (tiny settings)", "plain, activation checkpointing"]
    assert all("--budget" in why for why in failed.values())


def test_warm_up_running_past_the_budget_is_interrupted() -> None:
    """A compilation that would outlast --budget is cut short (SIGALRM); the baseline never is."""
    started = time.perf_counter()
    why = _warm_case(False, lambda: time.sleep(30) or 0.0, steps=1, deadline=started + 0.2)
    assert why is not None and why.startswith("interrupted") and time.perf_counter() - started < 5
    assert _warm_case(True, lambda: 0.0, steps=1, deadline=started) is None


def test_bench_refuses_cuda_without_a_device(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("groups", [1, 8])
def test_conv_backward_flops_count_groups(groups: int) -> None:
    """Each gradient of a conv costs its forward, grouped (MViT's depthwise pools) or not."""
    conv = torch.nn.Conv3d(8, 8, 3, padding=1, groups=groups, bias=False)
    x = torch.randn(1, 8, 2, 4, 4, requires_grad=True)
    with FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop}
    ) as c:
        conv(x).sum().backward()
    counts = c.get_flop_counts()["Global"]
    assert counts[torch.ops.aten.convolution_backward] == 2 * counts[torch.ops.aten.convolution]


@pytest.mark.slow
def test_bench_compiles_on_cpu() -> None:
    # The full model (prompts, every head and loss) and plain, the baseline every bench run measures: each
    # case is a separate inductor compile of a minute or more on a cold cache, by the same code path.
    rows = main([*TINY, "--compile", "--cases", "full"])
    assert len(rows) == 2 and rows[0]["name"] == "plain" and all(r["seconds"] > 0 for r in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_runs_on_cuda_in_bf16(capsys: pytest.CaptureFixture[str]) -> None:
    """Every case on CUDA (flex is test_attention's), peak memory (checkpointing needs less), a profile."""
    cases = "plain,explicit,sdpa,folded,conv,channels_last,shifts,ckpt,pvit,full,tv"
    # batch 8 at 64²: activations, not the tiny model's parameters, dominate the peak
    rows = main([*TINY, "--size", "64", "--batch", "8", "--device", "cuda", "--dtype", "bf16",
                 "--peak-tflops", "989", "--cases", cases, "--profile"])  # fmt: skip
    assert len(rows) == 11 and all(0 < r["mfu"] < 1 and r["peak_gib"] > 0 for r in rows)
    peak = {r["name"]: r["peak_gib"] for r in rows}
    assert peak["plain, activation checkpointing"] < peak["plain"]
    assert "CUDA kernels" in capsys.readouterr().out

"""The attention formulations (pvit.attention) against torchvision's explicit attention, eager and compiled.

Each case runs one model (same weights) through ``explicit`` and the formulation under test, with 0, 1 and 6
prefix prompts after CLS, at the tiny preset's construction size (4 x 64²) and at another clip size whose
grids need the rel-pos tables interpolated (6 x 48²). ``sdpa`` and ``folded`` have a CPU backward, so their
parameter gradients are compared too; ``flex`` has none on CPU (its gradients are the ``gpu`` tests').
"""

from __future__ import annotations

import pvit
import pytest
import torch
import torch.nn.functional as F
from pvit.attention import keys_padded_to_8, prefix_padded_bias, resolve_attention
from pvit.backbone import PromptMViT

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

CLIPS = [(4, 64), (6, 48)]  # (frames, size): the tiny preset's construction size, and another
PROMPTS = [0, 1, 6]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def no_tf32():
    """fp32 on CUDA as fp32: TF32 matmuls and convolutions (cuDNN's default) would round to 1e-3."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _model(prompts: int, preset: str = "tiny") -> PromptMViT:
    torch.manual_seed(0)
    return PromptMViT(pvit.get_config(preset, mode="plain", drop_path=0.0, head_dropout=0.0), prompts)


def _clip(frames: int, size: int, device: str = "cpu") -> torch.Tensor:
    return torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(0)).to(device)


def _outputs(model: PromptMViT, x: torch.Tensor, forward=None) -> torch.Tensor:
    feats = (forward or model.forward_features)(x)
    return torch.cat((feats.cls, feats.prompts.flatten(1), feats.patches.flatten(1)), dim=1)


def _with_grads(model: PromptMViT, x: torch.Tensor, forward=None) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    y = _outputs(model, x, forward)
    y.square().mean().backward()
    return y.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _assert_same(got: tuple[torch.Tensor, dict], ref: tuple[torch.Tensor, dict], what: str) -> None:
    assert (got[0] - ref[0]).abs().max().item() <= 1e-5, what
    assert got[1].keys() == ref[1].keys()
    for name, grad in ref[1].items():
        # The k-pool norm biases' exact gradient is 0 (softmax ignores a shift shared by all keys): the
        # absolute floor covers their rounding noise.
        torch.testing.assert_close(got[1][name], grad, rtol=1e-4, atol=1e-5, msg=f"{what}: {name}")


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("prompts", PROMPTS)
@pytest.mark.parametrize("path", ["sdpa", "folded"])
def test_path_matches_explicit_outputs_and_gradients(path: str, prompts: int, clip: tuple[int, int]) -> None:
    model, x = _model(prompts).train(), _clip(*clip)
    model.attention = "explicit"
    ref = _with_grads(model, x)
    assert ref[1]["blocks.0.attn.rel_pos_t"].abs().max() > 0  # the bias is on the autograd path
    model.attention = path
    _assert_same(_with_grads(model, x), ref, f"{path}, {prompts} prompts, clip {clip}")


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("prompts", PROMPTS)
def test_flex_forward_matches_explicit(prompts: int, clip: tuple[int, int]) -> None:
    model, x = _model(prompts).eval(), _clip(*clip)
    with torch.no_grad():
        model.attention = "explicit"
        ref = _outputs(model, x)
        model.attention = "flex"
        assert (_outputs(model, x) - ref).abs().max().item() <= 1e-5


def test_flex_refuses_a_cpu_backward_and_auto_never_picks_it_there() -> None:
    model = _model(1).train()
    model.attention = "flex"
    with pytest.raises(NotImplementedError, match="backward on CPU"):
        _outputs(model, _clip(4, 64))
    assert resolve_attention("auto", torch.device("cpu")) == "sdpa"
    assert resolve_attention("auto", torch.device("cuda")) == "folded"
    assert resolve_attention("flex", torch.device("cpu")) == "flex"


def test_padded_keys_mask_equals_the_sliced_mask() -> None:
    """The CUDA sdpa variant (keys padded to a multiple of 8, masked with -inf) = the sliced padded mask:
    values and the gradients to q, k, v and the bias."""
    g = torch.Generator().manual_seed(0)
    n_prefix, nq, nk, d = 2, 21, 13, 16  # 13 + 2 keys: padded to 16
    q, k, v = (torch.randn(2, 3, n, d, generator=g, requires_grad=True) for n in (nq, nk, nk))
    grid_bias = torch.randn(2, 3, nq - n_prefix, nk - n_prefix, generator=g, requires_grad=True)
    results = []
    for padded in (False, True):
        if padded:
            q2, k2, v2, mask = keys_padded_to_8(q, k, v, grid_bias, n_prefix)
            assert mask.shape[-1] == 16 and mask.is_contiguous()
        else:
            q2, k2, v2, mask = q, k, v, prefix_padded_bias(grid_bias, n_prefix, nk)
        out = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask)
        grads = torch.autograd.grad(out.square().sum(), (q, k, v, grid_bias))
        results.append((out.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for got, want in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _block_run(path: str, compiled: bool = False, grad: bool = True) -> tuple[torch.Tensor, dict]:
    """The tiny model's second block (q pooled 2x, skip max-pool, 2 heads) on 1 + 6 prefix tokens."""
    block = _model(6).train().blocks[1]
    forward = torch.compile(block, backend="aot_eager", fullgraph=True) if compiled else block
    tokens = torch.randn(2, 7 + 2 * 16 * 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.set_grad_enabled(grad):
        tokens.requires_grad_(grad)
        y, thw = forward(tokens, (2, 16, 16), 7, path, "conv")
        assert thw == (2, 8, 8)
        if not grad:
            return y, {}
        y.square().mean().backward()
    grads = {k: p.grad for k, p in block.named_parameters() if p.grad is not None}
    return y.detach(), {"input": tokens.grad, **grads}


@pytest.mark.parametrize("path", ["sdpa", "folded", "flex"])
def test_compiled_block_matches_explicit(path: str) -> None:
    """One block traced whole by dynamo and AOT autograd (``aot_eager``: the graphs torch.compile builds,
    without inductor's code generation): outputs, and gradients where the path has a CPU backward."""
    grad = path != "flex"
    ref = _block_run("explicit", grad=grad)
    torch._dynamo.reset()
    got = _block_run(path, compiled=True, grad=grad)
    assert (got[0] - ref[0]).abs().max().item() <= 1e-5
    for name, g in ref[1].items():
        torch.testing.assert_close(got[1][name], g, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["sdpa", "folded", "flex"])
def test_compiled_backbone_matches_explicit(path: str) -> None:
    """The whole tiny backbone, 6 prompts, through dynamo and AOT autograd (``aot_eager``)."""
    model, x = _model(6).train(), _clip(6, 48)
    model.attention = "explicit"
    ref = _with_grads(model, x)
    model.attention = path
    torch._dynamo.reset()
    compiled = torch.compile(model.forward_features, backend="aot_eager", fullgraph=True)
    if path == "flex":
        with torch.no_grad():
            assert (_outputs(model, x, compiled) - ref[0]).abs().max().item() <= 1e-5
    else:
        _assert_same(_with_grads(model, x, compiled), ref, f"compiled {path}")


@pytest.mark.slow
@pytest.mark.parametrize("path", ["sdpa", "folded", "flex"])
def test_inductor_compiled_path_matches_explicit(path: str) -> None:
    """The whole tiny backbone through inductor (C++ on CPU: minutes): flex forward, the others with
    gradients."""
    model, x = _model(6).train(), _clip(4, 64)
    model.attention = "explicit"
    ref = _with_grads(model, x)
    model.attention = path
    torch._dynamo.reset()
    compiled = torch.compile(model.forward_features)
    if path == "flex":
        with torch.no_grad():
            assert (_outputs(model, x, compiled) - ref[0]).abs().max().item() <= 1e-5
    else:
        _assert_same(_with_grads(model, x, compiled), ref, f"inductor {path}")


def _hd96(prompts: int) -> PromptMViT:
    """Two blocks (the second pools q and has the skip max-pool) with mvit_v2_s's head_dim of 96, which flex
    rounds up to 128 inside its kernel: the GPU tests' model, small enough to compile in seconds."""
    torch.manual_seed(0)
    cfg = pvit.get_config(
        "tiny", mode="plain", embed_dim=96, depths=(1, 1), num_heads=(1, 2), drop_path=0.0, head_dropout=0.0
    )
    return PromptMViT(cfg, prompts)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("compiled", [False, True])
def test_flex_gradients_on_cuda_match_explicit(compiled: bool, no_tf32: None) -> None:
    """The fused flex kernel (eager: through a compiled flex_attention; or the whole backbone compiled),
    head_dim 96, 6 prompts, a clip size other than the construction one (q/k lengths no multiple of 128),
    fp32: outputs and every gradient, the rel-pos tables' (scattered by the kernel's atomic adds) included."""
    model, x = _hd96(6).cuda().train(), _clip(6, 48, "cuda")
    model.attention = "explicit"
    ref = _with_grads(model, x)
    model.attention = "flex"
    torch._dynamo.reset()
    forward = torch.compile(model.forward_features) if compiled else None
    got = _with_grads(model, x, forward)
    assert (got[0] - ref[0]).abs().max().item() <= 1e-4
    assert ref[1]["blocks.1.attn.rel_pos_h"].abs().max() > 0
    for name, grad in ref[1].items():
        torch.testing.assert_close(got[1][name], grad, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.gpu
@cuda
def test_compiled_sdpa_with_the_mask_runs_in_bf16_on_cuda() -> None:
    """The sdpa path compiled under bf16 autocast runs fwd+bwd (it crashed with "cutlassF: no kernel found to
    launch!" before its mask was made dense and 8-aligned) and agrees with explicit to bf16 rounding."""
    model, x = _hd96(6).cuda().train(), _clip(6, 48, "cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model.attention = "explicit"
        ref = _with_grads(model, x)
        model.attention = "sdpa"
        torch._dynamo.reset()
        got = _with_grads(model, x, torch.compile(model.forward_features))
    assert (got[0] - ref[0]).abs().max() <= 0.03 * ref[0].abs().max()
    for name in ("blocks.0.attn.rel_pos_t", "blocks.1.attn.qkv.weight", "prompt_tokens"):
        assert (got[1][name] - ref[1][name]).norm() <= 0.05 * ref[1][name].norm(), name


@pytest.mark.gpu
@cuda
def test_folded_attention_runs_on_the_flash_kernel() -> None:
    """The folded path's widened q, k, v (head_dim 96 + 22 rel-pos columns -> 120) are accepted by the flash
    kernel in bf16, which refuses anything else rather than falling back."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model, x = _model(5, "mvit_v2_s").cuda().train(), _clip(16, 224, "cuda")[:1]
    model.attention = "folded"
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        _outputs(model, x).float().square().mean().backward()
    assert model.blocks[0].attn.rel_pos_t.grad.abs().max() > 0

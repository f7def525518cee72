"""The NanoChat recipe's `ATTENTION_BACKEND = "triton"` computes what its SDPA path computes.

The recipe counts a window of W tokens as keys i - W < j <= i, FlashAttention's left = W - 1; an
off-by-one there would pass every kernel test and still change the model, so the two backends run
the same weights here, windows narrower than T: the whole model and its gradients in fp32 under
the interpreter (CPU), and one windowed layer, its output at unit scale, on the device at hand
(on a GPU in bf16 under autocast, as the recipe trains there).
"""

import importlib

import pytest
import torch

import kernels.attention as attention
from support import ROOT

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not attention.HAS_TRITON, reason="triton is not installed")


@pytest.fixture
def recipe(monkeypatch):
    """The shipped recipe module, imported as the evaluator imports it (its folder on sys.path)."""
    monkeypatch.syspath_prepend(str(ROOT / "projects" / "nanochat_d12" / "recipe"))
    return importlib.import_module("base_train")


def _twins(recipe, kv_head_ratio: int):
    """(sdpa model, triton model) with the same weights: depth 2, layers "S" (20 tokens) and "L"."""
    hp = recipe.load_knobs("tiny")
    hp.kv_head_ratio, hp.aspect_ratio, hp.short_window = kv_head_ratio, 64, 20
    torch.manual_seed(0)
    sdpa = recipe.GPT(hp, vocab_size=64)
    for block in sdpa.blocks:  # the recipe zero-inits projections; any weights will do here
        torch.nn.init.normal_(block.attn.proj.weight, std=0.05)
        torch.nn.init.normal_(block.down.weight, std=0.05)
    hp.attention_backend = "triton"
    fused = recipe.GPT(hp, vocab_size=64)
    fused.load_state_dict(sdpa.state_dict())
    assert [b.attn.window for b in fused.blocks] == [20, 0] and fused.blocks[0].attn.flash is not None
    return sdpa, fused


@pytest.mark.skipif(CUDA, reason="fp32 runs SDPA on CUDA; the layer test covers the GPU")
@pytest.mark.parametrize("kv_head_ratio", [1, 2])
def test_triton_model_matches_sdpa_model(monkeypatch, recipe, kv_head_ratio):
    monkeypatch.setattr(attention, "_override_impl", "triton")
    sdpa, fused = _twins(recipe, kv_head_ratio)
    idx = torch.randint(0, 64, (2, 45), generator=torch.Generator().manual_seed(1))
    want, got = sdpa(idx), fused(idx)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    want.square().mean().backward()
    got.square().mean().backward()
    for (name, p), q in zip(sdpa.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-3, msg=name)


@pytest.mark.parametrize("kv_head_ratio", [1, 2])
def test_triton_window_layer_matches_sdpa_layer(monkeypatch, recipe, kv_head_ratio):
    # The output projection is the identity and values have unit scale, so the output is the
    # attention itself: one key too many or too few moves it by ~0.1, past the bf16 tolerance.
    monkeypatch.setattr(attention, "_override_impl", "triton")
    sdpa, fused = _twins(recipe, kv_head_ratio)
    layers = [model.blocks[0].attn for model in (sdpa, fused)]
    width = layers[0].proj.weight.shape[0]
    with torch.no_grad():
        for layer in layers:
            layer.proj.weight.copy_(torch.eye(width))
            torch.nn.init.normal_(layer.kv.weight, std=width**-0.5, generator=torch.Generator().manual_seed(2))
    x = torch.randn(2, 45, width, generator=torch.Generator().manual_seed(3))
    device = "cuda" if CUDA else "cpu"
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=CUDA):
        want, got = (layer.to(device)(x.to(device)).float() for layer in layers)
    atol, rtol = (3e-2, 2e-2) if CUDA else (1e-4, 1e-4)
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


def test_unknown_backend_is_refused(recipe):
    hp = recipe.load_knobs("tiny")
    hp.attention_backend = "flash3"
    with pytest.raises(ValueError, match="ATTENTION_BACKEND must be 'sdpa' or 'triton'"):
        recipe.GPT(hp, vocab_size=64)

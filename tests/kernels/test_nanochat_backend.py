"""The NanoChat recipe's `ATTENTION_BACKEND = "triton"` computes what its SDPA path computes.

The recipe counts a window of W tokens as keys i - W < j <= i, FlashAttention's left = W - 1; an
off-by-one there would pass every kernel test and still change the model, so the two backends run
the same weights here, on the Triton kernels (the interpreter on CPU), windows narrower than T.
On a GPU both run under bf16 autocast, as the recipe trains there, and only outputs are compared.
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


@pytest.mark.parametrize("kv_head_ratio", [1, 2])
def test_triton_backend_matches_sdpa_backend(monkeypatch, recipe, kv_head_ratio):
    monkeypatch.setattr(attention, "_override_impl", "triton")
    hp = recipe.load_knobs("tiny")  # depth 2, pattern "SL", 32-token window, head dim 64
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
    idx = torch.randint(0, 64, (2, 45), generator=torch.Generator().manual_seed(1))
    if CUDA:
        sdpa, fused, idx = sdpa.cuda(), fused.cuda(), idx.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=CUDA):
        want, got = sdpa(idx), fused(idx)
    torch.testing.assert_close(got, want, atol=3e-2 if CUDA else 1e-4, rtol=2e-2 if CUDA else 1e-4)
    if CUDA:
        return
    want.square().mean().backward()
    got.square().mean().backward()
    for (name, p), q in zip(sdpa.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_unknown_backend_is_refused(recipe):
    hp = recipe.load_knobs("tiny")
    hp.attention_backend = "flash3"
    with pytest.raises(ValueError, match="ATTENTION_BACKEND must be 'sdpa' or 'triton'"):
        recipe.GPT(hp, vocab_size=64)

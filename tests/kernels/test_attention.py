"""Tests of kernels.attention: Triton kernels against the fp32 reference, the SDPA fallback, dispatch.

Without a GPU the kernels run under Triton's interpreter (conftest.py), at small shapes chosen to
hit every masking branch: odd T, T below one block, GQA and MQA, windows narrower than a block,
two-sided windows and unequal tiles. The interpreter computes dots exactly and runs programs one
at a time, so these tests prove the algorithm and indexing, not GPU rounding, races or speed;
test_kernels_compile_for_hopper adds what only the GPU compiler checks (dot shapes, shared memory).
On a machine with CUDA the same tests run the compiled kernels (fp32 cases skipped: SDPA's), and
`-m gpu` adds a full nanochat-shape check.

Tolerances, for unit-variance inputs against reference_attention on the same rounded inputs:
  fp32 1e-4: measured errors are ~1e-6 (exact dots, fp32 accumulation);
  bf16 atol 3e-2, rtol 2e-2: outputs and gradients are rounded to bf16 (spacing 2**-7 relative;
    the interpreter truncates, so up to a whole spacing), and the backward's delta = rowsum(dO * O)
    uses the rounded O, as FlashAttention does, which adds up to ~1.5e-2 to dq and dk; torch's
    own bf16 SDPA misses the fp32 reference by as much (up to 2e-2 beyond rtol, in dv);
  fp16 5e-3: fp16 spacing is 2**-10 relative.
"""

import ast
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kernels.attention as attention
from kernels.attention import flash_attn_func, reference_attention

ROOT = Path(__file__).resolve().parents[2]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (3e-2, 2e-2), torch.float16: (5e-3, 5e-3)}

needs_triton = pytest.mark.skipif(not attention.HAS_TRITON, reason="triton is not installed")

if attention.HAS_TRITON and DEVICE.type == "cpu" and not attention._attn_launch.INTERPRETING:
    raise RuntimeError("triton was imported before tests/kernels/conftest.py set TRITON_INTERPRET=1; "
                       "run tests/kernels in its own pytest process, or export TRITON_INTERPRET=1")


def _inputs(B: int, T: int, H: int, KVH: int, D: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """q, k, v and an output gradient, unit-variance, already rounded to dtype."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(B, T, H, D), (B, T, KVH, D), (B, T, KVH, D), (B, T, H, D)]
    return [torch.randn(shape, generator=gen).to(DEVICE, dtype) for shape in shapes]


def _forward_backward(fn, q, k, v, do, **kwargs) -> list[torch.Tensor]:
    """[out, dq, dk, dv] of fn, from fresh leaves."""
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out = fn(q, k, v, **kwargs)
    out.backward(do)
    return [out.detach(), q.grad, k.grad, v.grad]


def _assert_matches_reference(got: list[torch.Tensor], q, k, v, do, dtype: torch.dtype, **kwargs) -> None:
    want = _forward_backward(reference_attention, q.float(), k.float(), v.float(), do.float(), **kwargs)
    atol, rtol = TOLERANCE[dtype]
    for name, g, w in zip(["out", "dq", "dk", "dv"], got, want):
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.float(), w, atol=atol, rtol=rtol, msg=lambda m, name=name: f"{name}: {m}")


# --- Triton kernels against the reference --------------------------------------------------------

CASES = [  # dtype, B, T, H, KVH, D, causal, window_size, interpreter (BLOCK_M, BLOCK_N)
    pytest.param(torch.float32, 1, 97, 4, 2, 64, True, (-1, -1), (32, 32), id="fp32-causal-gqa-odd-T"),
    pytest.param(torch.float32, 1, 20, 2, 1, 64, True, (-1, -1), (32, 32), id="fp32-causal-T-below-block"),
    pytest.param(torch.float32, 1, 130, 4, 1, 64, True, (20, 0), (32, 32), id="fp32-window20-mqa"),
    pytest.param(torch.float32, 1, 150, 4, 2, 64, True, (40, 0), (64, 32), id="fp32-window40-tiles64x32"),
    pytest.param(torch.float32, 1, 90, 2, 1, 64, True, (8, 0), (16, 64), id="fp32-window8-tiles16x64"),
    pytest.param(torch.float32, 1, 80, 2, 2, 128, False, (-1, -1), (32, 32), id="fp32-full-d128"),
    pytest.param(torch.float32, 1, 100, 2, 1, 64, False, (12, 7), (32, 32), id="fp32-two-sided-window"),
    pytest.param(torch.bfloat16, 2, 97, 4, 2, 64, True, (-1, -1), (32, 32), id="bf16-causal-gqa-odd-T"),
    pytest.param(torch.bfloat16, 1, 130, 4, 1, 128, True, (33, 0), (32, 32), id="bf16-window33-mqa-d128"),
    pytest.param(torch.bfloat16, 1, 150, 4, 2, 64, True, (40, 0), (64, 32), id="bf16-window40-tiles64x32"),
    pytest.param(torch.bfloat16, 1, 64, 2, 2, 64, False, (-1, -1), (32, 32), id="bf16-full"),
    pytest.param(torch.float16, 1, 100, 4, 2, 64, True, (20, 0), (32, 32), id="fp16-window20-gqa"),
]


@needs_triton
@pytest.mark.parametrize("dtype, B, T, H, KVH, D, causal, window_size, blocks", CASES)
def test_triton_matches_reference(monkeypatch, dtype, B, T, H, KVH, D, causal, window_size, blocks):
    if DEVICE.type == "cuda" and dtype == torch.float32:
        pytest.skip("fp32 on CUDA is dispatched to SDPA")
    monkeypatch.setattr(attention, "_override_impl", "triton")
    monkeypatch.setattr(attention._attn_launch, "INTERPRETER_BLOCKS", blocks)
    q, k, v, do = _inputs(B, T, H, KVH, D, dtype)
    kwargs = {"causal": causal, "window_size": window_size}
    got = _forward_backward(flash_attn_func, q, k, v, do, **kwargs)
    _assert_matches_reference(got, q, k, v, do, dtype, **kwargs)


@needs_triton
def test_triton_accepts_strided_inputs(monkeypatch):
    # nanochat-like views: q, k, v sliced out of one packed projection, so batch and time strides
    # differ from a contiguous tensor.
    monkeypatch.setattr(attention, "_override_impl", "triton")
    dtype = torch.bfloat16
    B, T, H, KVH, D = 1, 70, 4, 2, 64
    packed = torch.randn(B, T, H + 2 * KVH, D, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    q, k, v = packed[:, :, :H], packed[:, :, H:H + KVH], packed[:, :, H + KVH:]
    do = torch.randn(B, T, H, D, generator=torch.Generator().manual_seed(2)).to(DEVICE, dtype)
    assert not q.is_contiguous()
    got = _forward_backward(flash_attn_func, q, k, v, do, causal=True, window_size=(24, 0))
    _assert_matches_reference(got, q, k, v, do, dtype, causal=True, window_size=(24, 0))


@needs_triton
def test_triton_under_torch_compile_matches_eager(monkeypatch):
    # aot_eager runs Dynamo and AOTAutograd (fake tensors, the registered backward) without
    # Inductor's slow C++ compile; the custom op keeps the kernels out of the traced graph.
    monkeypatch.setattr(attention, "_override_impl", "triton")
    q, k, v, do = _inputs(1, 50, 4, 2, 64, torch.bfloat16)
    kwargs = {"causal": True, "window_size": (10, 0)}
    eager = _forward_backward(flash_attn_func, q, k, v, do, **kwargs)
    compiled = torch.compile(flash_attn_func, fullgraph=True, backend="aot_eager")
    for got, want in zip(_forward_backward(compiled, q, k, v, do, **kwargs), eager):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@needs_triton
def test_triton_custom_op_passes_opcheck():
    q, k, v, _ = _inputs(1, 40, 2, 1, 64, torch.bfloat16)
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), 12, 0, 0.125)
    torch.library.opcheck(attention._flash_attn_fwd, args)


# --- compile for Hopper without a GPU ------------------------------------------------------------

HOPPER_SHARED_MEMORY = 227 * 1024  # bytes of shared memory one H100 block may use


@needs_triton
@pytest.mark.parametrize("head_dim, configs", [(128, "all"), (64, "first")])
def test_kernels_compile_for_hopper(tmp_path, head_dim, configs):
    # Each kernel in bf16 (nanochat's dtype; fp16 builds the same code) compiled for sm_90 in a
    # subprocess, since the interpreter replaces the JIT functions here: every autotune config at
    # D=128, the largest shared memory, and one config per kernel at D=64 (about 2.5 s a compile).
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
               TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="1")
    script = Path(__file__).with_name("compile_sm90.py")
    result = subprocess.run([sys.executable, str(script), str(head_dim), "bf16", configs], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    launch = attention._attn_launch
    tuned = (launch.FWD_CONFIGS, launch.DKDV_CONFIGS, launch.DQ_CONFIGS)
    assert len(rows) == 1 + (sum(map(len, tuned)) if configs == "all" else len(tuned))
    for row in rows:
        assert row["shared"] <= HOPPER_SHARED_MEMORY, row
        assert row["wgmma"] or row["kernel"] == "_attn_bwd_preprocess", row


# --- SDPA fallback and reference -----------------------------------------------------------------

FALLBACK_CASES = [  # causal, window_size, KVH
    pytest.param(True, (-1, -1), 2, id="causal-gqa"),
    pytest.param(True, (5, 0), 4, id="window5"),
    pytest.param(True, (64, 0), 1, id="window-covers-T-mqa"),
    pytest.param(False, (-1, -1), 4, id="full"),
    pytest.param(False, (3, 6), 2, id="two-sided-window"),
]


@pytest.mark.parametrize("causal, window_size, KVH", FALLBACK_CASES)
def test_sdpa_fallback_matches_reference(monkeypatch, causal, window_size, KVH):
    monkeypatch.setattr(attention, "_override_impl", "sdpa")
    q, k, v, do = _inputs(2, 37, 4, KVH, 32, torch.float32)
    got = _forward_backward(flash_attn_func, q, k, v, do, causal=causal, window_size=window_size)
    _assert_matches_reference(got, q, k, v, do, torch.float32, causal=causal, window_size=window_size)


def test_reference_attention_matches_naive_loop():
    # An independent check of the oracle: one query at a time, keys chosen by the window rule.
    q, k, v, _ = _inputs(1, 12, 2, 1, 8, torch.float32)
    out = reference_attention(q, k, v, causal=False, window_size=(3, 2), softmax_scale=0.5)
    for i in range(12):
        keys = slice(max(0, i - 3), min(12, i + 3))
        scores = torch.einsum("hd,jd->hj", q[0, i], k[0, keys, 0]) * 0.5
        want = scores.softmax(-1) @ v[0, keys, 0]
        torch.testing.assert_close(out[0, i], want)


@pytest.mark.parametrize("T, causal, window_size, expected", [
    (100, True, (-1, -1), (-1, 0)),
    (100, True, (100, 0), (-1, 0)),  # nanochat's long layers pass (seq_len, 0)
    (100, True, (99, 0), (-1, 0)),
    (100, True, (98, 0), (98, 0)),
    (100, True, (20, 5), (20, 0)),  # causal overrides the right reach, as in FlashAttention
    (100, False, (-1, -1), (-1, -1)),
    (100, False, (20, 5), (20, 5)),
])
def test_normalize_window(T, causal, window_size, expected):
    assert attention._normalize_window(T, causal, window_size) == expected


def test_flash_attn_func_rejects_mismatched_shapes():
    q = torch.zeros(1, 8, 4, 64)
    with pytest.raises(ValueError, match="KVH"):
        flash_attn_func(q, torch.zeros(1, 8, 3, 64), torch.zeros(1, 8, 3, 64))
    with pytest.raises(ValueError, match="B, T, KVH, D"):
        flash_attn_func(q, torch.zeros(1, 8, 2, 64), torch.zeros(1, 8, 1, 64))
    with pytest.raises(ValueError, match="dtype"):
        flash_attn_func(q, torch.zeros(1, 8, 2, 64), torch.zeros(1, 8, 2, 64, dtype=torch.bfloat16))


# --- dispatch ------------------------------------------------------------------------------------

def _path(D: int = 64, device: torch.device = DEVICE) -> tuple[str, str]:
    """The path flash_attn_func would take for bf16 inputs of head dim D."""
    return attention._select_path(torch.zeros(1, 8, 2, D, dtype=torch.bfloat16, device=device))


@needs_triton
def test_dispatch_auto_picks_triton_when_it_can_run():
    assert _path()[0] == "triton"


def test_dispatch_falls_back_for_unsupported_head_dim():
    path, note = _path(D=32)
    assert path == "sdpa" and "head dim 32" in note


def test_dispatch_falls_back_without_triton(monkeypatch):
    monkeypatch.setattr(attention, "HAS_TRITON", False)
    path, note = _path()
    assert path == "sdpa" and "triton is not installed" in note


@needs_triton
def test_dispatch_falls_back_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setattr(attention._attn_launch, "INTERPRETING", False)
    path, note = _path(device=torch.device("cpu"))
    assert path == "sdpa" and "TRITON_INTERPRET=1" in note


def test_dispatch_override(monkeypatch):
    monkeypatch.setattr(attention, "_override_impl", "sdpa")
    assert _path()[0] == "sdpa"
    monkeypatch.setattr(attention, "_override_impl", "triton")
    with pytest.raises(RuntimeError, match="head dim 32"):
        _path(D=32)
    monkeypatch.setattr(attention, "_override_impl", "fa3")
    with pytest.raises(ValueError, match="_override_impl"):
        _path()


def test_flash_attn_func_logs_its_path_once(monkeypatch, caplog):
    monkeypatch.setattr(attention, "_noted", set())
    monkeypatch.setattr(attention, "_override_impl", "sdpa")
    q = torch.zeros(1, 8, 2, 64)
    with caplog.at_level(logging.INFO, logger="kernels.attention"):
        flash_attn_func(q, q, q)
        flash_attn_func(q, q, q)
    assert [r.getMessage() for r in caplog.records] == ["flash_attn_func: SDPA (forced by _override_impl)"]


def test_import_and_fallback_without_triton():
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch\n"
            "from kernels.attention import HAS_TRITON, flash_attn_func, reference_attention\n"
            "assert not HAS_TRITON\n"
            "q = torch.randn(1, 16, 4, 64); k = torch.randn(1, 16, 2, 64)\n"
            "out = flash_attn_func(q, k, k, window_size=(4, 0))\n"
            "torch.testing.assert_close(out, reference_attention(q, k, k, window_size=(4, 0)))\n")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_kernels_do_not_import_the_harness():
    for path in (ROOT / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            assert not any(n.split(".")[0] in {"mlflow", "mlflow_autoresearch"} for n in names), path


def _kernel_bench():
    spec = importlib.util.spec_from_file_location("kernel_bench", ROOT / "benchmarks" / "kernel_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_kernel_bench_counts_visible_pairs():
    bench = _kernel_bench()
    for T, window in [(2048, -1), (2048, 512), (100, 7), (100, 150)]:
        left = -1 if window >= T else window
        assert bench.visible_pairs(T, window) == attention._visible(T, left, 0, torch.device("cpu")).sum().item()
    assert bench.visible_pairs(2048, -1) == 2048 * 2049 // 2


def test_kernel_bench_tables_and_logs_what_it_measured(tmp_path, monkeypatch):
    """The GPU path's reporting, on rows as `run_case` makes them: the table, % of peak, a failed
    provider, and one MLflow metric per figure."""
    bench = _kernel_bench()
    timed = {"case": "d128", "provider": "triton", "max_err_out": 1e-3, "max_err_dq": 2e-3,
             "max_err_dk": 3e-3, "max_err_dv": 4e-3}
    for phase, ms in zip(bench.PHASES, (1.0, 2.0, 3.0)):
        timed.update({f"{phase}_ms": ms, f"{phase}_tflops": 989.0 * (4 - ms) / 4})
    rows = [timed, {"case": "d128", "provider": "sdpa", "error": "no GQA here"}]
    table = bench.render_table(rows, bench.HOPPER_PEAK_TFLOPS)
    assert "| d128 | triton | 1.000 | 742 (75%) | 2.000 | 494 (50%) | 3.000 | 247 (25%) | " \
           "1.0e-03/2.0e-03/3.0e-03/4.0e-03 |" in table
    assert "| d128 | sdpa | failed: no GQA here |" in table
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    bench.log_to_mlflow(rows, {"gpu": "test"}, table, "fwd (2048,): BLOCK_M=64")
    from mlflow import MlflowClient

    (run,) = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(["0"])
    assert run.data.metrics["d128.triton.fwd_ms"] == 1.0
    assert run.data.metrics["d128.triton.max_err_dv"] == 4e-3
    assert not any(key.startswith("d128.sdpa") for key in run.data.metrics)
    assert run.data.params == {"gpu": "test"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only exit")
@pytest.mark.parametrize("script", ["kernel_bench.py", "nanochat_step.py"])
def test_gpu_benchmarks_without_gpu_print_one_line_and_exit_zero(script):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.strip().splitlines()) == 1 and "no CUDA GPU" in result.stdout


# --- GPU only ------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("window_size", [(-1, -1), (512, 0)])
def test_triton_on_gpu_at_nanochat_shape(monkeypatch, window_size):
    # nanochat d20-like layer with GQA: bf16, T=2048, D=128. On the GPU p is rounded to bf16
    # before the PV product, unlike the interpreter; the bf16 tolerance is meant to cover it.
    monkeypatch.setattr(attention, "_override_impl", "triton")
    q, k, v, do = _inputs(2, 2048, 8, 2, 128, torch.bfloat16)
    got = _forward_backward(flash_attn_func, q, k, v, do, causal=True, window_size=window_size)
    _assert_matches_reference(got, q, k, v, do, torch.bfloat16, causal=True, window_size=window_size)
    compiled = torch.compile(flash_attn_func, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, causal=True, window_size=window_size), got[0], atol=0, rtol=0)

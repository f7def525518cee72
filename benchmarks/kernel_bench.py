"""Benchmark kernels.attention against SDPA and flex_attention at nanochat shapes; log to MLflow.

Run on a CUDA GPU (root MLproject entry point `kernel-bench`, or `python benchmarks/kernel_bench.py`).
For every case and provider it times forward, backward and forward+backward with
triton.testing.do_bench (median, L2 flushed between runs), checks the largest absolute error of
the output and of dq, dk, dv against the fp32 reference_attention on one batch element, prints
a table and logs every figure to the MLflow run MLflow resolves (the active run under `mlflow run`).
On a machine without CUDA it prints one line and exits 0.

FLOPs count only the (query, key) pairs a head can see, P (for causal attention
P = T(T+1)/2; with a left window W < T, P = W(W+1)/2 + (T-W)(W+1)):
    forward          = 4 * B * H * D * P     (Q K^T and P V: 2 multiply-adds of length D per pair)
    backward         = 2.5 * forward         (recomputed Q K^T, dV, dP, dQ, dK: 5 products per pair)
    forward+backward = 3.5 * forward
GQA does not change FLOPs; masked-out pairs are not counted even when a provider computes them.

Providers:
    triton       kernels.attention.flash_attn_func on the Triton kernels
    sdpa-flash   SDPA's FlashAttention-2 backend with is_causal (full causal cases only)
    sdpa-masked  nanochat's fallback: SDPA with an explicit T x T boolean mask (window cases)
    flex         torch.compile'd flex_attention with a causal (+ window) block mask
"""

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from kernels import attention  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PHASES = ("fwd", "bwd", "fwd_bwd")
FLOP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}
HOPPER_PEAK_TFLOPS = 989.0  # H100/H200 SXM dense bf16/fp16


@dataclass(frozen=True)
class Case:
    """One attention shape: batch, sequence, query heads, kv heads, head dim, left window (-1 = causal)."""

    name: str
    B: int
    T: int
    H: int
    KVH: int
    D: int
    window: int


def nanochat_cases(batch: int, seq_len: int, heads: int, window: int) -> list[Case]:
    """Full causal and short-window layers at D=128, the window with GQA, and a D=64 layer."""
    return [
        Case("causal_d128", batch, seq_len, heads, heads, 128, -1),
        Case(f"window{window}_d128", batch, seq_len, heads, heads, 128, window),
        Case(f"window{window}_d128_gqa", batch, seq_len, heads, heads // 4, 128, window),
        Case("causal_d64", batch, seq_len, 2 * heads, 2 * heads, 64, -1),
    ]


def visible_pairs(T: int, window: int) -> int:
    """(query, key) pairs one head attends to under causal masking with a left window (-1: none)."""
    reach = T - 1 if window < 0 else min(window, T - 1)
    return sum(min(i, reach) + 1 for i in range(T))


def forward_flops(case: Case) -> float:
    return 4.0 * case.B * case.H * case.D * visible_pairs(case.T, case.window)


def _providers(case: Case) -> dict[str, Callable]:
    """Attention callables on (B, T, H, D) tensors for this case; SDPA's path depends on the window."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    window = (case.window, 0)
    gqa = case.H != case.KVH

    def triton(q, k, v):
        return attention.flash_attn_func(q, k, v, causal=True, window_size=window)

    def sdpa_flash(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            out = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=gqa)
        return out.transpose(1, 2)

    def sdpa_masked(q, k, v):
        return attention._sdpa_attention(q, k, v, case.window, 0, case.D**-0.5)

    def visible(b, h, q_idx, kv_idx):
        causal = kv_idx <= q_idx
        return causal if case.window < 0 else causal & (q_idx - kv_idx <= case.window)

    block_mask = create_block_mask(visible, B=None, H=None, Q_LEN=case.T, KV_LEN=case.T, device="cuda")
    flex_compiled = torch.compile(flex_attention, dynamic=False)

    def flex(q, k, v):
        out = flex_compiled(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block_mask,
                            enable_gqa=gqa)
        return out.transpose(1, 2)

    sdpa = {"sdpa-flash": sdpa_flash} if case.window < 0 else {"sdpa-masked": sdpa_masked}
    return {"triton": triton, **sdpa, "flex": flex}


def _inputs(case: Case, batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(batch, case.T, case.H, case.D), (batch, case.T, case.KVH, case.D), (batch, case.T, case.KVH, case.D)]
    q, k, v = (torch.randn(s, device="cuda", dtype=dtype, generator=gen).requires_grad_() for s in shapes)
    do = torch.randn(shapes[0], device="cuda", dtype=dtype, generator=gen)
    return q, k, v, do


def max_errors(fn: Callable, case: Case, dtype: torch.dtype) -> dict[str, float]:
    """Largest |provider - reference| of out, dq, dk, dv on one batch element."""
    q, k, v, do = _inputs(case, 1, dtype)
    out = fn(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), do)
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    ref = attention.reference_attention(q32, k32, v32, causal=True, window_size=(case.window, 0))
    ref_grads = torch.autograd.grad(ref, (q32, k32, v32), do.float())
    pairs = zip(("out", "dq", "dk", "dv"), (out, *grads), (ref, *ref_grads))
    return {f"max_err_{name}": (got.float() - want).abs().max().item() for name, got, want in pairs}


def time_phases(fn: Callable, case: Case, dtype: torch.dtype) -> dict[str, float]:
    """Median milliseconds of forward, backward alone, and forward+backward."""
    from triton.testing import do_bench

    q, k, v, do = _inputs(case, case.B, dtype)
    out = fn(q, k, v)
    return {
        "fwd": do_bench(lambda: fn(q, k, v), return_mode="median"),
        "bwd": do_bench(lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True), return_mode="median"),
        "fwd_bwd": do_bench(lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), do), return_mode="median"),
    }


def run_case(case: Case, dtype: torch.dtype) -> list[dict]:
    """One row per provider: times, TFLOP/s and errors, or the error that stopped it."""
    rows = []
    for provider, fn in _providers(case).items():
        row = {"case": case.name, "provider": provider}
        try:
            row.update(max_errors(fn, case, dtype))
            for phase, ms in time_phases(fn, case, dtype).items():
                row[f"{phase}_ms"] = ms
                row[f"{phase}_tflops"] = FLOP_FACTOR[phase] * forward_flops(case) / (ms * 1e-3) / 1e12
        except RuntimeError as error:  # e.g. a backend without GQA, or out of memory
            row["error"] = str(error).splitlines()[0][:120]
        rows.append(row)
        torch.cuda.empty_cache()
    return rows


def render_table(rows: list[dict], peak_tflops: float | None) -> str:
    """Markdown table of every row; % of peak only on a GPU with a known peak."""
    head = ["case", "provider"] + [f"{p} {unit}" for p in PHASES for unit in ("ms", "TFLOP/s")]
    lines = ["| " + " | ".join(head + ["max err out/dq/dk/dv"]) + " |", "|---" * (len(head) + 1) + "|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['case']} | {row['provider']} | failed: {row['error']} |")
            continue
        cells = [row["case"], row["provider"]]
        for phase in PHASES:
            tflops = row[f"{phase}_tflops"]
            share = f" ({100 * tflops / peak_tflops:.0f}%)" if peak_tflops else ""
            cells += [f"{row[f'{phase}_ms']:.3f}", f"{tflops:.0f}{share}"]
        cells.append("/".join(f"{row[f'max_err_{n}']:.1e}" for n in ("out", "dq", "dk", "dv")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chosen_configs() -> str:
    """The config the autotuner picked for each kernel and tuning key (T, GROUP, windows, D, ...)."""
    launch = attention._attn_launch
    tuned = {"fwd": launch._fwd_tuned, "bwd_dkdv": launch._dkdv_tuned, "bwd_dq": launch._dq_tuned}
    return "\n".join(f"{name} {key}: {config}" for name, kernel in tuned.items()
                     for key, config in kernel.cache.items())


def log_to_mlflow(rows: list[dict], params: dict, table: str, configs: str) -> None:
    """Every figure as a metric named case.provider.figure; the table and configs as artifacts."""
    import mlflow

    metrics = {f"{row['case']}.{row['provider']}.{key}": value for row in rows for key, value in row.items()
               if isinstance(value, float)}
    with mlflow.start_run():
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.log_text(table, "kernel_bench.md")
        mlflow.log_text(configs, "autotune_configs.txt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="batch size (nanochat d24 speedrun: 16)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=12, help="query heads at D=128 (doubled at D=64)")
    parser.add_argument("--window", type=int, default=512, help="left window of the short layers")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("kernel_bench: no CUDA GPU on this machine, nothing to benchmark.")
        return
    if not attention.HAS_TRITON:
        sys.exit("kernel_bench: triton is not installed")
    import triton

    attention._override_impl = "triton"  # fail loudly rather than time the fallback
    gpu = torch.cuda.get_device_name()
    peak = HOPPER_PEAK_TFLOPS if ("H100" in gpu or "H200" in gpu) else None
    rows = [row for case in nanochat_cases(args.batch, args.seq_len, args.heads, args.window)
            for row in run_case(case, DTYPES[args.dtype])]
    table = render_table(rows, peak)
    print(f"{gpu}, torch {torch.__version__}, triton {triton.__version__}, {args.dtype}")
    print(table)
    configs = chosen_configs()
    print(configs)
    params = {**vars(args), "gpu": gpu, "torch": torch.__version__, "triton": triton.__version__,
              "cuda": torch.version.cuda}
    log_to_mlflow(rows, params, table, configs)
    if any("error" in row for row in rows if row["provider"] == "triton"):
        sys.exit("kernel_bench: the Triton kernel failed on some case (see the table)")


if __name__ == "__main__":
    main()

"""Host side of the Triton attention kernels: buffers, grids and tile configurations.

On CUDA every kernel but the preprocess is autotuned over a few configs (keyed on sequence
length, GQA group, window and head dim); under TRITON_INTERPRET=1 the kernels run serially on CPU
tensors with INTERPRETER_BLOCKS, because do_bench and autotuning need a GPU driver.
"""

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from ._attn_kernels import _attn_bwd_dkdv, _attn_bwd_dq, _attn_bwd_preprocess, _attn_fwd

#: True when TRITON_INTERPRET=1 was set before this module was imported (kernels then run on CPU).
INTERPRETING = isinstance(_attn_fwd, InterpretedFunction)

#: (BLOCK_M, BLOCK_N) under the interpreter. Each tile costs a few ms whatever its size, so tests
#: pick the largest tiles that still give several blocks, and change this to try unequal tiles.
INTERPRETER_BLOCKS: tuple[int, int] = (32, 32)

_LOG2E = 1.4426950408889634  # scores are scaled by log2(e) so the kernels can use exp2
_PREPROCESS_BLOCK_M = 128
_TUNE_KEY = ["T", "GROUP", "WINDOW_LEFT", "WINDOW_RIGHT", "HEAD_DIM"]


def _configs(*specs: tuple[int, int, int, int]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in specs]


# (BLOCK_M, BLOCK_N, num_warps, num_stages), untuned guesses until GPU figures exist. The autotuner
# skips configs over a GPU's shared memory (A100: 163 KB); tests/kernels compiles each for sm_90.
# At D=128, three stages of K and V tiles take 128 KB of shared memory (one program per SM);
# two stages take 96 KB, so two programs fit on an H100 SM.
FWD_CONFIGS = _configs((128, 64, 8, 3), (128, 64, 8, 2), (128, 64, 4, 3), (64, 64, 4, 3), (128, 128, 8, 2))
# dK/dV programs own BLOCK_N keys and stream BLOCK_M queries; two fp32 (BLOCK_N, D) accumulators
# live in registers, so key blocks stay at 64-128 rows.
DKDV_CONFIGS = _configs((64, 64, 4, 3), (32, 128, 8, 3), (64, 128, 8, 2))
DQ_CONFIGS = _configs((64, 64, 4, 3), (128, 64, 8, 3), (128, 32, 4, 3), (128, 64, 8, 2))

#: The autotuned kernels; each one's `cache` maps a tuning key to the config it chose. Choices are
#: also kept in Triton's on-disk cache (cache_results), so each cold trial process does not re-time
#: every config inside its training budget.
_fwd_tuned = triton.autotune(FWD_CONFIGS, key=_TUNE_KEY, cache_results=True)(_attn_fwd)
_dkdv_tuned = triton.autotune(DKDV_CONFIGS, key=_TUNE_KEY, cache_results=True)(_attn_bwd_dkdv)
_dq_tuned = triton.autotune(DQ_CONFIGS, key=_TUNE_KEY, cache_results=True)(_attn_bwd_dq)

_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


def _dot_dtype(dtype: torch.dtype) -> tl.dtype:
    """Operand dtype of tl.dot: the input dtype, but fp32 for bf16 under the interpreter (broken bf16 dot)."""
    if INTERPRETING and dtype == torch.bfloat16:
        return tl.float32
    return _TL_DTYPES[dtype]


def _unit_stride(x: torch.Tensor) -> torch.Tensor:
    """The kernels index the head dim without a stride; other dims may be strided."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _bth_strides(x: torch.Tensor) -> tuple[int, int, int]:
    """Strides of the batch, time and head dims of a (B, T, H, D) tensor."""
    return x.stride(0), x.stride(1), x.stride(2)


def _launch(kernel, tuned, grid, device: torch.device, args: tuple, meta: dict) -> None:
    """Run under the interpreter with INTERPRETER_BLOCKS, or on the GPU through the autotuner."""
    if INTERPRETING:
        blocks = {"BLOCK_M": INTERPRETER_BLOCKS[0], "BLOCK_N": INTERPRETER_BLOCKS[1]}
        kernel[grid(blocks)](*args, **meta, **blocks)
        return
    with torch.cuda.device(device):  # Triton launches on the current device, not the tensors'
        tuned[grid](*args, **meta)


def _delta(o: torch.Tensor, do: torch.Tensor) -> torch.Tensor:
    """rowsum(dO * O) as a fp32 (B, H, T) tensor."""
    B, T, H, D = o.shape
    delta = torch.empty((B, H, T), dtype=torch.float32, device=o.device)
    args = (o, do, delta, *_bth_strides(o), *_bth_strides(do), T, H)
    if INTERPRETING:
        block_m = INTERPRETER_BLOCKS[0]
        _attn_bwd_preprocess[(triton.cdiv(T, block_m), B * H)](*args, HEAD_DIM=D, BLOCK_M=block_m)
        return delta
    with torch.cuda.device(o.device):
        block_m = _PREPROCESS_BLOCK_M
        _attn_bwd_preprocess[(triton.cdiv(T, block_m), B * H)](*args, HEAD_DIM=D, BLOCK_M=block_m)
    return delta


def _meta(q: torch.Tensor, k: torch.Tensor, window_left: int, window_right: int) -> dict:
    return {"GROUP": q.shape[2] // k.shape[2], "WINDOW_LEFT": window_left, "WINDOW_RIGHT": window_right,
            "HEAD_DIM": q.shape[3], "DOT_DTYPE": _dot_dtype(q.dtype)}


def attn_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window_left: int, window_right: int,
                 softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Output (B, T, H, D) in q's dtype and the base-2 log-sum-exp of scaled scores (B, H, T), fp32."""
    q, k, v = _unit_stride(q), _unit_stride(k), _unit_stride(v)
    B, T, H, D = q.shape
    o = torch.empty((B, T, H, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, T), dtype=torch.float32, device=q.device)
    args = (q, k, v, o, lse, *_bth_strides(q), *_bth_strides(k), *_bth_strides(v), *_bth_strides(o),
            T, H, softmax_scale * _LOG2E)
    grid = lambda c: (triton.cdiv(T, c["BLOCK_M"]), B * H)  # noqa: E731
    _launch(_attn_fwd, _fwd_tuned, grid, q.device, args, _meta(q, k, window_left, window_right))
    return o, lse


def attn_backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                  lse: torch.Tensor, window_left: int, window_right: int,
                  softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) of attn_forward, from the saved output and log-sum-exp."""
    do, q, k, v = _unit_stride(do), _unit_stride(q), _unit_stride(k), _unit_stride(v)
    B, T, H, D = q.shape
    KVH = k.shape[2]
    delta = _delta(o, do)
    dq = torch.empty((B, T, H, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, T, KVH, D), dtype=k.dtype, device=k.device)
    dv = torch.empty((B, T, KVH, D), dtype=v.dtype, device=v.device)
    strides = (*_bth_strides(q), *_bth_strides(k), *_bth_strides(v), *_bth_strides(do))
    scales = (softmax_scale * _LOG2E, softmax_scale)
    meta = _meta(q, k, window_left, window_right)
    dkdv_grid = lambda c: (triton.cdiv(T, c["BLOCK_N"]), B * KVH)  # noqa: E731
    _launch(_attn_bwd_dkdv, _dkdv_tuned, dkdv_grid, q.device,
            (q, k, v, do, lse, delta, dk, dv, *strides, T, H, *scales), meta)
    dq_grid = lambda c: (triton.cdiv(T, c["BLOCK_M"]), B * H)  # noqa: E731
    _launch(_attn_bwd_dq, _dq_tuned, dq_grid, q.device,
            (q, k, v, do, lse, delta, dq, *strides, T, H, *scales), meta)
    return dq, dk, dv

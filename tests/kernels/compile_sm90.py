"""Compile every attention kernel config for Hopper (sm_90) without a GPU; print one JSON line each.

Run in a subprocess without TRITON_INTERPRET (the interpreter replaces the JIT functions that
triton.compile needs): `python tests/kernels/compile_sm90.py HEAD_DIM DTYPE...`. Catches dot
shapes, dtypes and shared-memory sizes that only the GPU compiler rejects; not out-of-bounds
accesses or races.
"""

import json
import sys

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels import _attn_kernels as K
from kernels import _attn_launch as L

HOPPER = GPUTarget("cuda", 90, 32)
# nanochat's short-window layer with GQA, so every loop (window edge, middle, diagonal, group) is built.
WINDOW = {"WINDOW_LEFT": 512, "WINDOW_RIGHT": 0, "GROUP": 2}
_FLOATS = {"qk_scale", "sm_scale"}
_FP32_BUFFERS = {"LSE", "DELTA"}
_BUFFERS = {"Q", "K", "V", "O", "DO", "DQ", "DK", "DV"} | _FP32_BUFFERS


def _signature(kernel, dtype: str, constexprs: dict) -> tuple[dict, dict]:
    """Triton signature and divisibility hints, as the runtime would specialize nanochat's shapes."""
    signature, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in _FLOATS:
            signature[name] = "fp32"
        elif name in _BUFFERS:
            signature[name] = "*fp32" if name in _FP32_BUFFERS else f"*{dtype}"
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "i32"
            if name.startswith("stride_"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, attrs


def compile_kernel(kernel, dtype: str, constexprs: dict, num_warps: int, num_stages: int) -> dict:
    """Compile one kernel for sm_90; report shared memory and whether it uses wgmma."""
    signature, attrs = _signature(kernel, dtype, constexprs)
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=HOPPER, options={"num_warps": num_warps, "num_stages": num_stages})
    blocks = {k: v for k, v in constexprs.items() if k.startswith("BLOCK")}
    return {"kernel": kernel.__name__, "dtype": dtype, **blocks, "num_warps": num_warps, "num_stages": num_stages,
            "shared": compiled.metadata.shared, "wgmma": "wgmma" in compiled.asm["ptx"]}


def main(head_dim: int, dtype: str, configs: str) -> None:
    """Compile the preprocess and either every autotune config ("all") or the first of each kernel."""
    dot = {"fp16": tl.float16, "bf16": tl.bfloat16}[dtype]
    tuned = [(K._attn_fwd, L.FWD_CONFIGS), (K._attn_bwd_dkdv, L.DKDV_CONFIGS), (K._attn_bwd_dq, L.DQ_CONFIGS)]
    for kernel, kernel_configs in tuned:
        for config in kernel_configs if configs == "all" else kernel_configs[:1]:
            constexprs = {**WINDOW, "HEAD_DIM": head_dim, "DOT_DTYPE": dot, **config.kwargs}
            print(json.dumps(compile_kernel(kernel, dtype, constexprs, config.num_warps, config.num_stages)))
    pre = {"HEAD_DIM": head_dim, "BLOCK_M": L._PREPROCESS_BLOCK_M}
    print(json.dumps(compile_kernel(K._attn_bwd_preprocess, dtype, pre, 4, 1)))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])

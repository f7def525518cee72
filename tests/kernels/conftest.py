"""Run the Triton kernels of tests/kernels on CPU, through Triton's interpreter, when there is no GPU.

Triton chooses interpreter or compiler when `@triton.jit` decorates a function, reading
TRITON_INTERPRET, so the flag is set here before anything imports triton (torch._dynamo does)
and the kernel modules are imported at once. The flag is then pinned in triton's knobs and
removed from os.environ again, so subprocesses started by other test folders never inherit it.
On a machine with CUDA nothing changes and the same tests run the compiled kernels.
"""

import os
import sys
from pathlib import Path

import torch

# `pytest` puts tests/ on sys.path, where tests/kernels would pass for a namespace package named
# `kernels`; the repository root must come first so the real package wins.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

if not torch.cuda.is_available():
    _previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import kernels.attention
    finally:
        if _previous is None:
            os.environ.pop("TRITON_INTERPRET")
        else:
            os.environ["TRITON_INTERPRET"] = _previous
    if kernels.attention.HAS_TRITON:
        import triton

        triton.knobs.runtime.interpret = True  # this also writes the variable back; drop it again
        if _previous is None:
            os.environ.pop("TRITON_INTERPRET")

"""Fused attention for nanochat: a Triton FlashAttention-2 kernel behind FlashAttention-3's call.

`flash_attn_func(q, k, v, causal, window_size, softmax_scale)` takes q (B, T, H, D) and k, v
(B, T, KVH, D), with KVH dividing H (grouped-query attention), and returns (B, T, H, D), so it can
stand in where nanochat calls FA3. Query i sees key j when i - left <= j <= i + right for
`window_size=(left, right)`, -1 meaning unlimited; `causal=True` forces right = 0.

Dispatch, decided per call and logged once per path:
  - "triton": the kernels in `_attn_kernels` (forward and backward, no T x T matrix): fp16 and
    bf16 on CUDA (compute capability 8.0 or newer), or fp16, bf16 and fp32 on CPU tensors when
    TRITON_INTERPRET=1 was set before import. They run inside a torch custom op with a
    registered backward, so torch.compile (fullgraph) treats them as opaque.
  - "sdpa": torch's scaled_dot_product_attention, with an explicit T x T mask for windows
    (slow: no block skipping), for everything else: no triton, other devices, head dims other
    than 64 and 128, fp32 on CUDA, dtypes other than fp16, bf16 and fp32.
Set `_override_impl` to "triton" or "sdpa" to force a path (tests); None chooses automatically.

`reference_attention` is the plain fp32 PyTorch oracle the tests and benchmark compare against.
Not covered: a KV cache or different query and key lengths, dropout, attention bias.
"""

import logging

import torch
import torch._dynamo
import torch.nn.functional as F

try:
    from . import _attn_launch
except ModuleNotFoundError as missing:
    if missing.name != "triton":
        raise
    _attn_launch = None
HAS_TRITON = _attn_launch is not None

#: Force a path for tests: "triton", "sdpa", or None for automatic dispatch.
_override_impl: str | None = None

SUPPORTED_HEAD_DIMS = (64, 128)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_log = logging.getLogger(__name__)
_noted: set[str] = set()


def _note_once(message: str) -> None:
    """Log which path ran, once per distinct message."""
    if message not in _noted:
        _noted.add(message)
        _log.info(message)


# torch.compile would graph-break on the logging call; this runs it after the compiled graph.
torch._dynamo.config.reorderable_logging_functions.add(_note_once)


def _triton_unsupported(q: torch.Tensor) -> str | None:
    """Why the Triton kernels cannot run inputs like q, or None if they can."""
    if not HAS_TRITON:
        return "triton is not installed"
    if q.dtype not in SUPPORTED_DTYPES:
        return f"dtype {q.dtype} (needs fp16, bf16 or fp32)"
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        return f"head dim {q.shape[-1]} (needs one of {SUPPORTED_HEAD_DIMS})"
    if _attn_launch.INTERPRETING:
        return None if q.device.type == "cpu" else f"device {q.device} under TRITON_INTERPRET=1 (needs cpu)"
    if q.device.type != "cuda":
        return f"device {q.device} (needs cuda, or cpu with TRITON_INTERPRET=1)"
    if torch.cuda.get_device_properties(q.device).major < 8:
        return "a GPU older than sm_80"
    if q.dtype == torch.float32:
        # Exact fp32 dots compile to slow FMA code (minutes per config); SDPA is exact and fast here.
        return "fp32 on CUDA (the kernel's GPU configs are for fp16 and bf16)"
    return None


def _select_path(q: torch.Tensor) -> tuple[str, str]:
    """("triton" or "sdpa", a one-line note saying why)."""
    reason = _triton_unsupported(q)
    if _override_impl == "sdpa":
        return "sdpa", "flash_attn_func: SDPA (forced by _override_impl)"
    if _override_impl == "triton":
        if reason is not None:
            raise RuntimeError(f"flash_attn_func: _override_impl='triton' but the kernel cannot run: {reason}")
        return "triton", "flash_attn_func: Triton kernel (forced by _override_impl)"
    if _override_impl is not None:
        raise ValueError(f"_override_impl must be 'triton', 'sdpa' or None, got {_override_impl!r}")
    if reason is None:
        where = "interpreter on CPU" if q.device.type == "cpu" else "CUDA"
        return "triton", f"flash_attn_func: Triton kernel ({where})"
    return "sdpa", f"flash_attn_func: SDPA fallback, Triton unavailable: {reason}"


def _normalize_window(T: int, causal: bool, window_size: tuple[int, int]) -> tuple[int, int]:
    """(left, right) with -1 for unlimited; reaches of T - 1 or more are unlimited too."""
    left, right = window_size
    if causal:
        right = 0
    left = -1 if left < 0 or left >= T - 1 else left
    right = -1 if right < 0 or right >= T - 1 else right
    return left, right


def _visible(T: int, left: int, right: int, device: torch.device) -> torch.Tensor:
    """Boolean (T, T) mask, True where query i (row) sees key j (column)."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    visible = torch.ones(T, T, dtype=torch.bool, device=device)
    if left >= 0:
        visible &= j >= i - left
    if right >= 0:
        visible &= j <= i + right
    return visible


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise ValueError(f"expected q (B, T, H, D) and k, v (B, T, KVH, D); got {q.shape}, {k.shape}, {v.shape}")
    (B, T, H, D), (Bk, Tk, KVH, Dk) = q.shape, k.shape
    if (Bk, Tk, Dk) != (B, T, D) or H % KVH != 0:
        raise ValueError(f"k, v {tuple(k.shape)} do not match q {tuple(q.shape)}: need same B, T, D and KVH | H")
    if not q.dtype == k.dtype == v.dtype or not q.device == k.device == v.device:
        raise ValueError(f"q, k, v must share dtype and device; got {q.dtype}, {k.dtype}, {v.dtype} on "
                         f"{q.device}, {k.device}, {v.device}")


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                        window_size: tuple[int, int] = (-1, -1),
                        softmax_scale: float | None = None) -> torch.Tensor:
    """Attention computed naively in fp32 (materializes T x T scores), returned in q's dtype.

    Same arguments and result as `flash_attn_func`; differentiable through autograd. The oracle
    for tests and the benchmark's error check.
    """
    _check_shapes(q, k, v)
    T, H, D = q.shape[1:]
    group = H // k.shape[2]
    left, right = _normalize_window(T, causal, window_size)
    scale = softmax_scale if softmax_scale is not None else D**-0.5
    qf = q.float().transpose(1, 2)
    kf = k.float().transpose(1, 2).repeat_interleave(group, dim=1)
    vf = v.float().transpose(1, 2).repeat_interleave(group, dim=1)
    scores = (qf @ kf.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~_visible(T, left, right, q.device), float("-inf"))
    return (scores.softmax(dim=-1) @ vf).transpose(1, 2).to(q.dtype)


def _sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, left: int, right: int,
                    scale: float) -> torch.Tensor:
    """The fallback: SDPA in (B, H, T, D), with an explicit mask for any window but plain causal."""
    T = q.shape[1]
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    gqa = q.shape[2] != k.shape[2]
    if right == -1 and left == -1:
        out = F.scaled_dot_product_attention(qt, kt, vt, scale=scale, enable_gqa=gqa)
    elif right == 0 and left == -1:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale, enable_gqa=gqa)
    else:
        mask = _visible(T, left, right, q.device)
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return out.transpose(1, 2)


@torch.library.custom_op("autoresearch_kernels::flash_attn_fwd", mutates_args=())
def _flash_attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window_left: int, window_right: int,
                    softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _attn_launch.attn_forward(q, k, v, window_left, window_right, softmax_scale)


@_flash_attn_fwd.register_fake
def _(q, k, v, window_left, window_right, softmax_scale):
    B, T, H, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((B, H, T), dtype=torch.float32)


@torch.library.custom_op("autoresearch_kernels::flash_attn_bwd", mutates_args=())
def _flash_attn_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                    lse: torch.Tensor, window_left: int, window_right: int,
                    softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _attn_launch.attn_backward(do, q, k, v, o, lse, window_left, window_right, softmax_scale)


@_flash_attn_bwd.register_fake
def _(do, q, k, v, o, lse, window_left, window_right, softmax_scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, window_left, window_right, softmax_scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.attn_args = (window_left, window_right, softmax_scale)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, do, _dlse):
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = _flash_attn_bwd(do, q, k, v, o, lse, *ctx.attn_args)
    return dq, dk, dv, None, None, None


_flash_attn_fwd.register_autograd(_backward, setup_context=_setup_context)


def flash_attn_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                    window_size: tuple[int, int] = (-1, -1),
                    softmax_scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product attention in nanochat's layout, with FlashAttention-3's arguments.

    Args:
        q: queries (B, T, H, D).
        k, v: keys and values (B, T, KVH, D); KVH must divide H.
        causal: mask future keys (sets the right window to 0).
        window_size: (left, right) reach of each query; -1 is unlimited.
        softmax_scale: multiplies q.k; defaults to 1 / sqrt(D).

    Returns:
        (B, T, H, D) in q's dtype.

    Raises:
        ValueError: on mismatched shapes, dtypes or devices, or an unknown `_override_impl`.
        RuntimeError: if `_override_impl == "triton"` but the kernel cannot run these inputs.
    """
    _check_shapes(q, k, v)
    left, right = _normalize_window(q.shape[1], causal, window_size)
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    path, note = _select_path(q)
    _note_once(note)
    if path == "triton":
        return _flash_attn_fwd(q, k, v, left, right, scale)[0]
    return _sdpa_attention(q, k, v, left, right, scale)

"""Triton kernels for FlashAttention-2-style attention in nanochat's (B, T, H, D) layout.

Forward: one program per (query block, batch * head) keeps an online softmax in base 2 and
writes the output plus a per-row log-sum-exp, never a T x T matrix. Backward: a preprocess
computes delta = rowsum(dO * O); one kernel accumulates dK and dV per (key block, batch * kv head)
by looping over every query head of the group (deterministic, no atomics); another accumulates
dQ per (query block, batch * head).

Visibility rule shared by every kernel: query i sees key j when j < T,
i - WINDOW_LEFT <= j (if WINDOW_LEFT >= 0) and j <= i + WINDOW_RIGHT (if WINDOW_RIGHT >= 0);
causal attention is WINDOW_RIGHT = 0. Each loop over blocks of the other axis is split into a
masked head (window edge), an unmasked middle and a masked tail (diagonal, sequence end), so most
tiles skip the mask arithmetic.

DOT_DTYPE is the dtype fed to tl.dot: the input dtype on GPUs, float32 for bf16 under the CPU
interpreter, whose bf16 dot multiplies raw bit patterns (triton-lang/triton#11584).
Pointer arithmetic only: tl.make_block_ptr was removed in Triton 3.9.
"""

import triton
import triton.language as tl


@triton.jit
def _attn_visible_range(start, T, REACH_BEFORE: tl.constexpr, REACH_AFTER: tl.constexpr,
                        BLOCK_SELF: tl.constexpr, BLOCK_OTHER: tl.constexpr):
    """Blocks of the other axis seen by rows [start, start + BLOCK_SELF), as lo <= full_lo <= full_hi.

    A row r sees columns c with r - REACH_BEFORE <= c <= r + REACH_AFTER and c < T (a reach of -1
    is unlimited). Blocks in [full_lo, full_hi) are visible to every row, so need no mask; blocks
    in [lo, full_lo) and [full_hi, hi) are partly visible. All bounds but hi are block-aligned.
    """
    if REACH_BEFORE >= 0:
        lo = tl.maximum(start - REACH_BEFORE, 0) // BLOCK_OTHER * BLOCK_OTHER
        full_lo = tl.cdiv(tl.maximum(start + BLOCK_SELF - 1 - REACH_BEFORE, lo), BLOCK_OTHER) * BLOCK_OTHER
    else:
        lo = 0
        full_lo = 0
    if REACH_AFTER >= 0:
        hi = tl.minimum(start + BLOCK_SELF + REACH_AFTER, T)
        full_end = tl.minimum(start + REACH_AFTER + 1, T)
    else:
        hi = T
        full_end = T
    full_lo = tl.minimum(full_lo, tl.cdiv(hi, BLOCK_OTHER) * BLOCK_OTHER)
    full_hi = tl.maximum(full_end // BLOCK_OTHER * BLOCK_OTHER, full_lo)
    return lo, full_lo, full_hi, hi


@triton.jit
def _attn_mask(rows, cols, T, REACH_BEFORE: tl.constexpr, REACH_AFTER: tl.constexpr):
    """Boolean (rows, cols) tile of the visibility rule, with cols past T hidden."""
    visible = cols[None, :] < T
    if REACH_BEFORE >= 0:
        visible = visible & (cols[None, :] >= rows[:, None] - REACH_BEFORE)
    if REACH_AFTER >= 0:
        visible = visible & (cols[None, :] <= rows[:, None] + REACH_AFTER)
    return visible


@triton.jit
def _attn_fwd_tiles(acc, l_i, m_i, q, K, V, stride_kt, stride_vt, offs_m, lo, hi, T, qk_scale,
                    WINDOW_LEFT: tl.constexpr, WINDOW_RIGHT: tl.constexpr, MASK: tl.constexpr,
                    HEAD_DIM: tl.constexpr, DOT_DTYPE: tl.constexpr, BLOCK_N: tl.constexpr):
    """Online-softmax update of (acc, l_i, m_i) over key blocks [lo, hi)."""
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kt_ptrs = K + offs_n[None, :] * stride_kt + offs_d[:, None]
        v_ptrs = V + offs_n[:, None] * stride_vt + offs_d[None, :]
        if MASK:
            kt = tl.load(kt_ptrs, mask=offs_n[None, :] < T, other=0.0)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < T, other=0.0)
        else:
            kt = tl.load(kt_ptrs)
            v = tl.load(v_ptrs)
        s = tl.dot(q, kt.to(DOT_DTYPE)) * qk_scale
        if MASK:
            s = tl.where(_attn_mask(offs_m, offs_n, T, WINDOW_LEFT, WINDOW_RIGHT), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(DOT_DTYPE), v.to(DOT_DTYPE), acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE,
              stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
              stride_vb, stride_vt, stride_vh, stride_ob, stride_ot, stride_oh,
              T, H, qk_scale,
              GROUP: tl.constexpr, WINDOW_LEFT: tl.constexpr, WINDOW_RIGHT: tl.constexpr,
              HEAD_DIM: tl.constexpr, DOT_DTYPE: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """O = softmax(scale * Q K^T + mask) V for one query block of one head; LSE in base 2."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)  # int64: batch offsets overflow int32 at large B*T*H*D
    b = bh // H
    h = bh % H
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + (h // GROUP) * stride_kh
    V += b * stride_vb + (h // GROUP) * stride_vh
    O += b * stride_ob + h * stride_oh
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    q = q.to(DOT_DTYPE)
    # A finite start keeps rows whose first tiles are fully masked (window edge) free of inf - inf.
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    lo, full_lo, full_hi, hi = _attn_visible_range(start_m, T, WINDOW_LEFT, WINDOW_RIGHT, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K, V, stride_kt, stride_vt, offs_m, lo, full_lo, T,
                                    qk_scale, WINDOW_LEFT, WINDOW_RIGHT, True, HEAD_DIM, DOT_DTYPE, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K, V, stride_kt, stride_vt, offs_m, full_lo, full_hi, T,
                                    qk_scale, WINDOW_LEFT, WINDOW_RIGHT, False, HEAD_DIM, DOT_DTYPE, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q, K, V, stride_kt, stride_vt, offs_m, full_hi, hi, T,
                                    qk_scale, WINDOW_LEFT, WINDOW_RIGHT, True, HEAD_DIM, DOT_DTYPE, BLOCK_N)
    # Only padding rows (offs_m >= T) can end with l_i == 0; keep them finite.
    l_i = tl.where(l_i == 0.0, 1.0, l_i)
    o = acc / l_i[:, None]
    tl.store(O + offs_m[:, None] * stride_ot + offs_d[None, :], o.to(O.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + bh * T + offs_m, m_i + tl.log2(l_i), mask=row_ok)


@triton.jit
def _attn_bwd_preprocess(O, DO, DELTA, stride_ob, stride_ot, stride_oh, stride_dob, stride_dot, stride_doh,
                         T, H, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """DELTA = rowsum(dO * O) in fp32, the softmax-gradient correction term of every row."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh * T + offs_m, delta, mask=row_ok)


@triton.jit
def _attn_dkdv_tiles(dk, dv, k, v, Q, DO, LSE, DELTA, stride_qt, stride_dot, offs_n, lo, hi, T, qk_scale,
                     WINDOW_LEFT: tl.constexpr, WINDOW_RIGHT: tl.constexpr, MASK: tl.constexpr,
                     HEAD_DIM: tl.constexpr, DOT_DTYPE: tl.constexpr, BLOCK_M: tl.constexpr):
    """Accumulate dK, dV of one key block over query blocks [lo, hi) of one head, in transposed form."""
    offs_d = tl.arange(0, HEAD_DIM)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        qt_ptrs = Q + offs_m[None, :] * stride_qt + offs_d[:, None]
        do_ptrs = DO + offs_m[:, None] * stride_dot + offs_d[None, :]
        if MASK:
            row_ok = offs_m < T
            qt = tl.load(qt_ptrs, mask=row_ok[None, :], other=0.0)
            do = tl.load(do_ptrs, mask=row_ok[:, None], other=0.0)
            lse = tl.load(LSE + offs_m, mask=row_ok, other=0.0)
            delta = tl.load(DELTA + offs_m, mask=row_ok, other=0.0)
        else:
            qt = tl.load(qt_ptrs)
            do = tl.load(do_ptrs)
            lse = tl.load(LSE + offs_m)
            delta = tl.load(DELTA + offs_m)
        qt = qt.to(DOT_DTYPE)
        do = do.to(DOT_DTYPE)
        st = tl.dot(k, qt) * qk_scale
        if MASK:
            # Rows of this tile are keys and columns are queries, so the reaches swap.
            st = tl.where(_attn_mask(offs_n, offs_m, T, WINDOW_RIGHT, WINDOW_LEFT), st, float("-inf"))
        pt = tl.exp2(st - lse[None, :])
        dv = tl.dot(pt.to(DOT_DTYPE), do, dv)
        dpt = tl.dot(v, tl.trans(do))
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(DOT_DTYPE), tl.trans(qt), dk)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV,
                   stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
                   stride_vb, stride_vt, stride_vh, stride_dob, stride_dot, stride_doh,
                   T, H, qk_scale, sm_scale,
                   GROUP: tl.constexpr, WINDOW_LEFT: tl.constexpr, WINDOW_RIGHT: tl.constexpr,
                   HEAD_DIM: tl.constexpr, DOT_DTYPE: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dK and dV of one key block of one kv head, summed over the GROUP query heads that share it."""
    start_n = tl.program_id(0) * BLOCK_N
    bkv = tl.program_id(1).to(tl.int64)
    kv_heads = H // GROUP
    b = bkv // kv_heads
    kvh = bkv % kv_heads
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    key_ok = offs_n < T
    kv_offs = offs_n[:, None] * stride_kt + offs_d[None, :]
    k = tl.load(K + b * stride_kb + kvh * stride_kh + kv_offs, mask=key_ok[:, None], other=0.0).to(DOT_DTYPE)
    v_offs = offs_n[:, None] * stride_vt + offs_d[None, :]
    v = tl.load(V + b * stride_vb + kvh * stride_vh + v_offs, mask=key_ok[:, None], other=0.0).to(DOT_DTYPE)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    lo, full_lo, full_hi, hi = _attn_visible_range(start_n, T, WINDOW_RIGHT, WINDOW_LEFT, BLOCK_N, BLOCK_M)
    for g in range(GROUP):
        h = kvh * GROUP + g
        Qh = Q + b * stride_qb + h * stride_qh
        DOh = DO + b * stride_dob + h * stride_doh
        LSEh = LSE + (b * H + h) * T
        DELTAh = DELTA + (b * H + h) * T
        dk, dv = _attn_dkdv_tiles(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, stride_qt, stride_dot, offs_n, lo, full_lo,
                                  T, qk_scale, WINDOW_LEFT, WINDOW_RIGHT, True, HEAD_DIM, DOT_DTYPE, BLOCK_M)
        dk, dv = _attn_dkdv_tiles(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, stride_qt, stride_dot, offs_n, full_lo,
                                  full_hi, T, qk_scale, WINDOW_LEFT, WINDOW_RIGHT, False, HEAD_DIM, DOT_DTYPE,
                                  BLOCK_M)
        dk, dv = _attn_dkdv_tiles(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, stride_qt, stride_dot, offs_n, full_hi, hi,
                                  T, qk_scale, WINDOW_LEFT, WINDOW_RIGHT, True, HEAD_DIM, DOT_DTYPE, BLOCK_M)
    # dK, dV outputs are contiguous (B, T, KVH, D) buffers allocated by the launcher.
    row_stride = kv_heads * HEAD_DIM
    out_offs = b * T * row_stride + kvh * HEAD_DIM + offs_n[:, None] * row_stride + offs_d[None, :]
    tl.store(DK + out_offs, (dk * sm_scale).to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + out_offs, dv.to(DV.dtype.element_ty), mask=key_ok[:, None])


@triton.jit
def _attn_dq_tiles(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, offs_m, lo, hi, T, qk_scale,
                   WINDOW_LEFT: tl.constexpr, WINDOW_RIGHT: tl.constexpr, MASK: tl.constexpr,
                   HEAD_DIM: tl.constexpr, DOT_DTYPE: tl.constexpr, BLOCK_N: tl.constexpr):
    """Accumulate dQ of one query block over key blocks [lo, hi)."""
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kt_ptrs = K + offs_n[None, :] * stride_kt + offs_d[:, None]
        vt_ptrs = V + offs_n[None, :] * stride_vt + offs_d[:, None]
        if MASK:
            kt = tl.load(kt_ptrs, mask=offs_n[None, :] < T, other=0.0)
            vt = tl.load(vt_ptrs, mask=offs_n[None, :] < T, other=0.0)
        else:
            kt = tl.load(kt_ptrs)
            vt = tl.load(vt_ptrs)
        kt = kt.to(DOT_DTYPE)
        s = tl.dot(q, kt) * qk_scale
        if MASK:
            s = tl.where(_attn_mask(offs_m, offs_n, T, WINDOW_LEFT, WINDOW_RIGHT), s, float("-inf"))
        p = tl.exp2(s - lse[:, None])
        dp = tl.dot(do, vt.to(DOT_DTYPE))
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(DOT_DTYPE), tl.trans(kt), dq)
    return dq


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ,
                 stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
                 stride_vb, stride_vt, stride_vh, stride_dob, stride_dot, stride_doh,
                 T, H, qk_scale, sm_scale,
                 GROUP: tl.constexpr, WINDOW_LEFT: tl.constexpr, WINDOW_RIGHT: tl.constexpr,
                 HEAD_DIM: tl.constexpr, DOT_DTYPE: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dQ of one query block of one head."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    K += b * stride_kb + (h // GROUP) * stride_kh
    V += b * stride_vb + (h // GROUP) * stride_vh
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0).to(DOT_DTYPE)
    do_ptrs = DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :]
    do = tl.load(do_ptrs, mask=row_ok[:, None], other=0.0).to(DOT_DTYPE)
    lse = tl.load(LSE + bh * T + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + bh * T + offs_m, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    lo, full_lo, full_hi, hi = _attn_visible_range(start_m, T, WINDOW_LEFT, WINDOW_RIGHT, BLOCK_M, BLOCK_N)
    dq = _attn_dq_tiles(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, offs_m, lo, full_lo, T, qk_scale,
                        WINDOW_LEFT, WINDOW_RIGHT, True, HEAD_DIM, DOT_DTYPE, BLOCK_N)
    dq = _attn_dq_tiles(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, offs_m, full_lo, full_hi, T, qk_scale,
                        WINDOW_LEFT, WINDOW_RIGHT, False, HEAD_DIM, DOT_DTYPE, BLOCK_N)
    dq = _attn_dq_tiles(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, offs_m, full_hi, hi, T, qk_scale,
                        WINDOW_LEFT, WINDOW_RIGHT, True, HEAD_DIM, DOT_DTYPE, BLOCK_N)
    # DQ is a contiguous (B, T, H, D) buffer allocated by the launcher.
    dq_ptrs = DQ + (b * T * H + h) * HEAD_DIM + offs_m[:, None] * (H * HEAD_DIM) + offs_d[None, :]
    tl.store(dq_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])

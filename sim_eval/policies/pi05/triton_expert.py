"""Triton kernels for the action expert's denoise step, and ``TritonExpert``: a drop-in for ``Pi05Model.velocity``.

Why not cuBLAS + torch.compile: at batch 1 a denoise step is 18 layers of GEMMs with only ``chunk`` (10 or 50) rows.
cuBLAS tiles for such an M leave most of the 132 SMs idle (an H100 streams the o / down projections' weights at
0.75-1.0 TB/s of its ~3); on top, every layer concatenated the prefix K/V with the new keys and ran masked or
single-CTA attention, and each norm, RoPE and gate was its own kernel. Here:

* ``_gemm_kernel`` streams the weight in narrow column tiles (optionally split over K), so every SM reads weights;
  its epilogue applies RoPE and scatters q / k / v (``MODE_QKV``) or computes ``gelu(gate) * up`` (``MODE_GELU``)
  in registers, and otherwise (``MODE_PARTIAL``) writes fp32 partial sums, one slice per K split;
* ``_ada_kernel`` sums those partials, applies the gated residual and the next adaRMS norm: one kernel per sublayer
  boundary (folding that work into the neighbouring GEMMs, by arrival counters or by atomics into an fp32 residual
  stream with the norm applied as the GEMM loads it, was measured slower: docs/benchmarks.md §2);
* ``_attn_kernel`` reads the prefix K/V where the ``PrefixCache`` holds it and the chunk's own K/V from a small
  buffer, splits the keys over programs (``_attn_combine_kernel`` merges the splits) and masks prefix padding by
  ``n_valid``, so a padded prefix costs nothing extra.

Those kernels, chained by programmatic dependent launch (PDL), are the default schedule (``schedule="kernels"``).
It also runs a batch of slots (the batched policy server): the weights are shared, so the slots' action tokens are
one operand of each GEMM (tiled over rows by the grid's third axis, each row's RoPE position taken from its slot's
``n_valid``: ``SLOT_ROWS``); the norms are row-wise with modulations that depend on the time step alone; attention
and its merge take the slot as the grid's third axis, each slot reading its own prefix and masking its own padding.
Batch 1 is the one-slot case (its GEMMs compile as before: one row tile, no slot positions).
Under PDL a kernel starts while the one before still runs and reads, before it waits, what no kernel writes: at chunk
10 the first ``GemmConfig.preload_k`` columns of each program's weight slice (all of it for o and down) and each
attention split's first prefix K/V block go into registers (``AttnConfig.preload``), the rest of the weights into L2.
On an H100 that takes a step from 648 to 569 us at chunk 10; at chunk 50 (64-row wgmma tiles, whose operands live in
shared memory) preloading was slower and is off (docs/benchmarks.md).

The alternative ``"persistent"`` runs a whole step as one launch of ``_step_kernel`` (one program per SM, the same
tiles as device functions, a grid barrier between the 8 phases of each layer). On an H100 it was slower than the
per-kernel chain even before preloading (677 vs 652 us a step at chunk 10, 955 vs 728 at chunk 50): its 143 barriers
cost ~1.1 us each, and pulling later phases' weights into L2 ahead of time made the GEMM phases slower, not faster.
It stays selectable for such experiments; ``"phased"`` runs the same code one phase per launch, so the CPU tests
check it.

Numerics follow ``Pi05Model.velocity``: every value the reference rounds to the model dtype (GEMM outputs, RoPE
terms, gated residuals, gelu) is rounded at the same point here; sums and norms accumulate in fp32. The kernels take
their element type from the tensors, so the CPU test suite checks them in fp32 under Triton's interpreter
(``TRITON_INTERPRET=1``) against ``Pi05Model.velocity`` on the fixture checkpoint; bf16 on a GPU is checked by
``scripts/bench_engine.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from sim_eval.policies.pi05.model import Pi05Model, point_linears_at, rope_cos_sin

MODE_PARTIAL, MODE_GELU, MODE_QKV = 0, 1, 2
# how a denoise step is launched: "kernels" = one kernel per GEMM / attention / norm, chained by programmatic
# dependent launch on Hopper (the default: fastest measured); "persistent" = one _step_kernel launch, grid barriers
# between phases (CUDA only); "phased" = _step_kernel once per layer and phase (same code, launch order is the
# barrier: runs anywhere, the interpreter included)
SCHEDULES = ("kernels", "persistent", "phased")
# the same values as compile-time constants that kernels may read
_PARTIAL = tl.constexpr(MODE_PARTIAL)
_GELU = tl.constexpr(MODE_GELU)
MODE_QKV_C = tl.constexpr(MODE_QKV)
NEG_BIG = tl.constexpr(-1.0e30)  # finite "minus infinity": a fully masked split gives exp(m - max) = 0, never NaN
MAX_SPINS = tl.constexpr(1 << 17)  # >= ~0.1 s of polling, where a barrier takes microseconds: a program is missing


@triton.jit
def _prefetch_l2(ptrs):
    """Ask L2 for the lines at ``ptrs`` without waiting for them (PTX ``prefetch.global.L2``)."""
    tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1]; // dummy $0", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def _pdl_enter():
    """Programmatic dependent launch: wait until the kernel before has finished and its writes are visible, then let
    the kernel after start its own prologue (weight prefetch). Everything a kernel does before this is read-only on
    data no kernel writes."""
    tl.extra.cuda.gdc_wait()
    tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _gelu_tanh(x):
    inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    return 0.5 * x * (1.0 + (2.0 / (1.0 + tl.exp(-2.0 * inner)) - 1.0))


@triton.jit
def _gemm_rows(pid_n, MODE: tl.constexpr, HALF: tl.constexpr, BLOCK_N: tl.constexpr):
    """Weight rows of column tile ``pid_n``: plain rows, or (``MODE != PARTIAL``) the first of each (j, j + HALF)
    pair; the pair's second row is ``row + HALF``."""
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if MODE == _PARTIAL:
        return rn
    return (rn // HALF) * (2 * HALF) + rn % HALF


@triton.jit
def _gemm_prefetch(
    w_ptr, pid_n, pid_k, K: tl.constexpr, MODE: tl.constexpr, HALF: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, PRE_K: tl.constexpr = 0,
):  # fmt: skip
    """Pull the weight slice of tile (pid_n, pid_k) into L2 (weights never depend on the kernel before), past its
    first ``PRE_K`` columns (those are loaded into registers: ``_gemm_preload``)."""
    row_a = _gemm_rows(pid_n, MODE, HALF, BLOCK_N)
    k_len = K // SPLIT_K
    k0 = pid_k * k_len
    sectors = tl.arange(0, BLOCK_K // 16) * 16  # one address per 32-byte sector
    for kk in range(PRE_K, k_len, BLOCK_K):
        _prefetch_l2(w_ptr + row_a[:, None] * K + (k0 + kk + sectors)[None, :])
        if MODE != _PARTIAL:
            _prefetch_l2(w_ptr + (row_a + HALF)[:, None] * K + (k0 + kk + sectors)[None, :])


@triton.jit
def _gemm_preload(w_ptr, pid_n, pid_k, K: tl.constexpr, MODE: tl.constexpr, HALF: tl.constexpr,
                  BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr, PRE_K: tl.constexpr):  # fmt: skip
    """The first ``PRE_K`` columns of tile (pid_n, pid_k)'s weight rows (and of their pair rows), as registers:
    loaded before the kernel waits for the one before, so they arrive while that one runs."""
    row_a = _gemm_rows(pid_n, MODE, HALF, BLOCK_N)
    cols = pid_k * (K // SPLIT_K) + tl.arange(0, PRE_K)
    wa = tl.load(w_ptr + row_a[:, None] * K + cols[None, :])
    if MODE == _PARTIAL:
        return wa, wa
    return wa, tl.load(w_ptr + (row_a + HALF)[:, None] * K + cols[None, :])


@triton.jit
def _gemm_tile(
    x_ptr,  # (M, K) activations
    w_ptr,  # (N, K) weight, row-major (nn.Linear layout)
    out_ptr,  # PARTIAL: (SPLIT_K, M, N) fp32; GELU: (M, N_OUT) model dtype; QKV: unused
    q_ptr,  # QKV: (M, NH * HD) queries after RoPE
    k_ptr,  # QKV: (M, HD) this chunk's keys after RoPE
    v_ptr,  # QKV: (M, HD) this chunk's values
    cos_ptr,  # QKV: (positions, HALF) RoPE table in the model dtype
    sin_ptr,
    pos0_ptr,  # QKV: (1,) int, position of the first action token (= valid prefix length); per slot when SLOT_ROWS
    M,
    pid_n,
    pid_k,
    K: tl.constexpr,
    N_OUT: tl.constexpr,  # PARTIAL: N; GELU: number of (gate, up) column pairs
    MODE: tl.constexpr,
    HALF: tl.constexpr,  # column pairs are (j, j + HALF) inside blocks of 2 * HALF weight rows
    NH: tl.constexpr,  # QKV: query heads; block NH is k, block NH + 1 is v
    HD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    STAGES: tl.constexpr = None,  # software-pipelining depth of the K loop; None: the launch's num_stages
    wa0=None,  # PRE_K > 0: ``_gemm_preload``'s first PRE_K weight columns of the tile (rows, pair rows)
    wb0=None,
    PRE_K: tl.constexpr = 0,
    m0=0,  # first row of the tile (M tiles: rows of a batch of slots)
    SLOT_ROWS: tl.constexpr = 0,  # > 0: rows are slots of SLOT_ROWS tokens each, slot s at position pos0_ptr[s]
):
    """One (BLOCK_M rows from ``m0``, BLOCK_N columns, one K split) tile of ``x @ w.T`` with the mode's epilogue."""
    rm = m0 + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    row_a = _gemm_rows(pid_n, MODE, HALF, BLOCK_N)
    k_len = K // SPLIT_K
    k0 = pid_k * k_len
    acc_a = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if PRE_K > 0:
        x0 = tl.load(x_ptr + rm[:, None] * K + (k0 + tl.arange(0, PRE_K))[None, :], mask=m_ok[:, None], other=0.0)
        acc_a = tl.dot(x0, tl.trans(wa0), acc_a)
        if MODE != _PARTIAL:
            acc_b = tl.dot(x0, tl.trans(wb0), acc_b)
    x_ptrs = x_ptr + rm[:, None] * K + (k0 + PRE_K + rk)[None, :]
    wa_ptrs = w_ptr + row_a[:, None] * K + (k0 + PRE_K + rk)[None, :]
    wb_ptrs = w_ptr + (row_a + HALF)[:, None] * K + (k0 + PRE_K + rk)[None, :]
    for _ in tl.range(PRE_K, k_len, BLOCK_K, num_stages=STAGES):
        x = tl.load(x_ptrs, mask=m_ok[:, None], other=0.0)
        acc_a = tl.dot(x, tl.trans(tl.load(wa_ptrs)), acc_a)
        if MODE != _PARTIAL:
            acc_b = tl.dot(x, tl.trans(tl.load(wb_ptrs)), acc_b)
        x_ptrs += BLOCK_K
        wa_ptrs += BLOCK_K
        wb_ptrs += BLOCK_K
    if MODE == _PARTIAL:
        tl.store(out_ptr + (pid_k * M + rm[:, None]) * N_OUT + rn[None, :], acc_a, mask=m_ok[:, None])
    elif MODE == _GELU:
        dt = out_ptr.dtype.element_ty
        gate = _gelu_tanh(acc_a.to(dt).to(tl.float32)).to(dt).to(tl.float32)
        up = acc_b.to(dt).to(tl.float32)
        tl.store(out_ptr + rm[:, None] * N_OUT + rn[None, :], (gate * up).to(dt), mask=m_ok[:, None])
    else:
        dt = q_ptr.dtype.element_ty
        a = acc_a.to(dt).to(tl.float32)  # first half of a head's dims
        b = acc_b.to(dt).to(tl.float32)  # second half
        blk = rn // HALF
        d = rn % HALF
        if SLOT_ROWS > 0:  # a batch of slots: each token's position is its slot's first plus its index in the slot
            pos = tl.load(pos0_ptr + rm // SLOT_ROWS, mask=m_ok, other=0) + rm % SLOT_ROWS
        else:
            pos = tl.load(pos0_ptr) + rm
        c = tl.load(cos_ptr + pos[:, None] * HALF + d[None, :], mask=m_ok[:, None], other=0.0).to(tl.float32)
        s = tl.load(sin_ptr + pos[:, None] * HALF + d[None, :], mask=m_ok[:, None], other=0.0).to(tl.float32)
        # x * cos + rotate_half(x) * sin, each product rounded as the reference does
        ra = ((a * c).to(dt).to(tl.float32) + (-b * s).to(dt).to(tl.float32)).to(dt)
        rb = ((b * c).to(dt).to(tl.float32) + (a * s).to(dt).to(tl.float32)).to(dt)
        rope = (blk <= NH)[None, :]
        oa = tl.where(rope, ra, a.to(dt))
        ob = tl.where(rope, rb, b.to(dt))
        q_off = rm[:, None] * (NH * HD) + (blk * HD + d)[None, :]
        is_q = m_ok[:, None] & (blk < NH)[None, :]
        tl.store(q_ptr + q_off, oa, mask=is_q)
        tl.store(q_ptr + q_off + HALF, ob, mask=is_q)
        kv_off = rm[:, None] * HD + d[None, :]
        is_k = m_ok[:, None] & (blk == NH)[None, :]
        tl.store(k_ptr + kv_off, oa, mask=is_k)
        tl.store(k_ptr + kv_off + HALF, ob, mask=is_k)
        is_v = m_ok[:, None] & (blk == NH + 1)[None, :]
        tl.store(v_ptr + kv_off, oa, mask=is_v)
        tl.store(v_ptr + kv_off + HALF, ob, mask=is_v)


@triton.jit
def _gemm_kernel(
    x_ptr, w_ptr, out_ptr, q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, pos0_ptr, M,
    K: tl.constexpr, N_OUT: tl.constexpr, MODE: tl.constexpr, HALF: tl.constexpr, NH: tl.constexpr,
    HD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    PRE_K: tl.constexpr, USE_PDL: tl.constexpr, SLOT_ROWS: tl.constexpr,
):  # fmt: skip
    """One GEMM (``_gemm_tile``) per launch; arguments as there. A batch of slots (``SLOT_ROWS`` > 0) may have more
    rows than one tile: the grid's third axis runs over BLOCK_M-row tiles."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    m0 = 0
    if SLOT_ROWS > 0:
        m0 = tl.program_id(2) * BLOCK_M
    # weights never depend on the kernel before: the first PRE_K columns into registers, the rest into L2, while
    # that kernel finishes
    wa0, wb0 = None, None
    if PRE_K > 0:
        wa0, wb0 = _gemm_preload(w_ptr, pid_n, pid_k, K, MODE, HALF, BLOCK_N, SPLIT_K, PRE_K)
    if USE_PDL:
        _gemm_prefetch(w_ptr, pid_n, pid_k, K, MODE, HALF, BLOCK_N, BLOCK_K, SPLIT_K, PRE_K)
        _pdl_enter()
    _gemm_tile(
        x_ptr, w_ptr, out_ptr, q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, pos0_ptr, M, pid_n, pid_k,
        K, N_OUT, MODE, HALF, NH, HD, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, None, wa0, wb0, PRE_K, m0, SLOT_ROWS,
    )  # fmt: skip


@triton.jit
def _ada_row(x_ptr, part_ptr, h_ptr, row, M, D, eps, scale, shift, gate, S: tl.constexpr, HAS_RES: tl.constexpr,
             BLOCK_D: tl.constexpr):  # fmt: skip
    """Row ``row``: x += gate * sum of the S partials (when HAS_RES), then h = adaRMS(x) with (scale, shift)."""
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    dt = h_ptr.dtype.element_ty
    x = tl.load(x_ptr + row * D + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for s in tl.static_range(S):  # unrolled: all partial loads in flight at once
            acc += tl.load(part_ptr + (s * M + row) * D + offs, mask=mask, other=0.0)
        gated = (acc.to(dt).to(tl.float32) * gate).to(dt).to(tl.float32)
        x = (x + gated).to(dt).to(tl.float32)
        tl.store(x_ptr + row * D + offs, x.to(dt), mask=mask)
    inv_rms = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps)
    tl.store(h_ptr + row * D + offs, (x * inv_rms * (1.0 + scale) + shift).to(dt), mask=mask)


@triton.jit
def _load_mods(mod_ptr, gate_ptr, D, BLOCK_D: tl.constexpr):
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    scale = tl.load(mod_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    shift = tl.load(mod_ptr + D + offs, mask=mask, other=0.0).to(tl.float32)
    gate = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return scale, shift, gate


@triton.jit
def _ada_kernel(
    x_ptr,  # (M, D) residual stream, updated in place when HAS_RES
    part_ptr,  # (S, M, D) fp32 partial sums of the sublayer output
    gate_ptr,  # (D,) adaRMS gate of the sublayer that produced the partials
    mod_ptr,  # (3 * D,) [scale, shift, gate] of the next norm
    h_ptr,  # (M, D) normalized, modulated output
    M,
    D,
    eps,
    S: tl.constexpr,
    HAS_RES: tl.constexpr,
    BLOCK_D: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    # modulations are fixed for the whole denoise call: read them before waiting for the kernel before
    scale, shift, gate = _load_mods(mod_ptr, gate_ptr, D, BLOCK_D)
    if USE_PDL:
        _pdl_enter()
    _ada_row(x_ptr, part_ptr, h_ptr, tl.program_id(0), M, D, eps, scale, shift, gate, S, HAS_RES, BLOCK_D)


@triton.jit
def _attn_prefetch(kp_ptr, vp_ptr, P, pid_s, CHUNK: tl.constexpr, HD: tl.constexpr, BLOCK_KV: tl.constexpr):
    """Pull split ``pid_s``'s prefix keys and values into L2 (fixed for the whole denoise call)."""
    sectors = tl.arange(0, HD // 16) * 16
    start = pid_s * CHUNK
    for j0 in range(start, start + CHUNK, BLOCK_KV):
        jj = j0 + tl.arange(0, BLOCK_KV)
        in_p = (jj < P)[:, None]
        _prefetch_l2(tl.where(in_p, kp_ptr + jj[:, None] * HD + sectors[None, :], kp_ptr))
        _prefetch_l2(tl.where(in_p, vp_ptr + jj[:, None] * HD + sectors[None, :], vp_ptr))


@triton.jit
def _attn_prefix_block(kp_ptr, vp_ptr, j0, P, n_valid, HD: tl.constexpr, BLOCK_KV: tl.constexpr):
    """Prefix keys and values j0 .. j0 + BLOCK_KV (zeros past the valid prefix)."""
    j = j0 + tl.arange(0, BLOCK_KV)
    dd = tl.arange(0, HD)
    in_prefix = ((j < P) & (j < n_valid))[:, None]
    kp = tl.load(kp_ptr + j[:, None] * HD + dd[None, :], mask=in_prefix, other=0.0)
    vp = tl.load(vp_ptr + j[:, None] * HD + dd[None, :], mask=in_prefix, other=0.0)
    return kp, vp


@triton.jit
def _attn_block(q, kp, vp, ks_ptr, vs_ptr, j0, P, M, n_valid, scale, m_i, l_i, acc, HD: tl.constexpr,
                BLOCK_KV: tl.constexpr):  # fmt: skip
    """One online-softmax step over keys j0 .. j0 + BLOCK_KV: the prefix's (``kp``, ``vp``, zero where absent) plus
    the chunk's own, which follow the prefix."""
    j = j0 + tl.arange(0, BLOCK_KV)
    dd = tl.arange(0, HD)
    in_prefix = (j < P) & (j < n_valid)
    in_chunk = (j >= P) & (j < P + M)
    ks = tl.load(ks_ptr + (j - P)[:, None] * HD + dd[None, :], mask=in_chunk[:, None], other=0.0)
    valid = (in_prefix | in_chunk)[None, :]
    s = tl.where(valid, tl.dot(q, tl.trans(kp + ks)) * scale, NEG_BIG)
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp(m_i - m_new)
    p = tl.where(valid, tl.exp(s - m_new[:, None]), 0.0)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    vs = tl.load(vs_ptr + (j - P)[:, None] * HD + dd[None, :], mask=in_chunk[:, None], other=0.0)
    v = vp + vs
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit
def _attn_tile(
    q_ptr,  # (R, HD) query rows, R = M * NH (row = token * NH + head)
    kp_ptr,  # (P, HD) prefix keys of this layer
    vp_ptr,
    ks_ptr,  # (M, HD) the chunk's keys
    vs_ptr,
    n_valid,  # int: prefix slots >= n_valid are padding
    acc_ptr,  # (N_SPLIT, R, HD) fp32 un-normalized outputs
    m_ptr,  # (N_SPLIT, R) fp32 running max
    l_ptr,  # (N_SPLIT, R) fp32 softmax denominators
    R,
    P,
    M,
    scale,
    pid_r,
    pid_s,
    CHUNK: tl.constexpr,  # keys per split, a multiple of BLOCK_KV
    HD: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_KV: tl.constexpr,
    STAGES: tl.constexpr = None,  # software-pipelining depth of the key loop; None: the launch's num_stages
    kp0=None,  # PRELOAD: the split's first prefix key / value block (``_attn_prefix_block``), loaded earlier
    vp0=None,
    PRELOAD: tl.constexpr = False,
):
    """Query rows block ``pid_r`` against key split ``pid_s`` (prefix keys, then the chunk's own keys)."""
    rr = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = rr < R
    dd = tl.arange(0, HD)
    start = pid_s * CHUNK
    q = tl.load(q_ptr + rr[:, None] * HD + dd[None, :], mask=r_ok[:, None], other=0.0)
    m_i = tl.full([BLOCK_R], NEG_BIG, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_R], dtype=tl.float32)
    acc = tl.zeros([BLOCK_R, HD], dtype=tl.float32)
    if PRELOAD:
        m_i, l_i, acc = _attn_block(q, kp0, vp0, ks_ptr, vs_ptr, start, P, M, n_valid, scale, m_i, l_i, acc, HD,
                                    BLOCK_KV)  # fmt: skip
    FIRST: tl.constexpr = BLOCK_KV if PRELOAD else 0
    for j0 in tl.range(start + FIRST, start + CHUNK, BLOCK_KV, num_stages=STAGES):
        kp, vp = _attn_prefix_block(kp_ptr, vp_ptr, j0, P, n_valid, HD, BLOCK_KV)
        m_i, l_i, acc = _attn_block(q, kp, vp, ks_ptr, vs_ptr, j0, P, M, n_valid, scale, m_i, l_i, acc, HD, BLOCK_KV)
    tl.store(acc_ptr + (pid_s * R + rr)[:, None] * HD + dd[None, :], acc, mask=r_ok[:, None])
    tl.store(m_ptr + pid_s * R + rr, m_i, mask=r_ok)
    tl.store(l_ptr + pid_s * R + rr, l_i, mask=r_ok)


@triton.jit
def _attn_kernel(
    q_ptr, kp_ptr, vp_ptr, ks_ptr, vs_ptr, n_valid_ptr, acc_ptr, m_ptr, l_ptr, R, P, M, scale, KV_STRIDE,
    CHUNK: tl.constexpr, HD: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_KV: tl.constexpr, PRELOAD: tl.constexpr,
    USE_PDL: tl.constexpr,
):  # fmt: skip
    """Split-key attention (``_attn_tile``), grid (row blocks, key splits, slots); arguments as there, per slot: slot
    b's query rows, chunk K/V, ``n_valid`` and split buffers follow slot b - 1's, its prefix K/V start ``KV_STRIDE``
    elements after (batch 1: one slot). The prefix K/V and ``n_valid`` are fixed for the whole denoise call: with
    ``PRELOAD`` the split's first block is loaded into registers before waiting for the kernel before."""
    pid_s = tl.program_id(1)
    b = tl.program_id(2)
    splits = tl.num_programs(1)
    q_ptr += b * R * HD
    kp_ptr += b * KV_STRIDE
    vp_ptr += b * KV_STRIDE
    ks_ptr += b * M * HD
    vs_ptr += b * M * HD
    acc_ptr += b * splits * R * HD
    m_ptr += b * splits * R
    l_ptr += b * splits * R
    n_valid = tl.load(n_valid_ptr + b)
    kp0, vp0 = None, None
    if PRELOAD:
        kp0, vp0 = _attn_prefix_block(kp_ptr, vp_ptr, pid_s * CHUNK, P, n_valid, HD, BLOCK_KV)
    if USE_PDL:
        _attn_prefetch(kp_ptr, vp_ptr, P, pid_s, CHUNK, HD, BLOCK_KV)
        _pdl_enter()
    _attn_tile(
        q_ptr, kp_ptr, vp_ptr, ks_ptr, vs_ptr, n_valid, acc_ptr, m_ptr, l_ptr, R, P, M, scale,
        tl.program_id(0), pid_s, CHUNK, HD, BLOCK_R, BLOCK_KV, None, kp0, vp0, PRELOAD,
    )  # fmt: skip


@triton.jit
def _combine_tile(acc_ptr, m_ptr, l_ptr, out_ptr, R, pid_r, pid_d, N_SPLIT: tl.constexpr, HD: tl.constexpr,
                  BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """Merge the key splits of query rows block ``pid_r``, dims block ``pid_d``, into the attention output."""
    rr = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = rr < R
    dd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_max = tl.full([BLOCK_R], NEG_BIG, dtype=tl.float32)
    for s in tl.static_range(N_SPLIT):
        m_max = tl.maximum(m_max, tl.load(m_ptr + s * R + rr, mask=r_ok, other=NEG_BIG))
    num = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    den = tl.zeros([BLOCK_R], dtype=tl.float32)
    for s in tl.static_range(N_SPLIT):
        w = tl.exp(tl.load(m_ptr + s * R + rr, mask=r_ok, other=NEG_BIG) - m_max)
        den += w * tl.load(l_ptr + s * R + rr, mask=r_ok, other=0.0)
        acc = tl.load(acc_ptr + (s * R + rr)[:, None] * HD + dd[None, :], mask=r_ok[:, None], other=0.0)
        num += w[:, None] * acc
    out = num / tl.where(r_ok, den, 1.0)[:, None]
    tl.store(out_ptr + rr[:, None] * HD + dd[None, :], out.to(out_ptr.dtype.element_ty), mask=r_ok[:, None])


@triton.jit
def _attn_combine_kernel(
    acc_ptr, m_ptr, l_ptr, out_ptr, R, N_SPLIT: tl.constexpr, HD: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr, USE_PDL: tl.constexpr,
):  # fmt: skip
    """Grid (row blocks, dims blocks, slots); buffers per slot as in ``_attn_kernel``."""
    b = tl.program_id(2)
    if USE_PDL:
        _pdl_enter()
    acc_ptr += b * N_SPLIT * R * HD
    m_ptr += b * N_SPLIT * R
    l_ptr += b * N_SPLIT * R
    out_ptr += b * R * HD
    _combine_tile(acc_ptr, m_ptr, l_ptr, out_ptr, R, tl.program_id(0), tl.program_id(1), N_SPLIT, HD, BLOCK_R,
                  BLOCK_D)  # fmt: skip


# ---------------------------------------------------------------------------------------------- persistent step
@triton.jit
def _fence_gpu(anchor):
    """``fence.acq_rel.gpu`` in every thread: orders this thread's global writes before, and its reads after, the
    grid barrier (and drops stale L1 lines). ``anchor`` is any scalar; it only gives the asm an operand."""
    tl.inline_asm_elementwise("fence.acq_rel.gpu; // $0 $1", "=r,r", [anchor], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _grid_sync(sync_ptr, target, anchor, FENCES: tl.constexpr):
    """Grid-wide barrier of a persistent launch: every program adds 1 to ``sync_ptr[0]`` and waits until it reaches
    ``target`` (programs x barriers passed so far). Gives up after MAX_SPINS polls and raises ``sync_ptr[2]`` so a
    launch whose programs cannot all be resident fails loudly instead of hanging."""
    if FENCES:
        _fence_gpu(anchor)
    tl.debug_barrier()
    tl.atomic_add(sync_ptr, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
    spins = 0
    while (seen < target) & (spins < MAX_SPINS):
        seen = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
        spins += 1
    if spins >= MAX_SPINS:
        tl.atomic_xchg(sync_ptr + 2, 1)
    tl.debug_barrier()
    if FENCES:
        _fence_gpu(anchor)


@triton.jit
def _prefetch_l2_bulk(ptrs, nbytes):
    """Ask the copy engine (Hopper TMA) to pull ``nbytes`` from each of ``ptrs`` into L2: one instruction per span."""
    tl.inline_asm_elementwise(
        "cp.async.bulk.prefetch.L2.global [$1], $2; // dummy $0", "=r,l,r", [ptrs, nbytes], dtype=tl.int32,
        is_pure=False, pack=1,
    )  # fmt: skip


@triton.jit
def _prefetch_span(ptr, numel, pid, G, BLOCK: tl.constexpr, BULK: tl.constexpr):
    """Program ``pid`` of ``G`` pulls its share of the contiguous ``numel`` elements (2-byte) at ``ptr`` into L2:
    one bulk prefetch per 8 KB piece (``BULK``), else one per 32-byte sector."""
    per = tl.cdiv(tl.cdiv(numel, G), 16) * 16  # whole sectors, so every piece starts 32-byte aligned
    start = pid * per
    end = tl.minimum(start + per, numel)
    if BULK:
        PIECE: tl.constexpr = 4096
        for off in range(start, end, BLOCK * PIECE):
            o = off + tl.arange(0, BLOCK) * PIECE
            n = tl.minimum(end - o, PIECE)
            _prefetch_l2_bulk(tl.where(n > 0, ptr + o, ptr), tl.where(n > 0, n * 2, 16))
    else:
        for off in range(start, end, BLOCK * 16):
            o = off + tl.arange(0, BLOCK) * 16
            _prefetch_l2(tl.where(o < end, ptr + o, ptr))


@triton.jit
def _partial_gemm_phase(x_ptr, w_ptr, part_ptr, M, pid, G, K: tl.constexpr, N: tl.constexpr, NH: tl.constexpr,
                        HD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        SPLIT_K: tl.constexpr, STAGES: tl.constexpr):  # fmt: skip
    """Items pid, pid + G, ... of a split-K GEMM phase (o, down): each a (column tile, K split) of fp32 partials."""
    for t in range(pid, N // BLOCK_N * SPLIT_K, G):
        # PARTIAL tiles never touch the q/k/v and RoPE pointers: x_ptr stands in for them
        _gemm_tile(x_ptr, w_ptr, part_ptr, x_ptr, x_ptr, x_ptr, x_ptr, x_ptr, x_ptr, M, t // SPLIT_K, t % SPLIT_K,
                   K, N, _PARTIAL, 1, NH, HD, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, STAGES)  # fmt: skip


@triton.jit
def _residual_norm_phase(x_ptr, part_ptr, h_ptr, mod_ptr, norm, M, pid, G, D, eps, S: tl.constexpr,
                         BLOCK_D: tl.constexpr):  # fmt: skip
    """Rows pid, pid + G, ...: x += gate * sum of the S partials, the gate of modulation row ``norm - 1`` (the
    sublayer's own norm), then h = adaRMS(x) with modulation row ``norm``."""
    sc, sh, gt = _load_mods(mod_ptr + norm * 3 * D, mod_ptr + (norm - 1) * 3 * D + 2 * D, D, BLOCK_D)
    for t in range(pid, M, G):
        _ada_row(x_ptr, part_ptr, h_ptr, t, M, D, eps, sc, sh, gt, S, True, BLOCK_D)


@triton.jit
def _step_kernel(
    x_ptr,  # (M, D) residual stream
    h_ptr,  # (M, D) normalized input of the next sublayer; on entry: of layer LAYER_LO's attention
    q_ptr, ks_ptr, vs_ptr,  # (M, NH * HD), (M, HD), (M, HD)
    acc_ptr, m_ptr, l_ptr,  # attention splits: (N_SPLIT, R, HD), (N_SPLIT, R), (N_SPLIT, R) fp32
    attn_ptr,  # (M, NH * HD)
    part_o_ptr,  # (SK_O, M, D) fp32
    act_ptr,  # (M, F)
    part_d_ptr,  # (SK_D, M, D) fp32
    w_qkv_ptr, w_o_ptr, w_gu_ptr, w_d_ptr,  # every layer's weights stacked: (L, N, K)
    keys_ptr, values_ptr,  # (L, P, HD) prefix K/V
    mod_ptr,  # (2 L + 1, 3 D) modulations [scale, shift, gate] of every norm
    cos_ptr, sin_ptr, n_valid_ptr,
    sync_ptr,  # (4,) int32 barrier state, zero between launches
    M, P, scale, eps,
    LAYER_LO, LAYER_HI,
    PHASE_LO: tl.constexpr, PHASE_HI: tl.constexpr,
    GRID_SYNC: tl.constexpr,
    PREFETCH: tl.constexpr,
    D: tl.constexpr, F: tl.constexpr, NH: tl.constexpr, HD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    QKV_N: tl.constexpr, QKV_K: tl.constexpr,
    O_N: tl.constexpr, O_K: tl.constexpr, O_S: tl.constexpr,
    GU_N: tl.constexpr, GU_K: tl.constexpr,
    D_N: tl.constexpr, D_K: tl.constexpr, D_S: tl.constexpr,
    CHUNK: tl.constexpr, N_SPLIT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_KV: tl.constexpr,
    C_ROWS: tl.constexpr,
    GEMM_STAGES: tl.constexpr,
    ATTN_STAGES: tl.constexpr,
    FENCES: tl.constexpr,
    BULK: tl.constexpr,
    WORK_MASK: tl.constexpr,
):  # fmt: skip
    """Layers [LAYER_LO, LAYER_HI) of a denoise step, each as eight phases: q/k/v + RoPE, attention splits, their
    merge, o-proj, residual + adaRMS, gate/up + gelu, down-proj, residual + adaRMS. Program ``pid`` of ``G`` takes
    items pid, pid + G, ... of each phase.

    ``GRID_SYNC``: one launch of one program per SM runs all phases of all layers, a grid barrier between phases;
    with ``PREFETCH``, right after its own work each program pulls into L2 its share of the weights of a later
    phase (measured slower on an H100, so off by default). Without ``GRID_SYNC`` (the interpreter, which runs
    programs one after another), one launch runs one phase and launch order is the barrier."""
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    R = M * NH
    W = NH * HD
    QKV_ROWS: tl.constexpr = (NH + 2) * HD
    n_qkv: tl.constexpr = QKV_ROWS // 2 // QKV_N
    n_attn = tl.cdiv(R, BLOCK_R) * N_SPLIT
    n_comb = tl.cdiv(R, C_ROWS)
    n_gu: tl.constexpr = F // GU_N
    PF_BLOCK: tl.constexpr = 32 if BULK else 64  # prefetch addresses per instruction batch
    if PREFETCH:
        _prefetch_span(w_qkv_ptr + LAYER_LO * QKV_ROWS * D, QKV_ROWS * D, pid, G, PF_BLOCK, BULK)
        _prefetch_span(keys_ptr + LAYER_LO * P * HD, P * HD, pid, G, PF_BLOCK, BULK)
        _prefetch_span(values_ptr + LAYER_LO * P * HD, P * HD, pid, G, PF_BLOCK, BULK)
        _prefetch_span(w_o_ptr + LAYER_LO * D * W, D * W, pid, G, PF_BLOCK, BULK)
    for layer in range(LAYER_LO, LAYER_HI):
        w_qkv = w_qkv_ptr + layer * QKV_ROWS * D
        w_o = w_o_ptr + layer * D * W
        w_gu = w_gu_ptr + layer * 2 * F * D
        w_d = w_d_ptr + layer * D * F
        kp = keys_ptr + layer * P * HD
        vp = values_ptr + layer * P * HD
        for phase in tl.static_range(PHASE_LO, PHASE_HI):
            if ((WORK_MASK >> phase) & 1) == 0:
                pass  # timing ablation only (StepLaunch.work_mask): this phase's work is skipped
            elif phase == 0:
                for t in range(pid, n_qkv, G):
                    _gemm_tile(h_ptr, w_qkv, x_ptr, q_ptr, ks_ptr, vs_ptr, cos_ptr, sin_ptr, n_valid_ptr, M, t, 0,
                               D, QKV_ROWS // 2, MODE_QKV_C, HD // 2, NH, HD, BLOCK_M, QKV_N, QKV_K, 1,
                               GEMM_STAGES)  # fmt: skip
                if PREFETCH:
                    _prefetch_span(w_gu, 2 * F * D, pid, G, PF_BLOCK, BULK)
            elif phase == 1:
                for t in range(pid, n_attn, G):
                    _attn_tile(q_ptr, kp, vp, ks_ptr, vs_ptr, tl.load(n_valid_ptr), acc_ptr, m_ptr, l_ptr, R, P, M,
                               scale, t // N_SPLIT, t % N_SPLIT, CHUNK, HD, BLOCK_R, BLOCK_KV, ATTN_STAGES)  # fmt: skip
            elif phase == 2:
                for t in range(pid, n_comb, G):
                    _combine_tile(acc_ptr, m_ptr, l_ptr, attn_ptr, R, t, 0, N_SPLIT, HD, C_ROWS, HD)
            elif phase == 3:
                _partial_gemm_phase(attn_ptr, w_o, part_o_ptr, M, pid, G, W, D, NH, HD, BLOCK_M, O_N, O_K, O_S,
                                    GEMM_STAGES)  # fmt: skip
                if PREFETCH:
                    _prefetch_span(w_d, D * F, pid, G, PF_BLOCK, BULK)
            elif phase == 4:
                _residual_norm_phase(x_ptr, part_o_ptr, h_ptr, mod_ptr, 2 * layer + 1, M, pid, G, D, eps, O_S, BLOCK_D)
            elif phase == 5:
                for t in range(pid, n_gu, G):
                    _gemm_tile(h_ptr, w_gu, act_ptr, q_ptr, ks_ptr, vs_ptr, cos_ptr, sin_ptr, n_valid_ptr, M, t, 0,
                               D, F, _GELU, F, NH, HD, BLOCK_M, GU_N, GU_K, 1, GEMM_STAGES)  # fmt: skip
                if PREFETCH:
                    if layer + 1 < LAYER_HI:
                        _prefetch_span(w_qkv + QKV_ROWS * D, QKV_ROWS * D, pid, G, PF_BLOCK, BULK)
                        _prefetch_span(kp + P * HD, P * HD, pid, G, PF_BLOCK, BULK)
                        _prefetch_span(vp + P * HD, P * HD, pid, G, PF_BLOCK, BULK)
            elif phase == 6:
                _partial_gemm_phase(act_ptr, w_d, part_d_ptr, M, pid, G, F, D, NH, HD, BLOCK_M, D_N, D_K, D_S,
                                    GEMM_STAGES)  # fmt: skip
                if PREFETCH:
                    if layer + 1 < LAYER_HI:
                        _prefetch_span(w_o + D * W, D * W, pid, G, PF_BLOCK, BULK)
            else:
                _residual_norm_phase(x_ptr, part_d_ptr, h_ptr, mod_ptr, 2 * layer + 2, M, pid, G, D, eps, D_S, BLOCK_D)
            if GRID_SYNC:
                n_sync = (layer - LAYER_LO) * (PHASE_HI - PHASE_LO) + (phase - PHASE_LO) + 1
                if phase < PHASE_HI - 1:
                    _grid_sync(sync_ptr, n_sync * G, pid, FENCES)
                elif layer + 1 < LAYER_HI:
                    _grid_sync(sync_ptr, n_sync * G, pid, FENCES)
    if GRID_SYNC:
        # the last program out resets the barrier for the next launch: every other one has left its last barrier
        if tl.atomic_add(sync_ptr + 1, 1, sem="acq_rel", scope="gpu") == G - 1:
            tl.atomic_xchg(sync_ptr, 0)
            tl.atomic_xchg(sync_ptr + 1, 0)


# ------------------------------------------------------------------------------------------------------------ host
@dataclass(frozen=True)
class GemmConfig:
    block_n: int = 16
    block_k: int = 128
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    # weight columns of each program's slice loaded into registers before the kernel waits for the one before
    # (programmatic dependent launch); a power of two >= 16 (fewer where the slice's K is shorter); 0: all of it
    # streams after the wait
    preload_k: int = 0

    def __post_init__(self):
        if self.preload_k and (self.preload_k < 16 or self.preload_k & (self.preload_k - 1)):
            raise ValueError(f"preload_k {self.preload_k} must be 0 or a power of two >= 16")


@dataclass(frozen=True)
class AttnConfig:
    block_r: int = 16  # query rows per program
    block_kv: int = 64  # keys per inner step
    max_split: int = 16  # key splits (fewer when the keys run out)
    num_warps: int = 4
    num_stages: int = 2
    combine_rows: int = 1
    combine_dims: int = 256
    preload: bool = False  # each split's first prefix K/V block into registers before waiting for the q/k/v GEMM


def _pow2_at_least(n: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(n))


def default_configs(rows: int) -> dict[str, GemmConfig]:
    """Per-GEMM launch configurations for ``rows`` action tokens: the fastest of the grid that
    ``scripts/bench_expert_kernels.py`` sweeps, on an H100 (docs/benchmarks.md). Any configuration computes the same
    function; these only decide how fast."""
    if rows <= 16:  # part of each weight slice preloaded (all of it for o and down); sizes that ptxas fits unspilled
        return {
            "qkv": GemmConfig(block_n=16, block_k=128, num_stages=4, preload_k=256),
            "o": GemmConfig(block_n=64, block_k=128, split_k=8, num_stages=4, preload_k=256),
            "gate_up": GemmConfig(block_n=32, block_k=128, num_stages=4, preload_k=256),
            "down": GemmConfig(block_n=32, block_k=128, split_k=8, num_stages=4, preload_k=512),
        }
    return {
        "qkv": GemmConfig(block_n=16, block_k=256, num_stages=4),
        "o": GemmConfig(block_n=32, block_k=128, split_k=4, num_stages=4),
        "gate_up": GemmConfig(block_n=32, block_k=128, num_stages=4),
        "down": GemmConfig(block_n=64, block_k=128, split_k=8, num_stages=4),
    }


def default_step_configs(rows: int) -> dict[str, GemmConfig]:
    """Tiles of the persistent step (``_step_kernel``; its warps and stages are kernel-wide, see ``StepLaunch``): about
    one item per SM in each phase, weights being read from L2 where the phase before pulled them."""
    del rows  # the same tiles serve chunk 10 and 50 (measured: docs/benchmarks.md)
    return {
        "qkv": GemmConfig(block_n=16, block_k=128),
        "o": GemmConfig(block_n=64, block_k=128, split_k=8),
        "gate_up": GemmConfig(block_n=32, block_k=128),
        "down": GemmConfig(block_n=32, block_k=128, split_k=4),
    }


@dataclass(frozen=True)
class StepLaunch:
    """Kernel-wide launch parameters of the persistent step."""

    num_warps: int = 4
    # software-pipelining depth of the GEMM K loops and of the attention key loop; set per loop because the
    # shared memory of every phase's buffers must fit one program
    gemm_stages: int = 3
    attn_stages: int = 2
    prefetch: bool = False  # pull weights into L2 ahead of their phase (persistent schedule; slower when measured)
    # every thread fences before and after a grid barrier; False leaves ordering to the barrier's release/acquire
    # atomics after a CTA barrier (the cooperative-groups pattern)
    fences: bool = False
    bulk_prefetch: bool = False  # prefetch with the copy engine in 8 KB pieces instead of one sector per address
    # bit i set: phase i does its work. Anything but 0xFF computes wrong results: for timing ablations only
    work_mask: int = 0xFF


def default_attn_config(rows: int) -> AttnConfig:
    """The fastest of ``scripts/bench_expert_kernels.py``'s attention grid on an H100: as many key splits as there are
    64-key blocks, 16 query rows per program for chunk 10 and 32 for chunk 50; at chunk 10 each split's first K/V
    block is preloaded (8 warps hold it in registers)."""
    if rows <= 16:
        return AttnConfig(block_r=16, num_warps=8, preload=True)
    return AttnConfig(block_r=32)


def unsupported_reason(model: Pi05Model) -> str | None:
    """Why ``TritonExpert`` cannot run this model's expert, or None when it can."""
    e = model.sizes.expert
    if e.num_kv_heads != 1:
        return f"expert has {e.num_kv_heads} KV heads (the kernels assume 1, as every Gemma variant here has)"
    if e.head_dim < 16 or e.head_dim & (e.head_dim - 1):
        return f"expert head_dim {e.head_dim} is not a power of two >= 16"
    for name, dim in (("width", e.width), ("mlp_dim", e.mlp_dim)):
        if dim % 16:
            return f"expert {name} {dim} is not a multiple of 16"
    if any(layer.self_attn.fused is None or layer.mlp.fused is None for layer in model.expert.layers):
        return "projections are not fused (call Pi05Model.prepare_inference first)"
    return None


def _gemm_cols(mode: int, n_w: int, head_dim: int) -> tuple[int, int]:
    """(output columns, HALF) of a GEMM whose weight has ``n_w`` rows: PARTIAL computes one column per row; GELU and
    QKV compute column pairs (j, j + HALF), gate with up and a head's first with its second half."""
    half = {MODE_PARTIAL: 1, MODE_GELU: n_w // 2, MODE_QKV: head_dim // 2}[mode]
    return (n_w if mode == MODE_PARTIAL else n_w // 2), half


def _tiles(cfg: GemmConfig, mode: int, w_shape: tuple[int, int], head_dim: int) -> tuple[int, int, int]:
    """(block_n, block_k, split_k) for a GEMM in ``mode`` with an (N, K) weight: the configured tile, shrunk to small
    GEMMs; split-K only for PARTIAL and halved until it divides K."""
    n_w, k = w_shape
    n_cols, half = _gemm_cols(mode, n_w, head_dim)
    block_n = min(cfg.block_n, max(16, n_cols))
    block_k = min(cfg.block_k, k)
    split_k = cfg.split_k if mode == MODE_PARTIAL else 1
    while split_k > 1 and k % (split_k * block_k):
        split_k //= 2
    if n_cols % block_n or k % (split_k * block_k) or (mode != MODE_PARTIAL and half % block_n and block_n % half):
        raise ValueError(f"GEMM of {n_cols} columns over K={k} does not tile by {block_n}x{block_k} (split {split_k})")
    return block_n, block_k, split_k


def _preload_k(cfg: GemmConfig, k_len: int, block_k: int) -> int:
    """Weight columns each program preloads (``GemmConfig.preload_k``, at most its slice's ``k_len``)."""
    pre = min(cfg.preload_k, k_len)
    if (k_len - pre) % block_k:
        raise ValueError(f"preload_k {cfg.preload_k} leaves {k_len - pre} of the slice's K={k_len}, not a multiple of "
                         f"block_k {block_k}")  # fmt: skip
    return pre


def _expert_weights(model: Pi05Model) -> list[tuple[torch.Tensor, ...]]:
    """Per expert layer: the fused q/k/v, o, fused gate/up and down weights, as the kernels read them."""
    return [
        (layer.self_attn.fused[0], layer.self_attn.o_proj.weight, layer.mlp.fused[0], layer.mlp.down_proj.weight)
        for layer in model.expert.layers
    ]


def _stack_expert_weights(model: Pi05Model) -> tuple[torch.Tensor, ...]:
    """Every expert layer's fused q/k/v, o, fused gate/up and down weights as four (layers, N, K) tensors, which the
    persistent kernel indexes by layer. The model's own parameters become views of them, so nothing is held twice."""
    weights = _expert_weights(model)
    cached = getattr(model, "_expert_weight_stacks", None)
    if cached is not None and all(
        w.data_ptr() == stack[i].data_ptr() for i, ws in enumerate(weights) for w, stack in zip(ws, cached, strict=True)
    ):
        return cached
    qkv, o, gate_up, down = (torch.stack(ws).contiguous() for ws in zip(*weights, strict=True))
    for i, layer in enumerate(model.expert.layers):
        attn, mlp = layer.self_attn, layer.mlp
        attn.fused = (qkv[i], attn.fused[1])
        point_linears_at(attn.fused, [attn.q_proj, attn.k_proj, attn.v_proj])
        point_linears_at((o[i], None), [attn.o_proj])
        mlp.fused = (gate_up[i], mlp.fused[1])
        point_linears_at(mlp.fused, [mlp.gate_proj, mlp.up_proj])
        point_linears_at((down[i], None), [mlp.down_proj])
    model._expert_weight_stacks = (qkv, o, gate_up, down)  # a second TritonExpert on this model reuses them
    return model._expert_weight_stacks


class TritonExpert:
    """``velocity(keys, values, key_mask, n_valid, x_t, mods)`` with ``Pi05Model.velocity``'s signature and result,
    for batch 1 and (``schedule="kernels"``) for a batch of slots with prefixes of their own (the batched server's
    denoise, ``batched.py``). Valid prefix slots must come first (as ``PrefixCache`` guarantees): the key mask is
    implied by ``n_valid`` and not read."""

    def __init__(
        self,
        model: Pi05Model,
        max_positions: int = 4096,
        configs: dict[str, GemmConfig] | None = None,
        sm_count: int | None = None,
        pdl: bool | None = None,
        attn_config: AttnConfig | None = None,
        schedule: str | None = None,
        step_launch: StepLaunch | None = None,
        max_block_m: int = 64,
    ):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"TritonExpert: {reason}")
        self.model = model
        e = model.sizes.expert
        self.width, self.heads, self.head_dim, self.mlp_dim = e.width, e.num_heads, e.head_dim, e.mlp_dim
        self.eps = float(model.sizes.rms_norm_eps)
        device = model.action_in_proj.weight.device
        if sm_count is None:  # the interpreter (CPU) runs programs one after another: fewest programs is fastest
            sm_count = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        self.sm_count = sm_count
        if pdl is None:  # programmatic dependent launch: Hopper and later
            pdl = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9
        self.pdl = bool(pdl)
        # USE_PDL compiles the prefetch + wait into every kernel; launch_pdl lets each start before the last ends
        self._pdl = {"USE_PDL": True, "launch_pdl": True} if self.pdl else {"USE_PDL": False}
        cos, sin = rope_cos_sin(
            torch.arange(max_positions, device=device)[None], e.head_dim, model.sizes.rope_theta, model.dtype
        )
        half = e.head_dim // 2
        self.cos = cos[0, :, 0, :half].contiguous()  # cos[d] == cos[d + half]: emb = cat(freqs, freqs)
        self.sin = sin[0, :, 0, :half].contiguous()
        self.max_positions = max_positions
        self.configs = configs
        self.attn_config = attn_config
        # a batch's GEMM rows per program (more rows: fewer re-reads of each weight tile, more registers and shared
        # memory per program); a power of two >= 16
        if max_block_m < 16 or max_block_m & (max_block_m - 1):
            raise ValueError(f"max_block_m {max_block_m} must be a power of two >= 16")
        self.max_block_m = max_block_m
        schedule = schedule or "kernels"
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule {schedule!r} not supported: {', '.join(SCHEDULES)}")
        if schedule == "persistent" and device.type != "cuda":
            raise ValueError(f"schedule 'persistent' needs CUDA (device is {device.type}): its grid barrier needs "
                             "every program resident at once; 'phased' runs the same kernel anywhere")  # fmt: skip
        self.schedule = schedule
        self.step_launch = step_launch or StepLaunch()
        if schedule != "kernels":
            self.stacks = _stack_expert_weights(model)
            # barrier state of the persistent launch: [arrivals, programs done, barrier timed out, unused]
            self.sync = torch.zeros(4, device=device, dtype=torch.int32)
        self.weights = _expert_weights(model)  # after stacking: views of the stacks, nothing held twice
        self._stacked: dict[tuple[int, ...], tuple[list[torch.Tensor], torch.Tensor]] = {}

    def _mods(self, mods: list[torch.Tensor]) -> torch.Tensor:
        """All of a step's modulations as one (2 * layers + 1, 3 * width) tensor, stacked once per schedule step (the
        engine precomputes them). The entry keeps its source tensors alive, so their addresses cannot be reused by
        other tensors while they serve as the key."""
        key = tuple(m.data_ptr() for m in mods)
        if key not in self._stacked:
            if len(self._stacked) >= 64:  # callers that recompute modulations every step
                self._stacked.clear()
            self._stacked[key] = (list(mods), torch.stack([m.reshape(-1) for m in mods]).contiguous())
        return self._stacked[key][1]

    def _gemm(self, x, w, cfg: GemmConfig, mode: int, rows: int, out=None, qkv=None, cos_pos=None, slot_rows=0):
        """``rows`` rows of ``x`` through ``w``; ``slot_rows`` > 0: they are slots of that many tokens (RoPE positions
        per slot), tiled by at most ``self.max_block_m`` rows."""
        n_w, k = w.shape
        n_cols, half = _gemm_cols(mode, n_w, self.head_dim)
        block_n, block_k, split_k = _tiles(cfg, mode, w.shape, self.head_dim)
        if mode == MODE_PARTIAL:
            out = torch.empty(split_k, rows, n_w, device=x.device, dtype=torch.float32)
        q, ks, vs = qkv if qkv is not None else (x, x, x)
        cos, sin, pos0 = cos_pos if cos_pos is not None else (x, x, x)
        block_m = _pow2_at_least(rows) if not slot_rows else min(_pow2_at_least(rows), self.max_block_m)
        _gemm_kernel[(n_cols // block_n, split_k, triton.cdiv(rows, block_m))](
            x, w, out, q, ks, vs, cos, sin, pos0, rows,
            K=k, N_OUT=n_cols if mode == MODE_GELU else n_w,
            MODE=mode, HALF=half, NH=self.heads, HD=self.head_dim,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split_k,
            PRE_K=_preload_k(cfg, k // split_k, block_k), SLOT_ROWS=slot_rows,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages, **self._pdl,
        )  # fmt: skip
        return out

    def _ada(self, x, h, mod, part=None, gate=None):
        rows, d = x.shape
        _ada_kernel[(rows,)](
            x, part if part is not None else x, gate if gate is not None else mod, mod, h,
            rows, d, self.eps, S=part.shape[0] if part is not None else 0,
            HAS_RES=part is not None, BLOCK_D=triton.next_power_of_2(d), num_warps=4, **self._pdl,
        )  # fmt: skip

    def _key_splits(
        self, keys: int, r: int, cfg: AttnConfig, dev, slots: int = 1
    ) -> tuple[int, int, tuple[torch.Tensor, ...]]:
        """Keys per split (whole ``cfg.block_kv`` blocks, at most ``cfg.max_split`` splits; one split where programs
        run one after another), the number of splits, and their fp32 (outputs, running max, denominators) for ``r``
        query rows of each of ``slots`` slots."""
        kv_blocks = triton.cdiv(keys, cfg.block_kv)
        chunk = triton.cdiv(kv_blocks, min(kv_blocks, cfg.max_split if self.sm_count > 1 else 1)) * cfg.block_kv
        n_split = triton.cdiv(keys, chunk)
        buffers = (
            torch.empty(slots, n_split, r, self.head_dim, device=dev, dtype=torch.float32),
            torch.empty(slots, n_split, r, device=dev, dtype=torch.float32),
            torch.empty(slots, n_split, r, device=dev, dtype=torch.float32),
        )
        return chunk, n_split, buffers

    def _attention(self, q, kp, vp, ks, vs, n_valid, out, cfg: AttnConfig | None = None):
        """Per slot b: ``q[b]`` (R, HD) against ``kp[b]`` / ``vp[b]`` (P, HD) and ``ks[b]`` / ``vs[b]`` (rows, HD),
        prefix positions from ``n_valid[b]`` on masked, into ``out[b]``."""
        slots, r, hd = q.shape[0], q.shape[1], self.head_dim
        p, rows = kp.shape[1], ks.shape[1]
        cfg = cfg or self.attn_config or default_attn_config(rows)
        block_r, block_kv = cfg.block_r, cfg.block_kv
        row_blocks = triton.cdiv(r, block_r)
        chunk, n_split, (acc, m, l_sum) = self._key_splits(p + rows, r, cfg, q.device, slots)
        _attn_kernel[(row_blocks, n_split, slots)](
            q, kp, vp, ks, vs, n_valid, acc, m, l_sum, r, p, rows, hd**-0.5, kp.stride(0),
            CHUNK=chunk, HD=hd, BLOCK_R=block_r, BLOCK_KV=block_kv, PRELOAD=cfg.preload,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages, **self._pdl,
        )  # fmt: skip
        block_d = min(cfg.combine_dims, hd)
        _attn_combine_kernel[(triton.cdiv(r, cfg.combine_rows), hd // block_d, slots)](
            acc, m, l_sum, out, r, N_SPLIT=n_split, HD=hd, BLOCK_R=cfg.combine_rows, BLOCK_D=block_d,
            num_warps=4, **self._pdl,
        )  # fmt: skip

    def barrier_timed_out(self) -> bool:
        """True when a persistent launch's grid barrier gave up waiting (its outputs are then wrong): the GPU ran
        fewer programs at once than the launch has, e.g. because another kernel held SMs. Synchronizes."""
        return self.schedule == "persistent" and bool(self.sync[2].item())

    def _step(self, x, h, q, ks, vs, attn_out, act, keys, values, n_valid, mod):
        """All layers through ``_step_kernel``: one persistent launch, or one launch per phase (``phased``)."""
        rows, d = x.shape
        hd, nh, dev = self.head_dim, self.heads, x.device
        cfg = self.configs or default_step_configs(rows)
        acfg = self.attn_config or default_attn_config(rows)
        p = keys.shape[3]
        chunk, n_split, (acc, m, l_sum) = self._key_splits(p + rows, rows * nh, acfg, dev)
        w_qkv, w_o, w_gu, w_d = self.stacks
        tiles = {
            name: _tiles(cfg[name], mode, w.shape[1:], hd)
            for name, mode, w in (("qkv", MODE_QKV, w_qkv), ("o", MODE_PARTIAL, w_o), ("gate_up", MODE_GELU, w_gu),
                                  ("down", MODE_PARTIAL, w_d))
        }  # fmt: skip
        part_o = torch.empty(tiles["o"][2], rows, d, device=dev, dtype=torch.float32)
        part_d = torch.empty(tiles["down"][2], rows, d, device=dev, dtype=torch.float32)
        consts = dict(
            D=d, F=self.mlp_dim, NH=nh, HD=hd, BLOCK_M=_pow2_at_least(rows), BLOCK_D=triton.next_power_of_2(d),
            QKV_N=tiles["qkv"][0], QKV_K=tiles["qkv"][1],
            O_N=tiles["o"][0], O_K=tiles["o"][1], O_S=tiles["o"][2],
            GU_N=tiles["gate_up"][0], GU_K=tiles["gate_up"][1],
            D_N=tiles["down"][0], D_K=tiles["down"][1], D_S=tiles["down"][2],
            CHUNK=chunk, N_SPLIT=n_split, BLOCK_R=acfg.block_r, BLOCK_KV=acfg.block_kv, C_ROWS=acfg.combine_rows,
            GEMM_STAGES=self.step_launch.gemm_stages, ATTN_STAGES=self.step_launch.attn_stages,
            FENCES=self.step_launch.fences, BULK=self.step_launch.bulk_prefetch, WORK_MASK=self.step_launch.work_mask,
            num_warps=self.step_launch.num_warps,
        )  # fmt: skip
        args = (x, h, q, ks, vs, acc, m, l_sum, attn_out, part_o, act, part_d, w_qkv, w_o, w_gu, w_d, keys, values,
                mod, self.cos, self.sin, n_valid, self.sync, rows, p, hd**-0.5, self.eps)  # fmt: skip
        n_layers = len(self.weights)
        if self.schedule == "persistent":
            _step_kernel[(self.sm_count,)](
                *args, 0, n_layers, PHASE_LO=0, PHASE_HI=8, GRID_SYNC=True, PREFETCH=self.step_launch.prefetch, **consts
            )
            return
        for i in range(n_layers):
            for phase in range(8):
                _step_kernel[(self.sm_count,)](
                    *args, i, i + 1, PHASE_LO=phase, PHASE_HI=phase + 1, GRID_SYNC=False, PREFETCH=False, **consts
                )

    def velocity(self, keys, values, key_mask, n_valid, x_t, mods) -> torch.Tensor:
        """Batch 1, or (``schedule="kernels"``) a batch of B slots, each with its own prefix: ``keys`` / ``values``
        (layers, B, 1, P, head_dim) padded to the longest, ``n_valid`` (B,) or (B, 1) (an int or one value: every
        slot). The weights are shared, so the B * chunk action tokens go through each GEMM as one operand; attention
        and RoPE positions are per slot."""
        del key_mask  # implied by n_valid (valid prefix slots first)
        b, rows, _ = x_t.shape
        if b != 1 and self.schedule != "kernels":
            raise ValueError(f"TritonExpert schedule {self.schedule!r} runs batch 1, got {b}")
        model, dev, dtype = self.model, x_t.device, self.model.dtype
        d, hd, nh, m = self.width, self.head_dim, self.heads, b * rows
        cfg = self.configs or default_configs(m)
        n_valid = torch.as_tensor(n_valid, device=dev).to(torch.int64).reshape(-1).expand(b).contiguous()
        if keys.shape[1] != b:
            raise ValueError(f"TritonExpert: prefix of batch {keys.shape[1]} for {b} action chunks")
        keys = keys.contiguous()
        values = values.contiguous()
        p = keys.shape[3]
        if p + rows > self.max_positions:
            raise ValueError(f"prefix {p} + chunk {rows} exceeds the RoPE table ({self.max_positions} positions)")
        mod = self._mods(mods)
        x = model.action_in_proj(x_t.to(dtype)).reshape(m, d).contiguous()
        h = torch.empty_like(x)
        q = torch.empty(m, nh * hd, device=dev, dtype=dtype)
        ks = torch.empty(m, hd, device=dev, dtype=dtype)
        vs = torch.empty_like(ks)
        attn_out = torch.empty_like(q)
        act = torch.empty(m, self.mlp_dim, device=dev, dtype=dtype)
        self._ada(x, h, mod[0])
        if self.schedule != "kernels":
            self._step(x, h, q, ks, vs, attn_out, act, keys, values, n_valid, mod)
            return model.action_out_proj(h.view(1, rows, d)).float()
        slot_rows = rows if b > 1 else 0  # batch 1: one M tile, RoPE from the one n_valid (the tuned launch)
        qkv_out, rope = (q, ks, vs), (self.cos, self.sin, n_valid)
        for i, (w_qkv, w_o, w_gate_up, w_down) in enumerate(self.weights):
            self._gemm(h, w_qkv, cfg["qkv"], MODE_QKV, m, qkv=qkv_out, cos_pos=rope, slot_rows=slot_rows)
            self._attention(q.view(b, rows * nh, hd), keys[i, :, 0], values[i, :, 0], ks.view(b, rows, hd),
                            vs.view(b, rows, hd), n_valid, attn_out)  # fmt: skip
            part = self._gemm(attn_out, w_o, cfg["o"], MODE_PARTIAL, m, slot_rows=slot_rows)
            self._ada(x, h, mod[2 * i + 1], part=part, gate=mod[2 * i, 2 * d :])
            self._gemm(h, w_gate_up, cfg["gate_up"], MODE_GELU, m, out=act, slot_rows=slot_rows)
            part = self._gemm(act, w_down, cfg["down"], MODE_PARTIAL, m, slot_rows=slot_rows)
            self._ada(x, h, mod[2 * i + 2], part=part, gate=mod[2 * i + 1, 2 * d :])
        return model.action_out_proj(h.view(b, rows, d)).float()

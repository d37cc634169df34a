"""Triton kernels for the action expert's denoise step, and ``TritonExpert``: a drop-in for ``Pi05Model.velocity``.

Why not cuBLAS + torch.compile: at batch 1 a denoise step is 18 layers of GEMMs with only ``chunk`` (10 or 50) rows.
cuBLAS tiles for such an M leave most of the 132 SMs idle (an H100 streams the o / down projections' weights at
0.75-1.0 TB/s of its ~3); on top, every layer concatenated the prefix K/V with the new keys and ran masked or
single-CTA attention, and each norm, RoPE and gate was its own kernel. Here:

* ``_gemm_kernel`` streams the weight in narrow column tiles (optionally split over K), so every SM reads weights;
  its epilogue applies RoPE and scatters q / k / v (``MODE_QKV``) or computes ``gelu(gate) * up`` (``MODE_GELU``)
  in registers, and otherwise (``MODE_PARTIAL``) writes fp32 partial sums, one slice per K split;
* ``_ada_kernel`` sums those partials, applies the gated residual and the next adaRMS norm: one kernel per sublayer
  boundary;
* ``_attn_kernel`` reads the prefix K/V where the ``PrefixCache`` holds it and the chunk's own K/V from a small
  buffer, splits the keys over programs (``_attn_combine_kernel`` merges the splits) and masks prefix padding by
  ``n_valid``, so a padded prefix costs nothing extra.

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

from policies.pi05.model import Pi05Model, rope_cos_sin

MODE_PARTIAL, MODE_GELU, MODE_QKV = 0, 1, 2
# the same values as compile-time constants that kernels may read
_PARTIAL = tl.constexpr(MODE_PARTIAL)
_GELU = tl.constexpr(MODE_GELU)
NEG_BIG = tl.constexpr(-1.0e30)  # finite "minus infinity": a fully masked split gives exp(m - max) = 0, never NaN


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
def _gemm_kernel(
    x_ptr,  # (M, K) activations
    w_ptr,  # (N, K) weight, row-major (nn.Linear layout)
    out_ptr,  # PARTIAL: (SPLIT_K, M, N) fp32; GELU: (M, N_OUT) model dtype; QKV: unused
    q_ptr,  # QKV: (M, NH * HD) queries after RoPE
    k_ptr,  # QKV: (M, HD) this chunk's keys after RoPE
    v_ptr,  # QKV: (M, HD) this chunk's values
    cos_ptr,  # QKV: (positions, HALF) RoPE table in the model dtype
    sin_ptr,
    pos0_ptr,  # QKV: (1,) int, position of the first action token (= valid prefix length)
    M,
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
    USE_PDL: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rm = tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    if MODE == _PARTIAL:
        row_a = rn
    else:
        row_a = (rn // HALF) * (2 * HALF) + rn % HALF
    row_b = row_a + HALF
    k_len = K // SPLIT_K
    k0 = pid_k * k_len
    if USE_PDL:
        # weights never depend on the kernel before: stream this program's slice into L2 while that one finishes
        sectors = tl.arange(0, BLOCK_K // 16) * 16  # one address per 32-byte sector
        for kk in range(0, k_len, BLOCK_K):
            _prefetch_l2(w_ptr + row_a[:, None] * K + (k0 + kk + sectors)[None, :])
            if MODE != _PARTIAL:
                _prefetch_l2(w_ptr + row_b[:, None] * K + (k0 + kk + sectors)[None, :])
        _pdl_enter()
    x_ptrs = x_ptr + rm[:, None] * K + (k0 + rk)[None, :]
    wa_ptrs = w_ptr + row_a[:, None] * K + (k0 + rk)[None, :]
    wb_ptrs = w_ptr + row_b[:, None] * K + (k0 + rk)[None, :]
    acc_a = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for _ in range(0, k_len, BLOCK_K):
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
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    dt = h_ptr.dtype.element_ty
    # modulations are fixed for the whole denoise call: read them before waiting for the kernel before
    scale = tl.load(mod_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    shift = tl.load(mod_ptr + D + offs, mask=mask, other=0.0).to(tl.float32)
    gate = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if USE_PDL:
        _pdl_enter()
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
def _attn_kernel(
    q_ptr,  # (R, HD) query rows, R = M * NH (row = token * NH + head)
    kp_ptr,  # (P, HD) prefix keys of this layer
    vp_ptr,
    ks_ptr,  # (M, HD) the chunk's keys
    vs_ptr,
    n_valid_ptr,  # (1,) int: prefix slots >= n_valid are padding
    acc_ptr,  # (N_SPLIT, R, HD) fp32 un-normalized outputs
    m_ptr,  # (N_SPLIT, R) fp32 running max
    l_ptr,  # (N_SPLIT, R) fp32 softmax denominators
    R,
    P,
    M,
    scale,
    CHUNK: tl.constexpr,  # keys per split, a multiple of BLOCK_KV
    HD: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_KV: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_s = tl.program_id(1)
    rr = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = rr < R
    dd = tl.arange(0, HD)
    start = pid_s * CHUNK
    if USE_PDL:
        # the prefix K/V is fixed for the whole denoise call: pull this split's keys and values into L2 first
        sectors = tl.arange(0, HD // 16) * 16
        for j0 in range(start, start + CHUNK, BLOCK_KV):
            jj = j0 + tl.arange(0, BLOCK_KV)
            in_p = (jj < P)[:, None]
            _prefetch_l2(tl.where(in_p, kp_ptr + jj[:, None] * HD + sectors[None, :], kp_ptr))
            _prefetch_l2(tl.where(in_p, vp_ptr + jj[:, None] * HD + sectors[None, :], vp_ptr))
        _pdl_enter()
    q = tl.load(q_ptr + rr[:, None] * HD + dd[None, :], mask=r_ok[:, None], other=0.0)
    n_valid = tl.load(n_valid_ptr)
    m_i = tl.full([BLOCK_R], NEG_BIG, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_R], dtype=tl.float32)
    acc = tl.zeros([BLOCK_R, HD], dtype=tl.float32)
    for j0 in range(start, start + CHUNK, BLOCK_KV):
        j = j0 + tl.arange(0, BLOCK_KV)
        in_prefix = (j < P) & (j < n_valid)
        in_chunk = (j >= P) & (j < P + M)
        kp = tl.load(kp_ptr + j[:, None] * HD + dd[None, :], mask=in_prefix[:, None], other=0.0)
        ks = tl.load(ks_ptr + (j - P)[:, None] * HD + dd[None, :], mask=in_chunk[:, None], other=0.0)
        valid = (in_prefix | in_chunk)[None, :]
        s = tl.where(valid, tl.dot(q, tl.trans(kp + ks)) * scale, NEG_BIG)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.where(valid, tl.exp(s - m_new[:, None]), 0.0)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        vp = tl.load(vp_ptr + j[:, None] * HD + dd[None, :], mask=in_prefix[:, None], other=0.0)
        vs = tl.load(vs_ptr + (j - P)[:, None] * HD + dd[None, :], mask=in_chunk[:, None], other=0.0)
        v = vp + vs
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    tl.store(acc_ptr + (pid_s * R + rr)[:, None] * HD + dd[None, :], acc, mask=r_ok[:, None])
    tl.store(m_ptr + pid_s * R + rr, m_i, mask=r_ok)
    tl.store(l_ptr + pid_s * R + rr, l_i, mask=r_ok)


@triton.jit
def _attn_combine_kernel(
    acc_ptr,
    m_ptr,
    l_ptr,
    out_ptr,
    R,
    N_SPLIT: tl.constexpr,
    HD: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:
        _pdl_enter()
    rr = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = rr < R
    dd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
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


# ------------------------------------------------------------------------------------------------------------ host
@dataclass(frozen=True)
class GemmConfig:
    block_n: int = 16
    block_k: int = 128
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3


@dataclass(frozen=True)
class AttnConfig:
    block_r: int = 16  # query rows per program
    block_kv: int = 64  # keys per inner step
    max_split: int = 16  # key splits (fewer when the keys run out)
    num_warps: int = 4
    num_stages: int = 2
    combine_rows: int = 1
    combine_dims: int = 256


def _pow2_at_least(n: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(n))


def default_configs(rows: int) -> dict[str, GemmConfig]:
    """Per-GEMM launch configurations for ``rows`` action tokens: the fastest of the grid that
    ``scripts/bench_expert_kernels.py`` sweeps, on an H100 (docs/benchmarks.md). Any configuration computes the same
    function; these only decide how fast."""
    if rows <= 16:
        return {
            "qkv": GemmConfig(block_n=32, block_k=128, num_stages=4),
            "o": GemmConfig(block_n=64, block_k=128, split_k=8, num_stages=4),
            "gate_up": GemmConfig(block_n=32, block_k=128, num_stages=4),
            "down": GemmConfig(block_n=32, block_k=128, split_k=8, num_warps=2, num_stages=4),
        }
    return {
        "qkv": GemmConfig(block_n=16, block_k=256, num_stages=4),
        "o": GemmConfig(block_n=32, block_k=128, split_k=4, num_stages=4),
        "gate_up": GemmConfig(block_n=32, block_k=128, num_stages=4),
        "down": GemmConfig(block_n=64, block_k=128, split_k=8, num_stages=4),
    }


def default_attn_config(rows: int) -> AttnConfig:
    """The fastest of ``scripts/bench_expert_kernels.py``'s attention grid on an H100: as many key splits as there are
    64-key blocks, 16 query rows per program for chunk 10 and 32 for chunk 50."""
    return AttnConfig(block_r=16 if rows <= 16 else 32)


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


class TritonExpert:
    """``velocity(keys, values, key_mask, n_valid, x_t, mods)`` with ``Pi05Model.velocity``'s signature and result,
    for batch 1. Valid prefix slots must come first (as ``PrefixCache`` guarantees): the key mask is implied by
    ``n_valid`` and not read."""

    def __init__(
        self,
        model: Pi05Model,
        max_positions: int = 4096,
        configs: dict[str, GemmConfig] | None = None,
        sm_count: int | None = None,
        pdl: bool | None = None,
        attn_config: AttnConfig | None = None,
    ):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"TritonExpert: {reason}")
        self.model = model
        e = model.sizes.expert
        self.width, self.heads, self.head_dim, self.mlp_dim = e.width, e.num_heads, e.head_dim, e.mlp_dim
        self.eps = float(model.sizes.rms_norm_eps)
        self.weights = [
            (layer.self_attn.fused[0], layer.self_attn.o_proj.weight, layer.mlp.fused[0], layer.mlp.down_proj.weight)
            for layer in model.expert.layers
        ]
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

    def _gemm(self, x, w, cfg: GemmConfig, mode: int, rows: int, out=None, qkv=None, cos_pos=None):
        n_w, k = w.shape
        half = {MODE_PARTIAL: 1, MODE_GELU: n_w // 2, MODE_QKV: self.head_dim // 2}[mode]
        n_cols = n_w if mode == MODE_PARTIAL else n_w // 2
        block_n = min(cfg.block_n, max(16, n_cols))
        block_k = min(cfg.block_k, k)
        split_k = cfg.split_k if mode == MODE_PARTIAL else 1
        while split_k > 1 and k % (split_k * block_k):
            split_k //= 2
        if n_cols % block_n or k % (split_k * block_k) or (mode != MODE_PARTIAL and half % block_n and block_n % half):
            raise ValueError(f"GEMM {tuple(w.shape)} does not tile by {block_n}x{block_k} (split {split_k})")
        if mode == MODE_PARTIAL:
            out = torch.empty(split_k, rows, n_w, device=x.device, dtype=torch.float32)
        q, ks, vs = qkv if qkv is not None else (x, x, x)
        cos, sin, pos0 = cos_pos if cos_pos is not None else (x, x, x)
        _gemm_kernel[(n_cols // block_n, split_k)](
            x, w, out, q, ks, vs, cos, sin, pos0, rows,
            K=k, N_OUT=n_cols if mode == MODE_GELU else n_w,
            MODE=mode, HALF=half, NH=self.heads, HD=self.head_dim,
            BLOCK_M=_pow2_at_least(rows), BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split_k,
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

    def _attention(self, q, kp, vp, ks, vs, n_valid, out, cfg: AttnConfig | None = None):
        cfg = cfg or self.attn_config or default_attn_config(ks.shape[0])
        r, hd = q.shape[0], self.head_dim
        p, rows = kp.shape[0], ks.shape[0]
        block_r, block_kv = cfg.block_r, cfg.block_kv
        row_blocks = triton.cdiv(r, block_r)
        kv_blocks = triton.cdiv(p + rows, block_kv)
        chunk = triton.cdiv(kv_blocks, min(kv_blocks, cfg.max_split if self.sm_count > 1 else 1)) * block_kv
        n_split = triton.cdiv(p + rows, chunk)
        acc = torch.empty(n_split, r, hd, device=q.device, dtype=torch.float32)
        m = torch.empty(n_split, r, device=q.device, dtype=torch.float32)
        l_sum = torch.empty(n_split, r, device=q.device, dtype=torch.float32)
        _attn_kernel[(row_blocks, n_split)](
            q, kp, vp, ks, vs, n_valid, acc, m, l_sum, r, p, rows, hd**-0.5,
            CHUNK=chunk, HD=hd, BLOCK_R=block_r, BLOCK_KV=block_kv,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages, **self._pdl,
        )  # fmt: skip
        block_d = min(cfg.combine_dims, hd)
        _attn_combine_kernel[(triton.cdiv(r, cfg.combine_rows), hd // block_d)](
            acc, m, l_sum, out, r, N_SPLIT=n_split, HD=hd, BLOCK_R=cfg.combine_rows, BLOCK_D=block_d,
            num_warps=4, **self._pdl,
        )  # fmt: skip

    def velocity(self, keys, values, key_mask, n_valid, x_t, mods) -> torch.Tensor:
        del key_mask  # implied by n_valid (valid prefix slots first)
        b, rows, _ = x_t.shape
        if b != 1:
            raise ValueError(f"TritonExpert runs batch 1, got {b}")
        model, dev, dtype = self.model, x_t.device, self.model.dtype
        d, hd, nh = self.width, self.head_dim, self.heads
        cfg = self.configs or default_configs(rows)
        if not torch.is_tensor(n_valid):
            n_valid = torch.tensor([int(n_valid)], device=dev)
        n_valid = n_valid.reshape(1).to(device=dev, dtype=torch.int64)
        keys = keys.contiguous()
        values = values.contiguous()
        p = keys.shape[3]
        if p + rows > self.max_positions:
            raise ValueError(f"prefix {p} + chunk {rows} exceeds the RoPE table ({self.max_positions} positions)")
        mod = self._mods(mods)
        x = model.action_in_proj(x_t.to(dtype)).reshape(rows, d).contiguous()
        h = torch.empty_like(x)
        q = torch.empty(rows, nh * hd, device=dev, dtype=dtype)
        ks = torch.empty(rows, hd, device=dev, dtype=dtype)
        vs = torch.empty_like(ks)
        attn_out = torch.empty_like(q)
        act = torch.empty(rows, self.mlp_dim, device=dev, dtype=dtype)
        self._ada(x, h, mod[0])
        for i, (w_qkv, w_o, w_gate_up, w_down) in enumerate(self.weights):
            self._gemm(h, w_qkv, cfg["qkv"], MODE_QKV, rows, qkv=(q, ks, vs), cos_pos=(self.cos, self.sin, n_valid))
            self._attention(q.view(rows * nh, hd), keys[i, 0, 0], values[i, 0, 0], ks, vs, n_valid, attn_out)
            part = self._gemm(attn_out, w_o, cfg["o"], MODE_PARTIAL, rows)
            self._ada(x, h, mod[2 * i + 1], part=part, gate=mod[2 * i, 2 * d :])
            self._gemm(h, w_gate_up, cfg["gate_up"], MODE_GELU, rows, out=act)
            part = self._gemm(act, w_down, cfg["down"], MODE_PARTIAL, rows)
            self._ada(x, h, mod[2 * i + 2], part=part, gate=mod[2 * i + 1, 2 * d :])
        return model.action_out_proj(h.view(1, rows, d)).float()

"""A compact native PyTorch Pi0.5: SigLIP + projector + Gemma prefix, Gemma action expert with adaRMS, flow matching.

Module names are our own; ``checkpoint.py`` maps LeRobot/openpi keys onto them. Only tokens that matter are computed:
absent cameras and prompt padding are dropped from the prefix (they are masked out of every attention in the
reference, so valid-token results are identical). A prefix may still carry trailing padding slots (``key_mask``) so
that CUDA graphs can be reused across prompt lengths; padding is masked by key only, so every query row stays finite.

Numerics follow the fixture README: RMSNorm ``x*rsqrt(mean(x^2)+eps)*(1+w)`` in float32, RoPE with ``rotate_half``
and float32 cos/sin, token embeddings scaled by ``sqrt(width)``, time sinusoid in float64, Euler with dt = -1/steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from sim_eval.policies.pi05.config import GemmaSizes, ModelSizes, VisionSizes


@dataclass(frozen=True)
class PrefixCache:
    """Immutable result of ``encode_prefix``: per-layer K/V (post-RoPE) of the prefix.

    ``keys``/``values``: (layers, batch, kv_heads, P, head_dim); ``key_mask``: (batch, P) bool or None when every slot
    is valid; ``n_valid``: number of valid slots (= position of the first action token). Nothing mutates these tensors;
    ``denoise`` only reads them, so one cache serves any number of frames."""

    keys: Tensor
    values: Tensor
    key_mask: Tensor | None
    n_valid: int


# ----------------------------------------------------------------------------------------------------------- helpers
def rms_norm(x: Tensor, eps: float) -> Tensor:
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin of shape (batch, seq, 1, head_dim) (heads broadcast), computed in float32 from float32 positions (as
    transformers does)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim)
    )
    freqs = positions.float()[..., None] * inv_freq  # (batch, seq, head_dim/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype)[:, :, None], emb.sin().to(dtype)[:, :, None]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return x * cos + rotate_half(x) * sin


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
    """q (B, S, H, D) as projected, k/v (B, KV, T, D), key_mask (B, T) bool or None -> (B, S, H*D); scale D^-0.5.

    With one KV head (every Gemma variant here) the (S, H) query rows are folded into one sequence: grouped
    attention becomes plain single-head attention that every fused SDPA kernel takes, and both the query and the
    output are views (no transpose copies)."""
    b, s, h, d = q.shape
    kv = k.shape[1]
    mask = None
    if key_mask is not None:
        mask = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device)
        mask = mask.masked_fill(~key_mask, torch.finfo(q.dtype).min)[:, None, None, :]
    if kv == 1:
        out = F.scaled_dot_product_attention(q.reshape(b, 1, s * h, d), k, v, attn_mask=mask)
        return out.reshape(b, s, h * d)
    rep = h // kv
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=mask
    )
    return out.transpose(1, 2).reshape(b, s, h * d)


def sinusoid(t: Tensor, dim: int, min_period: float, max_period: float) -> Tensor:
    """Pi0.5 time embedding, computed in float64 and returned as float32 (the reference's op order)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    scaling = 1.0 / period * 2 * math.pi
    arg = scaling[None, :] * t.to(torch.float64)[:, None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1).float()


def fuse_linears(linears: list[nn.Linear]) -> tuple[Tensor, Tensor | None]:
    """Concatenate the weights (and biases) of linears that read the same input into one matrix, and re-point each
    linear's parameters at its slice of it: one GEMM instead of several, no extra memory, state_dict unchanged."""
    weight = torch.cat([lin.weight.detach() for lin in linears])
    bias = torch.cat([lin.bias.detach() for lin in linears]) if linears[0].bias is not None else None
    point_linears_at((weight, bias), linears)
    return weight, bias


def point_linears_at(fused: tuple[Tensor, Tensor | None], linears: list[nn.Linear]) -> None:
    """Make each linear's parameters its consecutive row slice of ``fused`` = (weight, bias or None)."""
    weight, bias = fused
    offset = 0
    for lin in linears:
        n = lin.weight.shape[0]
        lin.weight = nn.Parameter(weight[offset : offset + n], requires_grad=False)
        if bias is not None:
            lin.bias = nn.Parameter(bias[offset : offset + n], requires_grad=False)
        offset += n


def project(x: Tensor, fused: tuple[Tensor, Tensor | None] | None, linears: list[nn.Linear]) -> list[Tensor]:
    if fused is None:
        return [lin(x) for lin in linears]
    return list(F.linear(x, *fused).split([lin.weight.shape[0] for lin in linears], dim=-1))


# ----------------------------------------------------------------------------------------------------------- modules
class SiglipLayer(nn.Module):
    def __init__(self, s: VisionSizes, eps: float):
        super().__init__()
        self.heads, self.eps = s.num_heads, eps
        self.layer_norm1 = nn.LayerNorm(s.width, eps=eps)
        self.layer_norm2 = nn.LayerNorm(s.width, eps=eps)
        self.self_attn = nn.Module()
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self.self_attn, name, nn.Linear(s.width, s.width))
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(s.width, s.mlp_dim)
        self.mlp.fc2 = nn.Linear(s.mlp_dim, s.width)
        self.fused = None

    def fuse(self) -> None:
        if self.fused is None:
            self.fused = fuse_linears([self.self_attn.q_proj, self.self_attn.k_proj, self.self_attn.v_proj])

    def forward(self, x: Tensor) -> Tensor:
        b, n, w = x.shape
        h = self.layer_norm1(x)
        a = self.self_attn

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, w // self.heads).transpose(1, 2)

        q, k, v = project(h, self.fused, [a.q_proj, a.k_proj, a.v_proj])
        o = F.scaled_dot_product_attention(split(q), split(k), split(v))
        x = x + a.out_proj(o.transpose(1, 2).reshape(b, n, w))
        h = self.layer_norm2(x)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(h), approximate="tanh"))


class SiglipVision(nn.Module):
    def __init__(self, s: VisionSizes, eps: float):
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.patch_embedding = nn.Conv2d(3, s.width, s.patch_size, stride=s.patch_size)
        self.embeddings.position_embedding = nn.Embedding(s.num_tokens, s.width)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(SiglipLayer(s, eps) for _ in range(s.depth))
        self.post_layernorm = nn.LayerNorm(s.width, eps=eps)

    def forward(self, images: Tensor) -> Tensor:
        """images (N, 3, H, W) in [-1, 1] -> (N, tokens, width)."""
        x = self.embeddings.patch_embedding(images.to(self.embeddings.patch_embedding.weight.dtype))
        x = x.flatten(2).transpose(1, 2) + self.embeddings.position_embedding.weight[None]
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


class GemmaAttention(nn.Module):
    def __init__(self, width: int, g: GemmaSizes, kv_only: bool = False):
        super().__init__()
        if not kv_only:
            self.q_proj = nn.Linear(width, g.num_heads * g.head_dim, bias=False)
            self.o_proj = nn.Linear(g.num_heads * g.head_dim, width, bias=False)
        self.k_proj = nn.Linear(width, g.num_kv_heads * g.head_dim, bias=False)
        self.v_proj = nn.Linear(width, g.num_kv_heads * g.head_dim, bias=False)
        self.fused = None

    @property
    def _linears(self) -> list[nn.Linear]:
        return [self.q_proj, self.k_proj, self.v_proj] if hasattr(self, "q_proj") else [self.k_proj, self.v_proj]

    def fuse(self) -> None:
        if self.fused is None:
            self.fused = fuse_linears(self._linears)

    def qkv(self, h: Tensor) -> list[Tensor]:
        """[q, k, v] (or [k, v] for a K/V-only layer)."""
        return project(h, self.fused, self._linears)


class GemmaMLP(nn.Module):
    def __init__(self, width: int, mlp_dim: int):
        super().__init__()
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)
        self.fused = None

    def fuse(self) -> None:
        if self.fused is None:
            self.fused = fuse_linears([self.gate_proj, self.up_proj])

    def forward(self, x: Tensor) -> Tensor:
        gate, up = project(x, self.fused, [self.gate_proj, self.up_proj])
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


class RMSNorm(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width))


class AdaRMSNorm(nn.Module):
    """adaRMS: ``dense(cond) -> [scale, shift, gate]``; no weight of its own."""

    def __init__(self, width: int, cond_dim: int):
        super().__init__()
        self.dense = nn.Linear(cond_dim, 3 * width)


class PrefixLayer(nn.Module):
    """A VLM (Gemma) layer; the last one only needs K and V (its output is never read)."""

    def __init__(self, g: GemmaSizes, kv_only: bool):
        super().__init__()
        self.kv_only = kv_only
        self.input_layernorm = RMSNorm(g.width)
        self.self_attn = GemmaAttention(g.width, g, kv_only=kv_only)
        if not kv_only:
            self.post_attention_layernorm = RMSNorm(g.width)
            self.mlp = GemmaMLP(g.width, g.mlp_dim)


class ExpertLayer(nn.Module):
    def __init__(self, g: GemmaSizes):
        super().__init__()
        self.input_layernorm = AdaRMSNorm(g.width, g.width)
        self.self_attn = GemmaAttention(g.width, g)
        self.post_attention_layernorm = AdaRMSNorm(g.width, g.width)
        self.mlp = GemmaMLP(g.width, g.mlp_dim)


class Pi05Model(nn.Module):
    """The network. ``encode_prefix`` and ``denoise`` are pure functions of (weights, inputs)."""

    def __init__(self, sizes: ModelSizes):
        super().__init__()
        self.sizes = sizes
        v, g, e = sizes.vision, sizes.vlm, sizes.expert
        if g.head_dim != e.head_dim or g.num_kv_heads != e.num_kv_heads or g.depth != e.depth:
            raise ValueError(f"VLM and expert must share depth, head_dim and kv heads: {g} vs {e}")
        self.vision = SiglipVision(v, sizes.layer_norm_eps)
        self.projector = nn.Linear(v.width, g.width)
        self.llm = nn.Module()
        self.llm.embed_tokens = nn.Embedding(sizes.vocab_size, g.width)
        self.llm.layers = nn.ModuleList(PrefixLayer(g, kv_only=(i == g.depth - 1)) for i in range(g.depth))
        self.expert = nn.Module()
        self.expert.layers = nn.ModuleList(ExpertLayer(e) for _ in range(e.depth))
        self.expert.norm = AdaRMSNorm(e.width, e.width)
        self.action_in_proj = nn.Linear(sizes.max_action_dim, e.width)
        self.action_out_proj = nn.Linear(e.width, sizes.max_action_dim)
        self.time_mlp_in = nn.Linear(e.width, e.width)
        self.time_mlp_out = nn.Linear(e.width, e.width)
        self.embed_scale: float | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.weight.dtype

    def rounded_embed_scale(self, dtype: torch.dtype) -> float:
        """sqrt(width) rounded to the embedding dtype, as the reference multiplies it."""
        return float(torch.tensor(math.sqrt(self.sizes.vlm.width), dtype=dtype))

    def prepare_inference(self) -> None:
        """After loading and casting: fuse projections and fix the embedding scale as a Python float (a tensor
        created inside ``embed_prefix`` would break torch.compile graphs and CUDA-graph capture)."""
        self.fuse_projections()
        self.embed_scale = self.rounded_embed_scale(self.dtype)

    # ------------------------------------------------------------------------------------------------------ prefix
    def embed_prefix(self, images: Tensor, tokens: Tensor) -> Tensor:
        """images (n_cam, 3, H, W) of the present cameras only (batch 1) or (B, n_cam, 3, H, W), tokens (B, T) valid
        ids (plus any padding) -> (B, n_cam*image_tokens + T, width): image tokens (projected, not scaled) then
        scaled token embeddings."""
        parts = []
        batched = images.dim() == 5
        b = images.shape[0] if batched else 1
        if images.shape[-4] > 0:
            img = self.projector(self.vision(images.flatten(0, 1) if batched else images))  # (b*n_cam, tokens, w)
            parts.append(img.reshape(b, -1, img.shape[-1]))
        emb = self.llm.embed_tokens(tokens)
        scale = self.embed_scale if self.embed_scale is not None else self.rounded_embed_scale(emb.dtype)
        parts.append(emb * scale)
        return torch.cat(parts, dim=1)

    def encode_prefix(
        self, images: Tensor, tokens: Tensor, key_mask: Tensor | None = None, n_valid: int | None = None
    ) -> PrefixCache:
        """Run vision, projector and the prefix LM; return every layer's K/V.

        Without ``key_mask`` all slots are valid. With it, valid slots must come first (positions 0..n_valid-1) and
        padded slots are excluded from every key set."""
        keys, values = self.prefix_kv(images, tokens, key_mask)
        if n_valid is None:
            n_valid = keys.shape[3] if key_mask is None else int(key_mask[0].sum())
        return PrefixCache(keys, values, key_mask, n_valid)

    def prefix_kv(self, images: Tensor, tokens: Tensor, key_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(keys, values), each (layers, batch, kv_heads, P, head_dim): plain tensors, so this is what gets
        compiled and graph-captured."""
        return self.embeddings_kv(self.embed_prefix(images, tokens), key_mask)

    def embeddings_kv(self, x: Tensor, key_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s, g = self.sizes, self.sizes.vlm
        b, p, _ = x.shape
        pos = torch.arange(p, device=x.device)[None].expand(b, p)
        cos, sin = rope_cos_sin(pos, g.head_dim, s.rope_theta, x.dtype)
        ks, vs = [], []
        for layer in self.llm.layers:
            attn = layer.self_attn
            h = (rms_norm(x, s.rms_norm_eps) * (1.0 + layer.input_layernorm.weight.float())).to(x.dtype)
            proj = attn.qkv(h)
            k = apply_rope(proj[-2].view(b, p, g.num_kv_heads, g.head_dim), cos, sin).transpose(1, 2)
            v = proj[-1].view(b, p, g.num_kv_heads, g.head_dim).transpose(1, 2)
            ks.append(k)
            vs.append(v)
            if layer.kv_only:
                break
            q = apply_rope(proj[0].view(b, p, g.num_heads, g.head_dim), cos, sin)
            x = x + attn.o_proj(attention(q, k, v, key_mask))
            h = (rms_norm(x, s.rms_norm_eps) * (1.0 + layer.post_attention_layernorm.weight.float())).to(x.dtype)
            x = x + layer.mlp(h)
        return torch.stack(ks), torch.stack(vs)

    def fuse_projections(self) -> None:
        """Fuse q/k/v and gate/up weights (after loading; see ``fuse_linears``)."""
        for layer in self.vision.encoder.layers:
            layer.fuse()
        for layer in list(self.llm.layers) + list(self.expert.layers):
            layer.self_attn.fuse()
            if hasattr(layer, "mlp"):
                layer.mlp.fuse()

    # ----------------------------------------------------------------------------------------------------- denoise
    def time_modulations(self, t: Tensor) -> list[Tensor]:
        """adaRMS [scale, shift, gate] of every expert norm for time t (shape (1,)): they depend on t alone, so a
        fixed schedule lets callers compute them once and reuse them for every frame."""
        e = self.sizes.expert
        emb = sinusoid(t, e.width, self.sizes.min_period, self.sizes.max_period).to(self.dtype)
        cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(emb))))
        mods = []
        for layer in self.expert.layers:
            mods.append(layer.input_layernorm.dense(cond))
            mods.append(layer.post_attention_layernorm.dense(cond))
        mods.append(self.expert.norm.dense(cond))
        return mods

    def schedule(self, num_steps: int, device: torch.device | str | None = None) -> list[Tensor]:
        """The times t_k = float32(1 + k*dt), k = 0..steps-1, dt = -1/steps (computed in double, then rounded, as the
        reference does; accumulating in float32 drifts by ~1e-7 and moves the actions by ~4e-5)."""
        dt = -1.0 / num_steps
        return [torch.tensor([1.0 + k * dt], dtype=torch.float32, device=device) for k in range(num_steps)]

    def velocity(
        self, keys: Tensor, values: Tensor, key_mask: Tensor | None, n_valid, x_t: Tensor, mods: list[Tensor]
    ) -> Tensor:
        """Flow velocity at x_t given the prefix K/V (``n_valid``: int or (1,) tensor, the first action position)."""
        s, e = self.sizes, self.sizes.expert
        b, n, _ = x_t.shape
        x = self.action_in_proj(x_t.to(self.dtype))
        pos = n_valid + torch.arange(n, device=x.device)[None].expand(b, n)
        cos, sin = rope_cos_sin(pos, e.head_dim, s.rope_theta, x.dtype)
        if key_mask is not None:
            key_mask = torch.cat([key_mask, torch.ones(b, n, dtype=torch.bool, device=x.device)], dim=1)

        def ada(x: Tensor, mod: Tensor) -> tuple[Tensor, Tensor]:
            scale, shift, gate = mod[:, None].float().chunk(3, dim=-1)
            return (rms_norm(x, s.rms_norm_eps) * (1.0 + scale) + shift).to(x.dtype), gate.to(x.dtype)

        for i, layer in enumerate(self.expert.layers):
            attn = layer.self_attn
            h, gate = ada(x, mods[2 * i])
            q, k, v = attn.qkv(h)
            q = apply_rope(q.view(b, n, e.num_heads, e.head_dim), cos, sin)
            k = apply_rope(k.view(b, n, e.num_kv_heads, e.head_dim), cos, sin).transpose(1, 2)
            v = v.view(b, n, e.num_kv_heads, e.head_dim).transpose(1, 2)
            k = torch.cat([keys[i], k], dim=2)
            v = torch.cat([values[i], v], dim=2)
            x = x + attn.o_proj(attention(q, k, v, key_mask)) * gate
            h, gate = ada(x, mods[2 * i + 1])
            x = x + layer.mlp(h) * gate
        h, _ = ada(x, mods[-1])
        return self.action_out_proj(h).float()

    def denoise(
        self,
        cache: PrefixCache,
        noise: Tensor,
        num_steps: int = 10,
        modulations: list[list[Tensor]] | None = None,
        trajectory: list | None = None,
        velocity_fn=None,
    ) -> Tensor:
        """Flow-matching Euler integration from t=1 (noise) to t=0; returns normalized actions (B, chunk, max_dim)
        in float32. ``modulations`` (per step, from ``time_modulations``) may be precomputed by the caller;
        ``velocity_fn`` replaces ``self.velocity`` (e.g. a compiled version)."""
        velocity = velocity_fn or self.velocity
        dt = -1.0 / num_steps
        x = noise.float()
        for k in range(num_steps):
            if modulations is not None:  # precomputed: no host-to-device copy of t (CUDA-graph capturable)
                mods, t = modulations[k], None
            else:
                t = self.schedule(num_steps, noise.device)[k]
                mods = self.time_modulations(t)
            v = velocity(cache.keys, cache.values, cache.key_mask, cache.n_valid, x, mods)
            if trajectory is not None:
                trajectory.append((t, x, v))
            x = x + dt * v
        return x

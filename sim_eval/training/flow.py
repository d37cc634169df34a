"""Pi0.5's flow-matching objective and sampler on ``sim_eval.policies.pi05.model.Pi05Model``, the network the engine
runs.

Training: for normalized actions ``a`` and noise ``e``, ``x_t = t*e + (1-t)*a`` with ``t ~ Beta(1.5, 1) * 0.999 +
0.001`` (LeRobot's / openpi's time sampling, weighting noisy times), and the expert regresses the velocity ``e - a``
given the prefix of (images, prompt). Inference integrates ``dx/dt = v`` from ``t = 1`` (noise) to ``0`` in 10 Euler
steps: exactly ``Pi05Model.denoise``, which the engine calls too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sim_eval.policies.pi05.model import Pi05Model

TIME_BETA = (1.5, 1.0)
TIME_SCALE, TIME_OFFSET = 0.999, 0.001


def init_weights(model: Pi05Model, seed: int) -> Pi05Model:
    """From-scratch initialization: truncated normal(0.02) for every matrix (projections, embeddings, the patch
    convolution), zero biases, SigLIP LayerNorms at identity, Gemma RMSNorm weights 0 (scale 1 under the ``1 + w``
    convention), and the expert's adaRMS modulations zero (adaLN-zero: every expert block starts as the identity,
    which keeps early training stable)."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.zero_()
            elif param.dim() == 1:  # SigLIP LayerNorm (scale) or Gemma RMSNorm (1 + w)
                param.fill_(1.0 if name.startswith("vision.") else 0.0)
            else:
                param.copy_(nn.init.trunc_normal_(torch.empty_like(param), std=0.02, a=-0.04, b=0.04, generator=gen))
        norms = [n for layer in model.expert.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
        for norm in norms + [model.expert.norm]:
            norm.dense.weight.zero_()
            norm.dense.bias.zero_()
    return model


def sample_time(batch: int, generator: torch.Generator | None = None) -> Tensor:
    """t ~ Beta(1.5, 1) * 0.999 + 0.001 (on the CPU). Beta(a, 1) has the inverse CDF u ** (1 / a), so a seeded
    uniform draw gives it exactly."""
    a, b = TIME_BETA
    if b != 1.0:
        raise NotImplementedError("only Beta(a, 1) time sampling (Pi0.5's) is implemented")
    u = torch.rand(batch, generator=generator)
    return u ** (1.0 / a) * TIME_SCALE + TIME_OFFSET


def prefix_kv(model: Pi05Model, images: Tensor, tokens: Tensor, token_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Batched prefix: images (B, n_cam, 3, H, W) in [-1, 1], tokens (B, T) right-padded, token_mask (B, T) ->
    keys, values (layers, B, kv, P, hd) and the prefix key mask (B, P)."""
    b = images.shape[0]
    n_img = images.shape[1] * model.sizes.vision.num_tokens
    key_mask = torch.cat([torch.ones(b, n_img, dtype=torch.bool, device=images.device), token_mask], dim=1)
    keys, values = model.prefix_kv(images, tokens, key_mask)
    return keys, values, key_mask


def flow_matching_loss(
    model: Pi05Model,
    images: Tensor,
    tokens: Tensor,
    token_mask: Tensor,
    actions: Tensor,
    action_mask: Tensor,
    noise: Tensor,
    t: Tensor,
) -> Tensor:
    """Mean squared error of the predicted velocity against ``noise - actions`` over real action dims and valid steps.

    actions (B, chunk, D) normalized (D <= max_action_dim; the rest is padded with zeros), action_mask (B, chunk),
    noise (B*k, chunk, max_action_dim) and t (B*k,): with k > 1 every prefix is denoised from k (noise, time) draws
    (the prefix is the costly part, the expert cheap: k draws give the expert k times the supervision)."""
    keys, values, key_mask = prefix_kv(model, images, tokens, token_mask)
    k = noise.shape[0] // actions.shape[0]
    if k > 1:
        keys, values = keys.repeat_interleave(k, dim=1), values.repeat_interleave(k, dim=1)
        key_mask = key_mask.repeat_interleave(k, dim=0)
        actions, action_mask = actions.repeat_interleave(k, dim=0), action_mask.repeat_interleave(k, dim=0)
    b, chunk, d = actions.shape
    padded = torch.zeros(b, chunk, model.sizes.max_action_dim, device=actions.device, dtype=actions.dtype)
    padded[..., :d] = actions
    x_t = t[:, None, None] * noise + (1.0 - t[:, None, None]) * padded
    target = noise - padded
    n_valid = (key_mask.sum(dim=1, keepdim=True)).to(torch.long)  # (B, 1): first action position per sample
    mods = model.time_modulations(t)
    v = model.velocity(keys, values, key_mask, n_valid, x_t, mods)
    err = (v[..., :d] - target[..., :d]).pow(2).mean(dim=-1)  # (B, chunk)
    weight = action_mask.to(err.dtype)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


@torch.no_grad()
def sample_actions(model: Pi05Model, images: Tensor, tokens: Tensor, noise: Tensor, num_steps: int = 10) -> Tensor:
    """The training model's own sampler for one observation: images (n_cam, 3, H, W) in [-1, 1], tokens (1, T) ->
    normalized actions (1, chunk, max_action_dim), through ``encode_prefix`` and ``denoise`` (10 Euler steps)."""
    cache = model.encode_prefix(images, tokens)
    return model.denoise(cache, noise, num_steps)


class EMA:
    """Exponential moving average of a model's parameters, with the usual warm-up (decay grows with the step so the
    first updates are not averaged with the random initialization for long)."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            self.shadow[k].mul_(decay).add_(v.detach().float(), alpha=1.0 - decay)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})


def lr_at(step: int, base_lr: float, warmup: int, total: int, final_lr: float) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup`` steps, then cosine decay to ``final_lr`` at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * progress))

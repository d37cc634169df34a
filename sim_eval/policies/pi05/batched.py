"""Batched ``encode_prefix`` and ``denoise`` over observations of several episodes at once, for the batched policy
server (``sim_eval.runtime.server``). Each slot gets back exactly what ``Pi05Engine``'s batch-1 calls give it: a
``PrefixCache`` of its own (unpadded, batch 1) and its own action chunk.

Slots differ in prompt length (the instruction, and the state tokens that change every frame) and, for denoising,
in the age and length of their prefixes. Both calls pad to the longest slot and mask the padding by key: valid
positions come first, so RoPE positions, and every valid query's keys, are those of the slot alone. On CUDA the
batch is rounded up to a power of two (the extra rows repeat the first slot and are dropped) and lengths to a
multiple of ``LENGTH_BUCKET``, so a handful of CUDA graphs serve every batch; on the CPU nothing is rounded.

The denoise step runs the engine's kernels: with ``kernels=triton`` the Triton expert kernels over the whole batch
(``TritonExpert``, each slot attending to its own prefix), else the model's own torch ops (compiled on CUDA when the
engine is)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import torch

from sim_eval.policies.pi05.engine import Pi05Engine, Prepared
from sim_eval.policies.pi05.model import PrefixCache

LENGTH_BUCKET = 32  # CUDA: prompt and prefix lengths rounded up to this many positions (masked)


# the batched Triton step of each engine (kernels=triton): its own TritonExpert in the per-kernel schedule, whatever
# schedule the engine's batch-1 step was given (the persistent one runs batch 1 only)
_BATCHED_EXPERTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _velocity(engine: Pi05Engine):
    """The batched denoise step's velocity: the Triton expert kernels over the batch (``kernels=triton``), else the
    engine's torch step (compiled with static shapes on CUDA), replayed under CUDA graphs. Compiling the torch step
    with dynamic shapes for batching was tried on an H200 and did not finish its first batch within 200 s
    (docs/benchmarks.md)."""
    if engine.kernels != "triton":
        return engine._velocity
    if engine not in _BATCHED_EXPERTS:
        from sim_eval.policies.pi05.triton_expert import TritonExpert

        _BATCHED_EXPERTS[engine] = TritonExpert(engine.model, schedule="kernels").velocity
    return _BATCHED_EXPERTS[engine]


def bucket_batch(n: int) -> int:
    """The batch size a batch of ``n`` slots runs at under CUDA graphs: the next power of two."""
    return 1 << (n - 1).bit_length()


def bucket_length(n: int) -> int:
    """The padded length of ``n`` positions under CUDA graphs: the next multiple of ``LENGTH_BUCKET``."""
    return -(-n // LENGTH_BUCKET) * LENGTH_BUCKET


def _bucket_batch(engine: Pi05Engine, n: int) -> int:
    return bucket_batch(n) if engine.cuda_graphs else n


def _bucket_length(engine: Pi05Engine, n: int) -> int:
    return bucket_length(n) if engine.cuda_graphs else n


def warmup_plan(max_batch: int, max_tokens: int, image_tokens: int) -> dict[str, list[tuple[int, int]]]:
    """Every shape a batch of at most ``max_batch`` slots, with prompts of at most ``max_tokens`` tokens after
    ``image_tokens`` image tokens, can run at under CUDA graphs: ``prefix``: (batch size, padded prompt length);
    ``denoise``: (batch size, padded prefix length)."""
    batches = sorted({bucket_batch(n) for n in range(1, max_batch + 1)})
    prompts = sorted({bucket_length(n) for n in range(1, max_tokens + 1)})
    prefixes = sorted({bucket_length(image_tokens + n) for n in range(1, max_tokens + 1)})
    return {
        "prefix": [(b, t) for b in batches for t in prompts],
        "denoise": [(b, p) for b in batches for p in prefixes],
    }


def warm_up(engine: Pi05Engine, max_batch: int, cameras: int) -> int:
    """Capture, before the first request, the prefix and denoise graphs of every shape in ``warmup_plan`` (prompts
    up to the tokenizer's limit, ``cameras`` images a slot), so no batch waits for a compile or a capture; the
    engine keeps them all. Returns the number of graphs (0 without CUDA graphs: nothing to capture)."""
    if not engine.cuda_graphs:
        return 0
    sizes = engine.info.sizes
    plan = warmup_plan(max_batch, engine.tokenizer.max_len, cameras * sizes.vision.num_tokens)
    n_graphs = len(plan["prefix"]) + len(plan["denoise"])
    # all of them kept, and the two of the server's batch-1 latency measurement (a prefix, a denoise)
    engine._graphs.max_entries = max(engine._graphs.max_entries, n_graphs + 2)
    images = torch.zeros(cameras, 3, sizes.vision.image_size, sizes.vision.image_size)
    for b, t_pad in plan["prefix"]:
        encode_prefix_batch(engine, [Prepared({}, images, [0] * t_pad)] * b)
    noise = engine.sample_noise(torch.Generator().manual_seed(0))
    e = sizes.expert
    for b, p_pad in plan["denoise"]:
        kv = torch.zeros(e.depth, 1, e.num_kv_heads, p_pad, e.head_dim, dtype=engine.dtype, device=engine.device)
        denoise_batch(engine, [PrefixCache(kv, kv, None, p_pad)] * b, [noise] * b)
    return n_graphs


def encode_prefix_batch(engine: Pi05Engine, preps: Sequence[Prepared]) -> list[PrefixCache]:
    """One prefix pass for all ``preps`` (grouped by camera count, which sets the image tokens); slot i's cache."""
    out: list[PrefixCache | None] = [None] * len(preps)
    groups: dict[int, list[int]] = {}
    for i, prep in enumerate(preps):
        groups.setdefault(prep.images.shape[0], []).append(i)
    for n_cam, members in groups.items():
        for i, cache in zip(members, _prefix_group(engine, [preps[i] for i in members], n_cam), strict=True):
            out[i] = cache
    return out  # type: ignore[return-value]


def _prefix_group(engine: Pi05Engine, preps: list[Prepared], n_cam: int) -> list[PrefixCache]:
    n = len(preps)
    rows = preps + [preps[0]] * (_bucket_batch(engine, n) - n)
    lengths = [len(p.tokens) for p in rows]
    t_pad = _bucket_length(engine, max(lengths))
    n_img = n_cam * engine.info.sizes.vision.num_tokens
    ids = torch.zeros(len(rows), t_pad, dtype=torch.long)
    key_mask = torch.zeros(len(rows), n_img + t_pad, dtype=torch.bool)
    for r, prep in enumerate(rows):
        ids[r, : lengths[r]] = torch.tensor(prep.tokens, dtype=torch.long)
        key_mask[r, : n_img + lengths[r]] = True
    images = torch.stack([p.images for p in rows]).to(engine.device, engine.dtype)
    ids, key_mask = ids.to(engine.device), key_mask.to(engine.device)
    with torch.inference_mode():
        if engine.cuda_graphs:
            inputs = {"images": images, "ids": ids, "key_mask": key_mask}
            keys, values = engine._replay(
                ("prefix_batch", len(rows), n_cam, t_pad),
                lambda images, ids, key_mask: engine._prefix_kv(images, ids, key_mask),
                inputs,
            )
        else:
            keys, values = engine._prefix_kv(images, ids, key_mask)
        caches = []
        for r in range(n):
            valid = n_img + lengths[r]
            k = keys[:, r : r + 1, :, :valid].clone()
            v = values[:, r : r + 1, :, :valid].clone()
            caches.append(PrefixCache(k, v, None, valid))
    return caches


def denoise_batch(
    engine: Pi05Engine, caches: Sequence[PrefixCache], noises: Sequence[torch.Tensor]
) -> list[np.ndarray]:
    """Each slot's action chunk (n_action_steps, 7), un-normalized, from its own prefix and noise, in one batch."""
    n = len(caches)
    if n != len(noises) or n == 0:
        raise ValueError(f"denoise_batch: {n} caches and {len(noises)} noises (need as many, at least one)")
    if any(c.keys.shape[1] != 1 for c in caches):
        raise ValueError("denoise_batch takes batch-1 prefix caches (one per slot)")
    rows = list(range(n)) + [0] * (_bucket_batch(engine, n) - n)
    p_pad = _bucket_length(engine, max(int(caches[i].n_valid) for i in rows))
    batch = stack_prefixes([caches[i] for i in rows], p_pad)
    noise = torch.cat([noises[i].reshape(1, *noises[i].shape[-2:]) for i in rows]).to(engine.device, torch.float32)
    velocity = _velocity(engine)
    mods = engine.modulations()

    def fn(keys, values, noise, n_valid, key_mask):
        cache = PrefixCache(keys, values, key_mask, n_valid)
        return engine.model.denoise(cache, noise, engine.num_steps, modulations=mods, velocity_fn=velocity)

    with torch.inference_mode():
        inputs = {"keys": batch.keys, "values": batch.values, "noise": noise, "n_valid": batch.n_valid,
                  "key_mask": batch.key_mask}  # fmt: skip
        if engine.cuda_graphs:
            x = engine._replay(("denoise_batch", len(rows), p_pad), fn, inputs).clone()
        else:
            x = fn(**inputs)
    x = x[:n, : engine.info.n_action_steps, :7].float().cpu().numpy()
    return [engine.normalizer.unnormalize_actions(x[i]) for i in range(n)]


def stack_prefixes(caches: Sequence[PrefixCache], p_pad: int) -> PrefixCache:
    """Batch-1 prefix caches as one batch of ``p_pad`` positions: each slot's valid positions first, the rest zeros
    masked by key; ``n_valid`` a (B, 1) tensor."""
    first = caches[0].keys
    layers, _, kv_heads, _, head_dim = first.shape
    keys = torch.zeros(layers, len(caches), kv_heads, p_pad, head_dim, dtype=first.dtype, device=first.device)
    values = torch.zeros_like(keys)
    key_mask = torch.zeros(len(caches), p_pad, dtype=torch.bool, device=first.device)
    valid = [int(c.n_valid) for c in caches]
    for r, c in enumerate(caches):
        # a batch-1 cache may itself be padded (pad_multiple > 1): its valid positions come first
        keys[:, r, :, : valid[r]] = c.keys[:, 0, :, : valid[r]]
        values[:, r, :, : valid[r]] = c.values[:, 0, :, : valid[r]]
        key_mask[r, : valid[r]] = True
    return PrefixCache(keys, values, key_mask, torch.tensor(valid, device=first.device)[:, None])

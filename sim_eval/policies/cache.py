"""``CacheController``: the temporal prefix-cache policy wrapper (modes ``full``, ``cache<N>``, ``adaptive<N>``).

It wraps any engine that offers::

    prepare(obs) -> prepared           # has ``images_u8``: {view: uint8 (S, S, 3) model-input image, S the model's}
    encode_prefix(prepared) -> cache   # expensive; the result is never mutated
    denoise(cache, noise) -> (chunk, 7) actions
    noise_shape, sync()

A *full* frame encodes a new prefix; a *cached* frame denoises against the last full frame's prefix (its new images
are ignored). ``cache<N>`` runs a full frame every N inferences; ``adaptive<N>`` does too, and additionally refreshes
early when the pixel MAE between the frame's model-input images and those of the last full frame reaches the
threshold on any configured view; such a forced refresh starts a new window of N.

Noise is *paired*: the k-th inference of an episode draws its noise from a generator seeded by
``(task.noise_seed, k)``, so runs that differ only in cache mode denoise from identical noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim_eval.policies.base import TaskContext, Timer
from sim_eval.policies.cache_mode import DEFAULT_THRESHOLD, CacheMode


def pixel_mae(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| over all pixels and channels of two uint8 images (0..255 scale)."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def paired_noise(shape: tuple[int, ...], noise_seed: int, k: int):
    """Noise of the k-th inference of an episode: a CPU generator seeded from (noise_seed, k), so it is identical
    across cache modes and devices."""
    import torch

    seed = int(np.random.SeedSequence([int(noise_seed) & 0xFFFFFFFFFFFF, int(k)]).generate_state(1, np.uint64)[0])
    gen = torch.Generator().manual_seed(seed & 0x7FFFFFFFFFFFFFFF)
    return torch.randn(shape, generator=gen, dtype=torch.float32)


class RefreshRule:
    """The ``adaptive<N>`` early refresh: fire when the pixel MAE against the last full frame reaches ``threshold`` on
    any of ``views`` (None = every view measured). Shared by every wrapper so the rule exists once."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, views=None, known: tuple[str, ...] = ()):
        self.threshold = float(threshold)
        if not math.isfinite(self.threshold) or self.threshold < 0:
            raise ValueError(f"refresh threshold must be a finite number >= 0, got {threshold!r}")
        self.views = tuple(views) if views is not None else None
        if self.views is not None and known:
            bad = [v for v in self.views if v not in known]
            if bad:
                raise ValueError(f"refresh views {bad} are not cameras of the policy (known: {list(known)})")

    def fires(self, mae: dict[str, float] | None) -> bool:
        considered = [mae[v] for v in (self.views or tuple(mae)) if v in mae] if mae else []
        return bool(considered) and max(considered) >= self.threshold


class FrameReference:
    """The model-input images of an episode's last full frame, and a new frame's pixel MAE against them per view (None
    before the episode's first full frame): what the adaptive rule reads. A ``CacheController`` keeps one; under the
    batched server each simulator worker keeps its own as well, moved on by the answers (``used_full``), so the MAE is
    measured where the images are and the server never sees them."""

    def __init__(self):
        self.images: dict[str, np.ndarray] | None = None

    def reset(self) -> None:
        self.images = None

    def mae(self, images: dict[str, np.ndarray]) -> dict[str, float] | None:
        if self.images is None:
            return None
        return {v: pixel_mae(images[v], self.images[v]) for v in images if v in self.images}

    def full_frame(self, images: dict[str, np.ndarray]) -> None:
        self.images = images


@dataclass
class Step:
    """One inference between ``CacheController.begin`` and ``finish``: the pre-processed observation, its paired
    noise, whether it is a full frame (``forced``: by the adaptive rule) and its pixel MAE against the reference."""

    prep: Any
    noise: Any
    used_full: bool
    forced: bool
    mae: dict[str, float] | None


class CacheController:
    def __init__(
        self,
        engine: Any,
        mode: CacheMode | str = "full",
        threshold: float = DEFAULT_THRESHOLD,
        views: list[str] | tuple[str, ...] | None = None,
        shadow: bool = False,
    ):
        self.engine = engine
        self.mode = mode if isinstance(mode, CacheMode) else CacheMode.parse(mode)
        self.refresh = RefreshRule(threshold, views, known=tuple(getattr(engine, "views", ()) or ()))
        self.shadow = bool(shadow)
        self._noise_seed = 0
        self.reference = FrameReference()
        self._reset_state()

    def _reset_state(self) -> None:
        self._cache = None
        self.reference.reset()
        self._since_full = 0  # inferences since the last full frame (0 = this one was full)
        self._k = 0

    # ------------------------------------------------------------------------------------------------- protocol
    def reset(self, task: TaskContext) -> None:
        """Episode start: drop the cache (the first frame is always full) and restart the noise stream."""
        self._noise_seed = int(task.noise_seed)
        self._reset_state()

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        """One inference at batch 1: ``begin`` (decide), the engine's prefix (full frames) and denoise, ``finish``.
        The batched server (``sim_eval.runtime.server``) runs the same three phases for many controllers at once."""
        sync = getattr(self.engine, "sync", None)
        with Timer(sync) as total:
            step = self.begin(obs)
            prefix_ms = 0.0
            if step.used_full:
                with Timer(sync) as t_prefix:
                    cache = self.engine.encode_prefix(step.prep)
                prefix_ms = t_prefix.ms
                self.commit(step, cache)
            with Timer(sync) as t_denoise:
                actions = self.engine.denoise(self._cache, step.noise)
        shadow = None
        if self.shadow and not step.used_full:
            shadow = self.engine.denoise(self.engine.encode_prefix(step.prep), step.noise)
        timing = {"infer_ms": total.ms, "prefix_ms": prefix_ms, "denoise_ms": t_denoise.ms}
        return self.finish(step, actions, timing, shadow)

    def begin(self, obs: dict[str, Any]) -> Step:
        """Pre-process ``obs``, draw this inference's paired noise and decide whether it is a full frame. The caller
        then encodes a prefix for a full frame (``commit``) and denoises against ``cache``."""
        prep = self.engine.prepare(obs)
        return self.begin_prepared(prep, self.reference.mae(prep.images_u8))

    def begin_prepared(self, prep: Any, mae: dict[str, float] | None) -> Step:
        """``begin`` for an observation pre-processed elsewhere (a batched server's worker): ``prep`` as the engine's
        ``prepare`` gives it, ``mae`` against the episode's last full frame as a ``FrameReference`` gives it."""
        noise = paired_noise(tuple(self.engine.noise_shape), self._noise_seed, self._k)
        forced = False
        if self._cache is None or self.mode.kind == "full" or self._since_full + 1 >= self.mode.period:
            used_full = True
        elif self.mode.kind == "adaptive":
            forced = used_full = self.refresh.fires(mae)
        else:
            used_full = False
        if not used_full:
            self._since_full += 1
        return Step(prep, noise, used_full, forced, mae)

    def skip(self) -> None:
        """An inference a wrapper answered without the model (``sim_eval.policies.replay``): advance the noise index so
        the next call draws the noise of its position in the episode, as in every other mode."""
        self._k += 1

    @property
    def cache(self) -> Any:
        """The prefix the next cached frame denoises against (the last full frame's)."""
        return self._cache

    def commit(self, step: Step, cache: Any) -> None:
        """A full frame's new prefix: it and the frame's images become the reference of the window it starts."""
        self._cache = cache
        self.reference.full_frame(step.prep.images_u8)
        self._since_full = 0

    def finish(
        self, step: Step, actions: Any, timing: dict[str, float], shadow: Any = None, extra: dict | None = None
    ) -> dict[str, Any]:
        """The policy's answer for ``step``: its actions and the info every record keeps (``timing``: infer_ms,
        prefix_ms, denoise_ms; ``shadow``: the full-prefix actions of a cached frame under the same noise, when
        shadowing; ``extra``: more info keys, e.g. the batched server's own timings)."""
        info: dict[str, Any] = {
            "infer_ms": round(timing["infer_ms"], 3),
            "prefix_ms": round(timing["prefix_ms"], 3),
            "denoise_ms": round(timing["denoise_ms"], 3),
            "used_full": step.used_full,
            "forced_refresh": step.forced,
            "window_pos": self._since_full,
            "infer_index": self._k,
            "pixel_mae": None if step.mae is None else {v: round(m, 4) for v, m in step.mae.items()},
            **(extra or {}),
        }
        if shadow is not None:
            info.update(shadow_metrics(shadow, actions))
        self._k += 1
        return {"actions": np.asarray(actions), "info": info}


def shadow_metrics(fresh: Any, executed: Any) -> dict[str, float]:
    """How far the executed chunk of a cached frame is from what a full frame would have produced with the same
    noise (``fresh``): cosine over the flattened chunk and max |difference|. Changes neither cache nor actions."""
    fresh = np.asarray(fresh, dtype=np.float64).ravel()
    done = np.asarray(executed, dtype=np.float64).ravel()
    denom = float(np.linalg.norm(fresh) * np.linalg.norm(done))
    cos = float(fresh @ done / denom) if denom > 0 else 1.0
    return {"shadow_cos": round(cos, 6), "shadow_max_abs": round(float(np.abs(fresh - done).max()), 6)}

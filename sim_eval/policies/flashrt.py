"""FlashRT adapter: ``flash_rt``'s Pi0.5 torch frontend behind the sim_eval policy protocol (``engine=flashrt``).

FlashRT (PyPI ``flash-rt`` 0.2.0) keeps its own temporal K/V cache: constructed with ``cache_frames=N`` it runs a full
frame whenever its frame counter ``% N == 1`` and a decode-only frame otherwise. This adapter maps our cache modes
onto that: ``full`` -> ``cache_frames=1``; ``cache<N>`` -> ``cache_frames=N``; ``adaptive<N>`` -> ``cache_frames=N``
plus a forced refresh when the pixel MAE against the last full frame reaches the threshold, through
``infer(obs, force_full=True)`` where the installed FlashRT has it, else by resetting the frontend's frame counter so
the next frame runs full (either way a new window of N starts).

FlashRT is imported only here, only when chosen; a missing package or missing compiled kernels raise
``FlashRTUnavailable`` with one line.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np

from sim_eval.policies.base import TaskContext
from sim_eval.policies.cache import RefreshRule, paired_noise, pixel_mae
from sim_eval.policies.cache_mode import DEFAULT_THRESHOLD, CacheMode

FRONTEND_MODULE = "flash_rt.frontends.torch.pi05_rtx"
FRONTEND_CLASS = "Pi05TorchFrontendRtx"
DEFAULT_VIEWS = ("agentview", "wrist")  # FlashRT's buffer order: base image, then wrist image
FLASHRT_ACTION_DIM = 32


class FlashRTUnavailable(RuntimeError):
    """FlashRT (or its compiled CUDA kernels) cannot be used here."""


def load_frontend_class():
    import importlib

    try:
        module = importlib.import_module(FRONTEND_MODULE)
        return getattr(module, FRONTEND_CLASS)
    except (ImportError, OSError, AttributeError) as exc:  # OSError: a compiled kernel library failed to load
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FlashRTUnavailable(
            f"engine=flashrt needs {FRONTEND_MODULE}.{FRONTEND_CLASS} (pip install flash-rt==0.2.0, with its compiled "
            f"CUDA kernels): {first}"
        ) from None


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class FlashRTPolicy:
    def __init__(
        self,
        frontend: Any,
        mode: CacheMode | str = "full",
        threshold: float = DEFAULT_THRESHOLD,
        views: list[str] | tuple[str, ...] | None = None,
        camera_order: tuple[str, ...] = DEFAULT_VIEWS,
        state_in_prompt: bool = False,
        image_size: int = 224,
    ):
        self.frontend = frontend
        self.mode = mode if isinstance(mode, CacheMode) else CacheMode.parse(mode)
        self.camera_order = tuple(camera_order)
        self.refresh = RefreshRule(threshold, views if views is not None else self.camera_order, self.camera_order)
        self.state_in_prompt = bool(state_in_prompt)
        self.image_size = image_size
        self.period = int(getattr(frontend, "_cache_frames", self.mode.period))
        self._has_force_full = _accepts(frontend.infer, "force_full")
        self._has_noise = _accepts(frontend.infer, "noise")
        self._noise_seed = 0
        self._k = 0
        self._frames = 0  # mirror of FlashRT's frame counter (used when the frontend does not expose it)
        self._ref: dict[str, np.ndarray] | None = None
        self._since_full = 0
        self._prompt: str | None = None

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str,
        mode: CacheMode,
        refresh: dict | None = None,
        tokenizer: str | None = None,
        camera_map: dict[str, str] | None = None,
        num_steps: int = 10,
    ) -> FlashRTPolicy:
        from sim_eval.policies.pi05.checkpoint import read_checkpoint_info

        frontend_cls = load_frontend_class()
        info = read_checkpoint_info(checkpoint)
        order = tuple(camera_map) if camera_map else DEFAULT_VIEWS
        try:
            frontend = frontend_cls(
                checkpoint,
                num_views=len(order),
                chunk_size=info.chunk_size,
                num_steps=num_steps,
                cache_frames=1 if mode.kind == "full" else mode.period,
            )
        except (ImportError, OSError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FlashRTUnavailable(
                f"FlashRT could not build its Pi0.5 pipeline for {checkpoint!r}: {first}"
            ) from None
        refresh = refresh or {}
        return cls(
            frontend,
            mode,
            threshold=float(refresh.get("threshold", DEFAULT_THRESHOLD)),
            views=refresh.get("views"),
            camera_order=order,
            state_in_prompt=info.state_in_prompt,
        )

    # -------------------------------------------------------------------------------------------------- protocol
    def reset(self, task: TaskContext) -> None:
        self._noise_seed = int(task.noise_seed)
        self._k = 0
        self._ref = None
        self._since_full = 0
        self._restart_counter()
        self._prompt = task.language
        if not self.state_in_prompt:
            self.frontend.set_prompt(task.language)

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        from sim_eval.policies.pi05.processing import resize_with_pad, to_uint8

        t0 = time.perf_counter()
        images = {
            v: to_uint8(resize_with_pad(np.asarray(obs["images"][v]), self.image_size)) for v in self.camera_order
        }
        mae = None if self._ref is None else {v: pixel_mae(images[v], self._ref[v]) for v in self.camera_order}
        forced = False
        if self.mode.kind == "adaptive" and mae is not None and not self._next_is_full():
            forced = self.refresh.fires(mae)
        kwargs: dict[str, Any] = {}
        if forced:
            if self._has_force_full:
                kwargs["force_full"] = True
            else:
                self._restart_counter()
        if self._has_noise:
            shape = (int(getattr(self.frontend, "chunk_size", 10)), FLASHRT_ACTION_DIM)
            kwargs["noise"] = paired_noise(shape, self._noise_seed, self._k).numpy()
        used_full = forced or self._next_is_full()
        if used_full and self.state_in_prompt:  # the prompt (with state) is part of the prefix: set it per full frame
            self.frontend.set_prompt(str(obs.get("instruction", self._prompt)), np.asarray(obs["state"], np.float32))
        out = self.frontend.infer({"images": [images[v] for v in self.camera_order]}, **kwargs)
        self._frames += 1
        if forced and self._has_force_full:
            self._frames = 1  # a forced full frame opens a new window, as a counter reset would
            self._sync_counter()
        if used_full:
            self._ref = images
            self._since_full = 0
        else:
            self._since_full += 1
        records = getattr(self.frontend, "latency_records", None)
        info = {
            "infer_ms": round((time.perf_counter() - t0) * 1000.0, 3),
            "engine_ms": round(float(records[-1]), 3) if records else None,
            "prefix_ms": None,  # FlashRT reports one latency per call, not split
            "denoise_ms": None,
            "used_full": used_full,
            "forced_refresh": forced,
            "window_pos": self._since_full,
            "infer_index": self._k,
            "pixel_mae": None if mae is None else {v: round(m, 4) for v, m in mae.items()},
        }
        self._k += 1
        return {"actions": np.asarray(out["actions"], dtype=np.float32), "info": info}

    # ------------------------------------------------------------------------------------------- frame counter
    def _counter(self) -> int:
        return int(getattr(self.frontend, "_frame_count", self._frames))

    def _next_is_full(self) -> bool:
        # FlashRT's rule: the frame that makes the counter == 1 (mod cache_frames) runs full
        return self.period <= 1 or (self._counter() + 1) % self.period == 1

    def _restart_counter(self) -> None:
        self._frames = 0
        if hasattr(self.frontend, "_frame_count"):
            self.frontend._frame_count = 0

    def _sync_counter(self) -> None:
        if hasattr(self.frontend, "_frame_count"):
            self.frontend._frame_count = self._frames

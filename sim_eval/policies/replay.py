"""``ReplayPolicy``: the zero-compute arm ``replay<N>``.

Every N-th inference calls the wrapped policy (a full frame); the N-1 inferences between answer without calling the
model at all: they return the last computed chunk shifted by the actions the rollout already executed of it, so the
robot plays on the plan it has. The rollout executes ``replan_steps`` actions of whatever chunk ``infer`` returns,
hence the j-th inference of a window returns ``chunk[j * replan_steps:]``. This is the cheapest alternative a cached
mode has to beat: the embedded model (like openpi's ``pi05_libero``) conditions on images and instruction only, so a
cached (decode-only) frame re-samples the last full frame's plan from its start while the robot already executed
part of it; replaying the rest of that plan costs nothing.

Replay frames are recorded as their own kind: ``replayed`` true, ``used_full`` false, ``infer_ms`` / ``prefix_ms``
/ ``denoise_ms`` 0 (the model was not called; the copy is microseconds). The wrapped policy's noise index is
advanced on each (``skip``, when it has one) so the k-th inference of an episode draws noise ``(seed, k)`` in every
mode, and full frames of ``replay<N>`` pair with ``full``'s as ``cache<N>``'s do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim_eval.policies.base import TaskContext
from sim_eval.policies.cache_mode import CacheMode


class ReplayPolicy:
    def __init__(self, policy: Any, mode: CacheMode | str, replan_steps: int, chunk: int):
        self.policy = policy
        self.mode = mode if isinstance(mode, CacheMode) else CacheMode.parse(mode)
        if self.mode.kind != "replay":
            raise ValueError(f"ReplayPolicy runs replay<N> modes, got {self.mode.name}")
        self.replan_steps = int(replan_steps)
        self.mode.check_chunk(int(chunk), self.replan_steps)
        self._reset_state()

    def _reset_state(self) -> None:
        self._chunk: np.ndarray | None = None
        self._since_full = 0
        self._k = 0

    @property
    def engine(self) -> Any:
        """The wrapped policy's engine (device and memory reports read it)."""
        return getattr(self.policy, "engine", None)

    def reset(self, task: TaskContext) -> None:
        self.policy.reset(task)
        self._reset_state()

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        if self._chunk is None or self._since_full + 1 >= self.mode.period:
            result = self.policy.infer(obs)
            self._chunk = np.asarray(result["actions"])
            self._since_full = 0
            info = {**result["info"], "infer_index": self._k, "window_pos": 0}
        else:
            self._since_full += 1
            skip = getattr(self.policy, "skip", None)
            if skip is not None:
                skip()
            offset = self._since_full * self.replan_steps
            if offset + self.replan_steps > len(self._chunk):  # check_chunk makes this unreachable for a whole chunk
                raise RuntimeError(f"{self.mode.name}: the stored chunk of {len(self._chunk)} actions is spent")
            result = {"actions": self._chunk[offset:].copy(), "info": {}}
            info = {
                "infer_ms": 0.0,
                "prefix_ms": 0.0,
                "denoise_ms": 0.0,
                "used_full": False,
                "replayed": True,
                "forced_refresh": False,
                "window_pos": self._since_full,
                "infer_index": self._k,
                "pixel_mae": None,
            }
        self._k += 1
        return {"actions": result["actions"], "info": info}

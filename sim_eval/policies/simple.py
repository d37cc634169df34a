"""Policies without a model: baselines and pipeline checks that speak the same protocol as learned ones."""

from __future__ import annotations

from typing import Any

import numpy as np

from sim_eval.policies.base import ACTION_DIM, TaskContext, Timer


class ConstantPolicy:
    """Repeats one 7-D action in chunks of ``chunk``. With the default (zero motion, gripper open) it holds the arm
    still: the floor any learned policy must beat, and a cheap end-to-end check of env, rollout and records."""

    def __init__(self, action: list[float] | None = None, chunk: int = 10):
        self._action = np.asarray(action if action is not None else [0.0] * 6 + [-1.0], dtype=np.float32)
        if self._action.shape != (ACTION_DIM,):
            raise ValueError(f"ConstantPolicy action must have {ACTION_DIM} values, got {self._action.shape}")
        self._chunk = int(chunk)
        self._calls = 0

    def reset(self, task: TaskContext) -> None:
        self._calls = 0

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        with Timer() as timer:
            actions = np.tile(self._action, (self._chunk, 1))
        self._calls += 1
        return {"actions": actions, "info": {"infer_ms": timer.ms, "call": self._calls}}

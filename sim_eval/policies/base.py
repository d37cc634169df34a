"""The policy protocol every sim_eval policy speaks.

A policy is anything with ``reset(task)`` and ``infer(obs) -> {"actions", "info"}``. Behaviour such as prefix-cache
reuse is added by wrapping a policy (see ``sim_eval.policies.cache``), never by branching inside the rollout loop.

Observation (what ``infer`` receives, produced by ``sim_eval.envs.LiberoEnv``):
    ``images``: ``{view_name: uint8 array (H, W, 3)}``, upright (LIBERO's 180-degree flip already undone),
                views are ``agentview`` and ``wrist``;
    ``state``: float32 array (8,) = eef position (3) + eef axis-angle (3) + gripper qpos (2);
    ``instruction``: the task's language instruction.

Result (what ``infer`` returns):
    ``actions``: float array (chunk, 7) of delta end-effector actions, gripper last (-1 open, +1 closed);
    ``info``: JSON-serialisable dict; must hold ``infer_ms`` (wall time of the call in milliseconds). Whatever else a
              policy puts there (``used_full``, ``forced_refresh``, ``pixel_mae``...) is kept per inference in the
              episode record.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

ACTION_DIM = 7
STATE_DIM = 8
VIEWS = ("agentview", "wrist")


@dataclass(frozen=True)
class TaskContext:
    """What a policy learns at episode start. ``noise_seed`` is derived from the episode key, so runs that differ only
    in the policy's cache mode draw identical flow-matching noise for the k-th inference of an episode."""

    suite: str
    task_id: int
    language: str
    episode_index: int
    noise_seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Policy(Protocol):
    def reset(self, task: TaskContext) -> None: ...

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]: ...


def check_infer_result(result: dict[str, Any]) -> np.ndarray:
    """Validate a policy's ``infer`` result and return its actions as a float64 (chunk, 7) array."""
    if not isinstance(result, dict) or "actions" not in result or "info" not in result:
        raise TypeError(f"policy.infer must return a dict with 'actions' and 'info', got {type(result).__name__}")
    actions = np.asarray(result["actions"], dtype=np.float64)
    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or actions.shape[0] < 1:
        raise ValueError(f"policy actions must have shape (chunk>=1, {ACTION_DIM}), got {actions.shape}")
    if not np.all(np.isfinite(actions)):
        raise ValueError("policy actions contain NaN or inf")
    if "infer_ms" not in result["info"]:
        raise ValueError("policy info must report 'infer_ms'")
    return actions


class Timer:
    """Wall-clock milliseconds of a block; ``sync`` (e.g. ``torch.cuda.synchronize``) runs before both readings so
    GPU work is counted where it happens."""

    def __init__(self, sync=None):
        self._sync = sync
        self.ms = 0.0

    def __enter__(self) -> Timer:
        if self._sync is not None:
            self._sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self._sync is not None:
            self._sync()
        self.ms = (time.perf_counter() - self._t0) * 1000.0

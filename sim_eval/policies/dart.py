"""``DartNoise``: DART-style recovery data. Wraps a one-action-per-call expert; now and then the action it returns for
execution is perturbed, while the expert's clean action stays available as the label (``last_label``).

A learned policy that only ever saw the expert's own states has never seen a state slightly off the expert's path, so
its first small error compounds. Executing perturbed actions puts the robot into such states, and the expert (which
re-plans from the true state every step) shows how to recover from each of them; the recording keeps the clean action.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim_eval.policies.base import TaskContext, check_infer_result

ARM_DIMS = 6  # delta position + delta rotation; the gripper command (last) is never perturbed


class DartNoise:
    """With probability ``prob`` per call, add N(0, ``sigma``^2) to the arm dims of the action (clipped to the action
    range [-1, 1]). ``seed`` plus the episode key seed the noise, so a recording is reproducible."""

    def __init__(self, policy: Any, prob: float = 0.3, sigma: float = 0.3, seed: int = 0):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"DART prob={prob}: allowed are 0..1")
        if sigma < 0:
            raise ValueError(f"DART sigma={sigma}: must be >= 0")
        self.policy, self.prob, self.sigma, self.seed = policy, float(prob), float(sigma), int(seed)
        self._rng = np.random.default_rng(self.seed)
        self.last_label: np.ndarray | None = None
        self.last_perturbed = False

    def reset(self, task: TaskContext) -> None:
        self._rng = np.random.default_rng([self.seed, int(task.noise_seed) & 0xFFFFFFFF])
        self.last_label, self.last_perturbed = None, False
        self.policy.reset(task)

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        result = self.policy.infer(obs)
        actions = check_infer_result(result)
        if actions.shape[0] != 1:
            raise ValueError(f"DartNoise wraps one-action-per-call experts; got a chunk of {actions.shape[0]}")
        clean = actions[0].astype(np.float64)
        executed = clean.copy()
        self.last_perturbed = bool(self._rng.random() < self.prob)
        if self.last_perturbed:
            executed[:ARM_DIMS] = np.clip(clean[:ARM_DIMS] + self._rng.normal(0.0, self.sigma, ARM_DIMS), -1.0, 1.0)
        self.last_label = clean
        info = {**result.get("info", {}), "dart_perturbed": self.last_perturbed}
        return {"actions": executed[None, :], "info": info}

"""DART noise: the executed action is perturbed now and then, the label is always the expert's clean action."""

from __future__ import annotations

import numpy as np
import pytest

from sim_eval.policies.base import TaskContext
from sim_eval.policies.dart import DartNoise


class _Expert:
    """One action per call, a different one each call (so labels can be told apart)."""

    def __init__(self):
        self.calls = 0

    def reset(self, task):
        self.calls = 0

    def infer(self, obs):
        self.calls += 1
        action = np.array([0.1, -0.2, 0.3, 0.0, 0.05, -0.05, 1.0]) * (1 + 0.001 * self.calls)
        return {"actions": action[None], "info": {"infer_ms": 0.0}}


def _run(seed: int, noise_seed: int, prob: float = 0.3, sigma: float = 0.3, n: int = 400):
    dart = DartNoise(_Expert(), prob=prob, sigma=sigma, seed=seed)
    dart.reset(TaskContext("libero_object", 0, "task", 0, noise_seed))
    executed, labels, perturbed = [], [], []
    for _ in range(n):
        result = dart.infer({})
        executed.append(result["actions"][0])
        labels.append(dart.last_label)
        perturbed.append(dart.last_perturbed)
        assert result["info"]["dart_perturbed"] == dart.last_perturbed
    return np.array(executed), np.array(labels), np.array(perturbed)


def test_labels_are_clean_and_a_fraction_of_steps_is_perturbed():
    executed, labels, perturbed = _run(seed=0, noise_seed=11)
    clean = np.array([np.array([0.1, -0.2, 0.3, 0.0, 0.05, -0.05, 1.0]) * (1 + 0.001 * k) for k in range(1, 401)])
    np.testing.assert_allclose(labels, clean)
    assert 0.24 < perturbed.mean() < 0.36  # prob 0.3 over 400 steps
    np.testing.assert_array_equal(executed[~perturbed], labels[~perturbed])
    np.testing.assert_array_equal(executed[:, 6], labels[:, 6])  # the gripper is never perturbed
    delta = executed[perturbed, :6] - labels[perturbed, :6]
    assert 0.2 < delta.std() < 0.4 and np.all(np.abs(executed[:, :6]) <= 1.0)  # clipped to the action range


def test_noise_is_reproducible_per_episode_and_differs_between_episodes():
    a, _, pa = _run(seed=0, noise_seed=11)
    b, _, pb = _run(seed=0, noise_seed=11)
    c, _, pc = _run(seed=0, noise_seed=12)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa, pc)


def test_zero_probability_executes_the_expert_and_bad_settings_are_refused():
    executed, labels, perturbed = _run(seed=0, noise_seed=1, prob=0.0)
    np.testing.assert_array_equal(executed, labels)
    assert not perturbed.any()
    with pytest.raises(ValueError, match="prob=1.5"):
        DartNoise(_Expert(), prob=1.5)
    with pytest.raises(ValueError, match="sigma=-1"):
        DartNoise(_Expert(), sigma=-1)

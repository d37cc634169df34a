"""A sample of LIBERO-PRO's perturbed suites in the real simulator: each resets onto its own init states, steps, and
LIBERO's success check runs (one per dimension that the package ships whole, on three base suites). The sweep of
every registered benchmark is scripts/smoke_benchmarks.py (docs/benchmarks.md)."""

from __future__ import annotations

import numpy as np
import pytest

from sim_eval.envs import benchmarks
from sim_eval.envs.libero_env import LiberoEnv

pytestmark = pytest.mark.sim


@pytest.mark.parametrize(
    ("suite", "task_id"),
    [("libero_spatial_swap", 1), ("libero_goal_lan", 2), ("libero_10_with_mug", 0)],
)
def test_perturbed_suite_resets_steps_and_checks_success(suite, task_id):
    env = LiberoEnv(suite, task_id, max_steps=4, render_size=64, model_image_size=64, num_wait_steps=2)
    try:
        bench = benchmarks.get(suite)
        assert env.n_init_states == bench.init_states  # the package's init states, as the table says
        obs, info = env.reset(options={"init_state_index": 3})
        # the episode starts from the suite's own init state 3 (the state is stored before the wait steps)
        np.testing.assert_allclose(env.start_state[1:], env.init_states[3][1:], atol=1e-9)
        task = benchmarks.quiet_suite(suite).get_task(task_id)
        assert obs["instruction"] == benchmarks.task_instruction(suite, task)
        assert obs["images"]["agentview"].shape == (64, 64, 3) and obs["images"]["agentview"].std() > 0
        for _ in range(4):
            obs, _, terminated, truncated, info = env.step(np.asarray(env.wait_action))
            assert isinstance(info["success"], bool) and terminated == info["success"]  # LIBERO's check ran
        assert truncated and info["steps"] == 4
    finally:
        env.close()


def test_a_reworded_suite_gives_the_reworded_instruction():
    """``_lan`` rewords only inside the task file: the policy must get those words, not the base task's name."""
    suite = benchmarks.quiet_suite("libero_goal_lan")
    task = suite.get_task(2)
    base = benchmarks.quiet_suite("libero_goal").get_task(2)
    assert benchmarks.task_instruction("libero_goal_lan", task) != base.language

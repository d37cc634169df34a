"""Processes that die (``os._exit``, as a segfault or an OOM kill would end them), for the worker-death tests: a
policy that dies in one chosen episode (its index comes from SIM_EVAL_TEST_EXIT_EPISODE, which spawned workers
inherit), and an episode runner that dies while closing."""

from __future__ import annotations

import os

from policies.simple import ConstantPolicy


class ExitingPolicy(ConstantPolicy):
    def reset(self, task):
        super().reset(task)
        if task.episode_index == int(os.environ["SIM_EVAL_TEST_EXIT_EPISODE"]):
            os._exit(3)


class RunnerDyingOnClose:
    """An episode runner for ``sim_eval.workers``: answers every episode, then its process dies while closing (after
    it has taken its stop sentinel)."""

    def __call__(self, task_id: int, episode_index: int) -> dict:
        return {"task_id": task_id, "episode_index": episode_index}

    def close(self) -> None:
        os._exit(4)

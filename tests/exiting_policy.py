"""A policy whose process dies (``os._exit``, as a segfault or an OOM kill would end it) in one chosen episode; for
the worker-death test. The episode index comes from SIM_EVAL_TEST_EXIT_EPISODE, which spawned workers inherit."""

from __future__ import annotations

import os

from policies.simple import ConstantPolicy


class ExitingPolicy(ConstantPolicy):
    def reset(self, task):
        super().reset(task)
        if task.episode_index == int(os.environ["SIM_EVAL_TEST_EXIT_EPISODE"]):
            os._exit(3)

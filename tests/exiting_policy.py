"""Processes that die (``os._exit``, as a segfault or an OOM kill would end them), for the worker-death tests: a
policy that dies in one chosen episode (its index comes from SIM_EVAL_TEST_EXIT_EPISODE, which spawned workers
inherit), an episode runner that dies while closing, one that cannot start, and one that sleeps through its episode
(for the tests that stop its parent)."""

from __future__ import annotations

import os

from sim_eval.policies.simple import ConstantPolicy


class ExitingPolicy(ConstantPolicy):
    def reset(self, task):
        super().reset(task)
        if task.episode_index == int(os.environ["SIM_EVAL_TEST_EXIT_EPISODE"]):
            os._exit(3)


class RunnerDyingOnClose:
    """An episode runner for ``sim_eval.runtime.workers``: answers every episode, then its process dies while closing
    (after it has taken its stop sentinel)."""

    def __call__(self, task_id: int, episode_index: int) -> dict:
        return {"task_id": task_id, "episode_index": episode_index}

    def close(self) -> None:
        os._exit(4)


class RunnerFailingToStart:
    """An episode runner whose construction fails, as a policy that cannot be built does."""

    def __init__(self):
        raise ValueError("tokenizer '/no/tok' not found\n(a second line the one-line error leaves out)")


class SleepingRunner:
    """An episode runner that writes its pid to ``pid_file`` and then takes a minute per episode (a long rollout)."""

    def __init__(self, pid_file: str):
        self.pid_file = pid_file

    def __call__(self, task_id: int, episode_index: int) -> dict:
        with open(self.pid_file, "w") as handle:
            handle.write(str(os.getpid()))
        import time

        time.sleep(60)
        return {"task_id": task_id, "episode_index": episode_index}

    def close(self) -> None:
        pass


class ThreadEnvRunner:
    """An episode runner that answers with the thread settings its process started with."""

    def __call__(self, task_id: int, episode_index: int) -> dict:
        names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        return {"task_id": task_id, "episode_index": episode_index, "env": {n: os.environ.get(n) for n in names}}

    def close(self) -> None:
        pass

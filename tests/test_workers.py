"""``sim_eval.workers.run_in_workers``: spawned episode workers, the ways they can end, and no hang for any of them
(the simulator-backed cases are in test_rollout.py and test_record.py)."""

from __future__ import annotations

import threading
from pathlib import Path

from exiting_policy import RunnerDyingOnClose

from sim_eval.workers import run_in_workers


def test_a_worker_dying_after_its_last_episode_ends_the_run(monkeypatch):
    """A worker that dies while closing has already taken its stop sentinel: no replacement is started (it would wait
    for a sentinel that no longer exists), no episode is reported as lost, and the run ends."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))  # spawned workers import exiting_policy
    results, lost = [], []

    def died(item, message):
        lost.append((item, message))
        return {"lost": item}

    def consume():
        results.extend(run_in_workers(RunnerDyingOnClose, (), [(0, 0), (0, 1), (1, 0)], 1, died))

    runner = threading.Thread(target=consume, daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "run_in_workers hung after its worker died while closing"
    assert sorted((r["task_id"], r["episode_index"]) for r in results) == [(0, 0), (0, 1), (1, 0)]
    assert lost == []

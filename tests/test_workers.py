"""``sim_eval.runtime.workers.run_in_workers``: spawned episode workers, the ways they can end, and no hang for any of
them (the simulator-backed cases are in test_rollout.py and test_record.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli, sigint_default
from exiting_policy import RunnerDyingOnClose, RunnerFailingToStart, ThreadEnvRunner

from sim_eval.runtime.workers import WorkerStartError, run_in_workers


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


def test_workers_start_with_one_thread_each_unless_the_user_chose(monkeypatch):
    """N simulators on N cores: a thread pool per worker only oversubscribes them (load 180 on a 16-core node)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    results = list(run_in_workers(ThreadEnvRunner, (), [(0, 0), (0, 1)], 2, lambda item, message: {}))
    assert [r["env"] for r in results] == [
        {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "1"}
    ] * 2
    assert "OMP_NUM_THREADS" not in os.environ  # the parent's environment is as it was


def test_a_worker_that_cannot_build_its_runner_is_one_line(monkeypatch):
    """9: the run stops with the error's first line (the traceback rides along), not 60 lines of nested ones."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    with pytest.raises(WorkerStartError) as caught:
        list(run_in_workers(RunnerFailingToStart, (), [(0, 0)], 1, lambda item, message: {}))
    assert str(caught.value) == "ValueError: tokenizer '/no/tok' not found"
    assert "Traceback" in caught.value.traceback


def test_unbuildable_policy_in_workers_is_one_line_on_the_command_line(tmp_path):
    result = run_cli(
        ["policy=pi05_tiny", "policy.tokenizer=/no/tok", "eval.num_workers=1", "eval.tasks=[0]",
         "eval.episodes_per_task=1", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sim_eval: error: policy: ") and "/no/tok" in lines[0], lines
    assert not (tmp_path / "run").exists()


PARENT = """
import sys
sys.path.insert(0, {tests!r})
from exiting_policy import SleepingRunner
from sim_eval.runtime.workers import run_in_workers
try:
    list(run_in_workers(SleepingRunner, ({pid_file!r},), [(0, 0)], 1, lambda item, message: {{}}))
except KeyboardInterrupt:
    print("parent interrupted", file=sys.stderr)
"""


def _start_parent(tmp_path):
    pid_file = tmp_path / "worker.pid"
    script = PARENT.format(tests=str(Path(__file__).resolve().parent), pid_file=str(pid_file))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=sigint_default)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (pid_file.exists() and pid_file.read_text()):
        time.sleep(0.1)
    return proc, int(pid_file.read_text())


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.time() + seconds
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.1)


def test_workers_stop_when_the_parent_is_killed(tmp_path):
    """9: after ``kill -9`` of the parent a worker in the middle of an episode exits at once (it used to simulate on
    to the end of its episode, then die with broken-pipe tracebacks)."""
    proc, worker = _start_parent(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        assert _gone_within(worker, 5.0), "the worker outlived its parent"
    finally:
        if not _gone_within(worker, 0):
            os.kill(worker, signal.SIGKILL)
    assert "Traceback" not in proc.stderr.read()


def test_ctrl_c_stops_parent_and_workers_without_worker_tracebacks(tmp_path):
    """Ctrl-C reaches the whole process group: the parent stops its workers; they print nothing."""
    proc, worker = _start_parent(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=10)
    assert _gone_within(worker, 5.0)
    err = proc.stderr.read()
    assert "parent interrupted" in err and "Traceback" not in err, err

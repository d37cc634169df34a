"""10: a simulator reset neither swallows Ctrl-C nor loops forever on a real error (LIBERO's ``ControlEnv.reset``
retries in a loop whose ``finally: continue`` did both)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import FAST_SIM, REPO, sigint_default
from robosuite.utils.errors import RandomizationError

from sim_eval.envs.libero_env import RESET_ATTEMPTS, reset_simulator


class _Sim:
    def __init__(self, failures: list[BaseException | None]):
        self.failures, self.calls = list(failures), 0

    def reset(self):
        self.calls += 1
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        return {"obs": self.calls}


class _Control:
    def __init__(self, failures):
        self.env = _Sim(failures)


def test_failed_placements_are_retried_a_bounded_number_of_times():
    control = _Control([RandomizationError("no fit"), RandomizationError("no fit")])
    assert reset_simulator(control) == {"obs": 3}
    with pytest.raises(RuntimeError, match=f"no object placement found in {RESET_ATTEMPTS} attempts"):
        reset_simulator(_Control([RandomizationError("no fit")] * RESET_ATTEMPTS))


def test_a_real_reset_error_propagates_at_once():
    control = _Control([ValueError("broken scene")])
    with pytest.raises(ValueError, match="broken scene"):
        reset_simulator(control)
    assert control.env.calls == 1


SLOW_RESET = """
import sys, time
from sim_eval.envs.libero_env import LiberoEnv
env = LiberoEnv("libero_object", 0, max_steps=8, render_size=64, model_image_size=64, num_wait_steps=2)
real = env._env.env.reset
def slow_reset():
    print("resetting", flush=True)
    time.sleep(30)  # a reset that takes long: Ctrl-C must end it
    return real()
env._env.env.reset = slow_reset
env.reset(options={"init_state_index": 0})
print("reset finished", flush=True)
"""


def _interrupt(proc: subprocess.Popen, timeout: float) -> float:
    """Send SIGINT and wait for the process to end; seconds it took."""
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=timeout)
    return time.perf_counter() - sent


@pytest.mark.sim
def test_ctrl_c_during_a_libero_reset_ends_the_process_within_2_s():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_RESET], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_default,
    )  # fmt: skip
    try:
        while (line := proc.stdout.readline()) and line.strip() != "resetting":  # LIBERO prints [info] lines first
            pass
        assert line.strip() == "resetting", proc.stderr.read()[-3000:]
        elapsed = _interrupt(proc, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "reset finished" not in proc.stdout.read()
    assert "KeyboardInterrupt" in proc.stderr.read()
    assert elapsed < 2.0


@pytest.mark.sim
def test_ctrl_c_ends_a_run_with_one_line_and_no_failure_recorded(tmp_path):
    """The CLI's answer to Ctrl-C: one line saying how many episodes are recorded and how to resume, then the end by
    SIGINT that a shell reads as 130; the episode in flight is not recorded, so nothing counts it as a failure."""
    args = ["policy=constant", "suite=libero_object", "eval.tasks=[1]", "eval.episodes_per_task=3", *FAST_SIM]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim_eval", *args, f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default,
    )  # fmt: skip
    try:
        log = tmp_path / "sim_eval.log"
        deadline = time.time() + 300
        while time.time() < deadline and not (log.exists() and "episodes to run" in log.read_text(errors="ignore")):
            time.sleep(0.2)
        time.sleep(1.0)  # into the first episode's simulator start or reset
        elapsed = _interrupt(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = [line for line in proc.stderr.read().replace("\r", "\n").splitlines() if line.startswith("sim_eval")]
    assert proc.returncode == -signal.SIGINT, err
    assert len(err) == 1 and err[0].startswith("sim_eval: interrupted: ") and f"hydra.run.dir={tmp_path}" in err[0]
    records = (tmp_path / "episodes.jsonl").read_text().splitlines() if (tmp_path / "episodes.jsonl").exists() else []
    assert all('"error":null' in line for line in records)
    assert elapsed < 10.0

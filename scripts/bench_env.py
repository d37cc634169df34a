"""Env throughput and rollout-loop overhead on this machine's CPU.

Prints steps/s of raw LIBERO stepping (LIBERO's ControlEnv, with and without camera rendering) and of the same steps
driven by ``sim_eval.runtime.rollout.run_episode`` with a zero-cost policy, and the loop's overhead over the raw
step+render time spent inside that same episode.

    MUJOCO_GL=egl python scripts/bench_env.py --steps 200 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from sim_eval.envs.libero_env import LiberoEnv  # noqa: E402
from sim_eval.policies.simple import ConstantPolicy  # noqa: E402
from sim_eval.runtime.rollout import run_episode  # noqa: E402


def raw_steps_per_s(env: LiberoEnv, steps: int) -> float:
    """LIBERO's own step (physics + observables + camera renders when enabled), nothing of ours."""
    env.reset(options={"init_state_index": 0})
    action = np.zeros(7)
    started = time.perf_counter()
    for _ in range(steps):
        env._env.step(action)
    return steps / (time.perf_counter() - started)


def loop_overhead(env: LiberoEnv, steps: int, lag_mae: int) -> tuple[float, float]:
    """Steps/s of run_episode (zero-cost policy) and its overhead over the raw LIBERO steps inside the same run.

    Timing LIBERO's own step calls inside the episode, rather than comparing against a separate raw run, keeps the
    comparison exact on a machine whose load varies between runs."""
    inner, timed = env._env.step, {"step_s": 0.0, "reset_s": 0.0, "reset_step_s": 0.0}

    def clocked_step(action):
        started = time.perf_counter()
        try:
            return inner(action)
        finally:
            timed["step_s"] += time.perf_counter() - started

    outer_reset = env.reset

    def clocked_reset(**kwargs):
        before, started = timed["step_s"], time.perf_counter()
        try:
            return outer_reset(**kwargs)
        finally:
            timed["reset_s"] += time.perf_counter() - started
            timed["reset_step_s"] += timed["step_s"] - before

    env._env.step, env.reset = clocked_step, clocked_reset
    try:
        record = run_episode(
            env,
            ConstantPolicy(chunk=10),
            suite=env.suite,
            task_id=env.task_id,
            episode_index=0,
            replan_steps=5,
            lag_mae=lag_mae,
        )
    finally:
        env._env.step, env.reset = inner, outer_reset
    assert record["error"] is None and record["steps"] == steps, record["error"]
    policy_s = sum(inf["infer_ms"] for inf in record["inferences"]) / 1000
    loop_s = record["wall_s"] - timed["reset_s"] - policy_s
    raw_s = timed["step_s"] - timed["reset_step_s"]
    return steps / loop_s, loop_s / raw_s - 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--render-size", type=int, default=256)
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"cpu: {cpu}, {os.cpu_count()} cores, MUJOCO_GL={os.environ['MUJOCO_GL']}")
    for cameras in (False, True):
        env = LiberoEnv(args.suite, args.task, max_steps=args.steps, render_size=args.render_size, cameras=cameras)
        raw = [raw_steps_per_s(env, args.steps) for _ in range(args.repeats)]
        label = f"cameras={'on ' + str(args.render_size) + 'px' if cameras else 'off'}"
        runs = ", ".join(f"{r:.1f}" for r in raw)
        print(f"{label}: raw LIBERO step  {statistics.median(raw):7.1f} steps/s  (runs: {runs})")
        if cameras:
            for lag in (0, 3):
                results = [loop_overhead(env, args.steps, lag) for _ in range(args.repeats)]
                rate = statistics.median(r for r, _ in results)
                overhead = statistics.median(o for _, o in results)
                each = ", ".join(f"{o:+.2%}" for _, o in results)
                print(
                    f"{label}: run_episode lag_mae={lag} {rate:7.1f} steps/s, loop overhead over the raw steps "
                    f"inside it: median {overhead:+.2%} (runs: {each})"
                )
        env.close()


if __name__ == "__main__":
    main()

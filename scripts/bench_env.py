"""Env throughput and rollout-loop overhead on this machine's CPU.

Prints steps/s of raw LIBERO stepping (LIBERO's ControlEnv, with and without camera rendering) and of the same steps
driven by ``sim_eval.rollout.run_episode`` with a zero-cost policy, and the loop's overhead over raw step+render.

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

from policies.simple import ConstantPolicy  # noqa: E402
from sim_eval.envs.libero_env import LiberoEnv  # noqa: E402
from sim_eval.rollout import run_episode  # noqa: E402


def raw_steps_per_s(env: LiberoEnv, steps: int) -> float:
    """LIBERO's own step (physics + observables + camera renders when enabled), nothing of ours."""
    env.reset(options={"init_state_index": 0})
    action = np.zeros(7)
    started = time.perf_counter()
    for _ in range(steps):
        env._env.step(action)
    return steps / (time.perf_counter() - started)


def loop_steps_per_s(env: LiberoEnv, steps: int, lag_mae: int) -> float:
    """run_episode over ``steps`` control steps, excluding the reset it performs (timed separately)."""
    started = time.perf_counter()
    env.reset(options={"init_state_index": 0})
    reset_s = time.perf_counter() - started
    record = run_episode(
        env,
        ConstantPolicy(chunk=10),
        suite=env.suite,
        task_id=env.task_id,
        episode_index=0,
        replan_steps=5,
        lag_mae=lag_mae,
    )
    assert record["error"] is None and record["steps"] == steps, record["error"]
    policy_s = sum(inf["infer_ms"] for inf in record["inferences"]) / 1000
    return steps / (record["wall_s"] - reset_s - policy_s)


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
                loop = [loop_steps_per_s(env, args.steps, lag) for _ in range(args.repeats)]
                overhead = statistics.median(raw) / statistics.median(loop) - 1
                print(
                    f"{label}: run_episode lag_mae={lag} {statistics.median(loop):7.1f} steps/s  "
                    f"(runs: {', '.join(f'{r:.1f}' for r in loop)}), loop overhead {overhead:+.1%}"
                )
        env.close()


if __name__ == "__main__":
    main()

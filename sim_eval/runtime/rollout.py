"""One episode: an env and a policy talking through the protocol, nothing global.

``run_episode`` returns the episode record (see ``sim_eval.records.episodes``). It owns no logger, file or progress
bar, so the same function serves the in-process runner, spawned workers and the demonstration recorder. A policy that
raises ends the episode as an ``error`` record with its traceback; the caller decides what to do next.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from sim_eval.envs.interrupts import reraise_if_interrupt
from sim_eval.policies.base import TaskContext, check_infer_result
from sim_eval.policies.cache import pixel_mae
from sim_eval.records.episodes import episode_key, utc_now

# Called after every env step with (obs before the step, executed action, obs after, info); for videos and recorders.
StepObserver = Callable[[dict[str, Any], np.ndarray, dict[str, Any], dict[str, Any]], None]


def noise_seed(base_seed: int, suite: str, task_id: int, episode_index: int) -> int:
    """A stable 63-bit seed per episode key: runs that differ only in the policy's cache mode share it."""
    digest = hashlib.sha256(f"{base_seed}/{episode_key(suite, task_id, episode_index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _compact(value: Any) -> Any:
    """JSON-friendly, short: numpy scalars to Python, floats rounded to what a reader of latencies and MAEs needs."""
    if isinstance(value, dict):
        return {str(k): _compact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_compact(v) for v in value]
    if isinstance(value, np.ndarray):
        return _compact(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer | int):
        return int(value)
    if isinstance(value, np.floating | float):
        return round(float(value), 5) if np.isfinite(value) else None
    return value


class LagMAE:
    """Pixel MAE (max over views) of each inference's input images against those of the 1..N previous inferences.

    In a ``full`` run this is what an ``adaptive`` controller would have measured at each position of its reuse
    window, so a threshold can be calibrated from records without extra simulation."""

    def __init__(self, depth: int):
        self._history: deque[dict[str, np.ndarray]] = deque(maxlen=depth)

    def __call__(self, images: dict[str, np.ndarray]) -> list[float]:
        lags = [max(pixel_mae(images[v], past[v]) for v in images) for past in reversed(self._history)]
        self._history.append({view: image.copy() for view, image in images.items()})
        return lags


def mechanism_fields(obs: dict[str, Any], actions: np.ndarray, replan_steps: int) -> dict[str, Any]:
    """What the mechanism analysis (``sim_eval.analysis.mechanism``) reads per inference, kept small: the actions
    of the chunk the rollout will execute (the first ``replan_steps``, 4 decimals: ~35 numbers at replan 5) and,
    from the 8-D state the policy was given, the end-effector height and the gripper opening (finger joint 0 minus
    finger joint 1, metres) from which the task phase is read."""
    fields: dict[str, Any] = {"executed": np.round(np.asarray(actions[:replan_steps], dtype=np.float64), 4).tolist()}
    state = obs.get("state")
    if state is not None and len(state) >= 8:
        fields["eef_z"] = round(float(state[2]), 4)
        fields["grip"] = round(float(state[6]) - float(state[7]), 4)
    return fields


def _time_split(env, policy_s: float, control_s: float) -> dict[str, float]:
    """Where the control loop's wall time went: the env's own split (physics, render, observe) when it keeps one, the
    policy's calls (inference plus any wait for the GPU), and the rest (the loop, observers such as videos)."""
    split = dict(getattr(env, "timing", {}))
    split["policy_s"] = policy_s
    split["other_s"] = max(control_s - sum(split.values()), 0.0)
    return {k: round(v, 3) for k, v in split.items()}


def run_episode(
    env,
    policy,
    *,
    suite: str,
    task_id: int,
    episode_index: int,
    replan_steps: int,
    seed: int = 0,
    lag_mae: int = 0,
    meta: dict[str, Any] | None = None,
    observer: StepObserver | None = None,
    placement_seed: int | None = None,
    held_out_tolerance: float | None = None,
    render_policy_frames_only: bool = False,
) -> dict[str, Any]:
    """Run one episode from init state ``episode_index`` and return its record. With ``placement_seed`` the episode
    starts instead from the layout LIBERO's placement sampler draws under that seed (demonstrations: never an
    evaluation init state: with ``held_out_tolerance`` the env refuses a layout that close to one); ``episode_index``
    then only names the episode. With ``render_policy_frames_only`` (an env with ``set_rendering``, no observer that
    needs every frame) the cameras render only the observations the policy is given: the same pixels, a fifth of
    the renders at ``replan_steps=5``."""
    if render_policy_frames_only and observer is not None:
        raise ValueError("run_episode: render_policy_frames_only skips frames that the observer would be shown")
    started = time.perf_counter()
    task = TaskContext(
        suite=suite,
        task_id=task_id,
        language=env.language,
        episode_index=episode_index,
        noise_seed=noise_seed(seed, suite, task_id, episode_index),
    )
    record: dict[str, Any] = {
        "key": episode_key(suite, task_id, episode_index),
        "suite": suite,
        "task_id": task_id,
        "task_language": env.language,
        "episode_index": episode_index,
        "init_state_index": episode_index if placement_seed is None else None,
        **({} if placement_seed is None else {"placement_seed": placement_seed}),
        "env_seed": env.env_seed,
        "noise_seed": task.noise_seed,
        **(meta or {}),
        "success": None,
        "steps": 0,
        "wall_s": None,
        "inferences": [],
        "error": None,
    }
    lag = LagMAE(lag_mae) if lag_mae > 0 else None
    policy_s = 0.0
    try:
        start = {"init_state_index": episode_index}
        if placement_seed is not None:
            start = {"placement_seed": placement_seed, "held_out_tolerance": held_out_tolerance}
        gate = env.set_rendering if render_policy_frames_only else None
        if gate is not None:
            gate(True)
        obs, _ = env.reset(options=start)
        policy.reset(task)
        plan: deque[np.ndarray] = deque()
        success = False
        control_started = time.perf_counter()
        while True:
            if not plan:
                infer_started = time.perf_counter()
                result = policy.infer(obs)
                policy_s += time.perf_counter() - infer_started
                actions = check_infer_result(result)
                entry = {
                    "step": record["steps"],
                    **_compact(result["info"]),
                    **_compact(mechanism_fields(obs, actions, replan_steps)),  # a NaN action becomes null, not a crash
                }
                if lag is not None and "images" in obs:
                    entry["lag_mae"] = _compact(lag(obs["images"]))
                record["inferences"].append(entry)
                plan.extend(actions[:replan_steps])
            action = plan.popleft()
            if gate is not None:
                gate(not plan)  # the observation after this step goes to the policy only if the plan is spent
            next_obs, _, terminated, truncated, info = env.step(action)
            record["steps"] += 1
            if observer is not None:
                observer(obs, action, next_obs, info)
            obs = next_obs
            if terminated or truncated:
                success = bool(terminated)
                break
        record["success"] = success
        record["time_s"] = _time_split(env, policy_s, time.perf_counter() - control_started)
    except Exception as err:  # a crashed episode is recorded as an error, never as a failure
        reraise_if_interrupt(err)
        record["error"] = {"type": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()}
    finally:
        if render_policy_frames_only:
            env.set_rendering(True)  # the env outlives the episode; leave it as it was given
    record["wall_s"] = round(time.perf_counter() - started, 3)
    record["finished_at"] = utc_now()
    return record

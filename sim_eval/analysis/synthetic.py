"""Synthetic-but-realistic episode records in the exact ``episodes.jsonl`` schema, laid out as a Hydra multirun sweep.

For tests of the analysis and for the example report only: no simulator and no model run here, and every record says
so (``synthetic: true``). The generative story is meant to exercise everything the report shows:

* each episode has a scene-motion profile (pixel change per inference) with two bursts -- grasp and place -- and the
  lag-k MAE the evaluator would record is the accumulated motion over the last k inferences;
* all modes of one episode key share that profile and the ``full`` outcome (the paired design);
* a cached frame's shadow cosine falls with the MAE to its last full frame; a ``full`` success becomes a failure
  (a *cliff*) with high probability when a cached frame during the grasp burst has cosine < 0.5, and rarely otherwise;
  a ``full`` failure occasionally becomes a success (a *rescue*);
* ``adaptive<N>`` refreshes when the max-over-views MAE reaches the threshold, so it suffers fewer cliffs than
  ``cache<N>`` at a higher refresh fraction;
* latencies are those of a compiled engine on one H100-class GPU (full ~14 ms, cached ~4.7 ms), with jitter and rare
  stalls; optional crashed episodes and an interrupted run (missing pairs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim_eval.analysis.stats import parse_mode
from sim_eval.records import EPISODES_FILE, episode_key, write_summary

SPATIAL_TASKS = [
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "pick up the black bowl next to the ramekin and place it on the plate",
    "pick up the black bowl from table center and place it on the plate",
    "pick up the black bowl on the cookie box and place it on the plate",
    "pick up the black bowl in the top drawer of the wooden cabinet and place it on the plate",
    "pick up the black bowl on the ramekin and place it on the plate",
    "pick up the black bowl next to the cookie box and place it on the plate",
    "pick up the black bowl on the stove and place it on the plate",
    "pick up the black bowl next to the plate and place it on the plate",
    "pick up the black bowl on the wooden cabinet and place it on the plate",
]
REPLAN_STEPS = 5
MAX_STEPS = 220


def _motion_profile(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-inference pixel change (MAE units) with a grasp burst in the first half and a place burst later."""
    motion = rng.lognormal(math.log(1.6), 0.35, size=n)
    grasp = int(rng.integers(max(1, n // 5), max(2, n // 2)))
    place = int(rng.integers(min(n - 1, grasp + 4), n)) if n > grasp + 5 else n - 1
    for start, strength in ((grasp, rng.uniform(5.0, 11.0)), (place, rng.uniform(2.0, 6.0))):
        for offset in range(int(rng.integers(2, 5))):
            if start + offset < n:
                motion[start + offset] += strength * (0.6 + 0.4 * rng.random())
    return motion


def _lag(motion: np.ndarray, t: int, k: int) -> float:
    # changes partly cancel over longer gaps (the arm moves back and forth), so MAE grows sub-linearly with the lag
    return float(motion[t - k + 1 : t + 1].sum() * (1.0 - 0.08 * (k - 1)))


def _shadow_cos(rng: np.random.Generator, mae: float) -> float:
    return float(np.clip(1.0 - 0.0028 * mae**2 + rng.normal(0, 0.01), -1.0, 1.0))


def _latency(rng: np.random.Generator, kind: str, mae_check: bool) -> dict[str, float]:
    stall = rng.random() < 0.01  # rare allocator/driver stalls give the p99 a tail
    denoise = 4.45 + rng.gamma(2.0, 0.06) + (rng.uniform(3, 9) if stall else 0.0)
    prefix = 9.35 + rng.gamma(2.0, 0.08) if kind != "cached" else 0.0
    check = 0.22 + rng.gamma(2.0, 0.01) if mae_check else 0.0
    return {
        "prefix_ms": round(prefix, 3),
        "denoise_ms": round(denoise, 3),
        "infer_ms": round(prefix + denoise + check + 0.12, 3),
    }


def _episode(
    rng: np.random.Generator, motion: np.ndarray, mode: str, threshold: float, lags: int, shadow: bool
) -> tuple[list[dict[str, Any]], float]:
    """Inference trace of one episode under ``mode`` and the lowest shadow cosine seen during the grasp burst."""
    kind, period = parse_mode(mode)
    grasp = set(np.flatnonzero(motion > 5.0).tolist())
    inferences, since_full, worst_grasp_cos = [], None, 1.0
    for t in range(len(motion)):
        info: dict[str, Any] = {"step": t * REPLAN_STEPS}
        lag_mae = [round(_lag(motion, t, k), 3) for k in range(1, min(lags, t) + 1)]
        scheduled = kind == "full" or since_full is None or since_full + 1 >= (period or 1)
        forced, mae_full = False, None
        if since_full is not None:
            # like the controller: MAE against the last full frame's inputs on every frame once one exists
            mae_full = _lag(motion, t, since_full + 1)
            wrist = mae_full * rng.uniform(0.95, 1.05)
            agent = mae_full * rng.uniform(0.35, 0.8)
            info["pixel_mae"] = {"agentview": round(agent, 4), "wrist": round(wrist, 4)}
            forced = kind == "adaptive" and not scheduled and max(agent, wrist) >= threshold
        used_full = scheduled or forced
        if not used_full and shadow:
            cos = _shadow_cos(rng, mae_full)
            info["shadow_cos"] = round(cos, 6)
            info["shadow_max_abs"] = round(0.9 * (1.0 - cos) + abs(rng.normal(0, 0.005)), 6)
            if t in grasp:
                worst_grasp_cos = min(worst_grasp_cos, cos)
        since_full = 0 if used_full else since_full + 1
        info.update(_latency(rng, "full" if used_full else "cached", mae_full is not None))
        info.update({"used_full": used_full, "forced_refresh": forced, "window_pos": since_full, "infer_index": t})
        info["lag_mae"] = lag_mae
        inferences.append(info)
    return inferences, worst_grasp_cos


def make_sweep(
    out_dir: str | Path,
    *,
    modes: tuple[str, ...] = ("full", "cache3", "adaptive3"),
    tasks: int = 10,
    episodes: int = 10,
    seed: int = 0,
    threshold: float = 6.5,
    lags: int = 3,
    shadow: bool = True,
    errors: bool = True,
    missing: int = 3,
    videos: bool = False,
    suite: str = "libero_spatial",
    policy: str = "pi05",
) -> Path:
    """Write one job dir per mode (``0/``, ``1/``, ...) under ``out_dir`` plus ``multirun.yaml``; return ``out_dir``.

    ``errors`` makes one ``full`` episode and one episode of each ``cache<N>`` mode crash; ``missing`` drops that
    many trailing episodes from the last mode's run (an interrupted run); ``videos`` gives failures (cliffs among
    them) an mp4 path and writes a placeholder file there (tests of the links; not a playable video)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task_rng = np.random.default_rng([seed, 1])
    task_success = task_rng.uniform(0.88, 1.0, size=tasks)
    overrides_all = [f"policy.cache={','.join(modes)}"]
    multirun = {"synthetic": True, "hydra": {"overrides": {"task": overrides_all}}}
    (out / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    for job, mode in enumerate(modes):
        run = out / str(job)
        (run / ".hydra").mkdir(parents=True, exist_ok=True)
        config = {
            "synthetic": True,
            "suite": {"name": suite},
            "policy": {
                "name": policy,
                "cache": mode,
                "refresh": {"threshold": threshold, "views": ["agentview", "wrist"]},
            },
            "eval": {
                "tasks": list(range(tasks)),
                "episodes_per_task": episodes,
                "video": "failures" if videos else "none",
                "lag_mae": lags,
            },
            "analysis": {"shadow": shadow},
        }
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"policy.cache={mode}"]))
        records = []
        for task in range(tasks):
            for ep in range(episodes):
                if mode == modes[-1] and len(modes) > 1 and task == tasks - 1 and ep >= episodes - missing:
                    continue  # the interrupted run never got to these
                records.append(
                    _record(
                        seed,
                        suite,
                        policy,
                        mode,
                        task,
                        ep,
                        task_success[task],
                        threshold,
                        lags,
                        shadow,
                        errors,
                        videos,
                        run,
                        tasks,
                        episodes,
                    )
                )
        with open(run / EPISODES_FILE, "w") as handle:
            for record in records:
                handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        write_summary(run, records)
    return out


def _record(
    seed, suite, policy, mode, task, ep, p_task, threshold, lags, shadow, errors, videos, run_dir, n_tasks, n_episodes
) -> dict:
    ep_rng = np.random.default_rng([seed, 2, task, ep])  # shared by every mode: the paired design
    full_success = bool(ep_rng.random() < p_task)
    steps_success = int(ep_rng.integers(85, 195))
    motion = _motion_profile(ep_rng, math.ceil(MAX_STEPS / REPLAN_STEPS))
    mode_rng = np.random.default_rng([seed, 3, task, ep, *map(ord, mode)])
    # closed-loop chance beyond the cache's effect differs per mode: draws of its own, not the shared episode stream
    outcome_draw, rescue_draw = map(float, np.random.default_rng([seed, 5, task, ep, *map(ord, mode)]).random(2))

    inferences, worst = _episode(mode_rng, motion, mode, threshold, lags, shadow)
    if mode == "full":
        success = full_success
    elif full_success:
        success = not (worst < 0.5 and outcome_draw < 0.6 or outcome_draw < 0.02)
    else:
        success = rescue_draw < 0.12
    steps = steps_success if success else MAX_STEPS
    inferences = inferences[: math.ceil(steps / REPLAN_STEPS)]
    error = None
    crash_at = (1 % n_tasks, 2 % n_episodes) if mode == "full" else (2 % n_tasks, 3 % n_episodes)
    if errors and (task, ep) == crash_at and parse_mode(mode)[0] != "adaptive":
        # a crash part-way: the record keeps the trace up to it, success is unknown
        steps = 61
        inferences = inferences[: math.ceil(steps / REPLAN_STEPS)]
        success = None
        error = {
            "type": "MujocoException",
            "message": "Got MuJoCo Warning: Nan, Inf or huge value in QACC at DOF 9.",
            "traceback": "Traceback (most recent call last):\n  ... (synthetic)\n",
        }
    video = None
    if videos and success is False:
        video = f"videos/{suite}_task{task}_ep{ep}_failure.mp4"
        (run_dir / video).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / video).write_bytes(b"synthetic placeholder, not a video\n")
    return {
        "key": episode_key(suite, task, ep),
        "suite": suite,
        "task_id": task,
        "task_language": SPATIAL_TASKS[task % len(SPATIAL_TASKS)],
        "episode_index": ep,
        "init_state_index": ep,
        "env_seed": 7,
        "noise_seed": int(np.random.default_rng([seed, 4, task, ep]).integers(2**31)),
        "policy": policy,
        "cache_mode": mode,
        "protocol": {
            "name": "openpi",
            "max_steps": MAX_STEPS,
            "num_wait_steps": 10,
            "replan_steps": REPLAN_STEPS,
            "render_size": 256,
        },
        "success": success,
        "steps": steps,
        "wall_s": round(sum(i["infer_ms"] for i in inferences) / 1000 + steps * 0.011, 3),
        "inferences": inferences,
        "error": error,
        "video": video,
        "finished_at": "2026-11-26T00:00:00+00:00",
        "synthetic": True,
    }

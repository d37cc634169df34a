"""Synthetic-but-realistic episode records in the exact ``episodes.jsonl`` schema, laid out as a Hydra multirun sweep.

For tests of the analysis and for the example report only: no simulator and no model run here, and every record says
so (``synthetic: true``). The generative story is meant to exercise everything the report shows:

* each episode has a scene-motion profile (pixel change per inference) with two bursts -- grasp and place -- and the
  lag-k MAE the evaluator would record is the accumulated motion over the last k inferences;
* all modes of one episode key share that profile and the ``full`` outcome (the paired design);
* a cached frame's shadow cosine falls with the MAE to its last full frame; a ``full`` success becomes a failure
  (a *cliff*) with high probability when a cached frame during the grasp burst has cosine < 0.5, and rarely otherwise;
  a ``full`` failure occasionally becomes a success (a *rescue*);
* ``replay<N>`` (the zero-compute arm) answers between its full frames without the model: ``replayed`` frames with
  ``infer_ms`` 0 and no pixel MAE or shadow; their staleness risks a cliff during the grasp burst as a cached
  frame's does;
* ``adaptive<N>`` refreshes when the max-over-views MAE reaches the threshold, so it suffers fewer cliffs than
  ``cache<N>`` at a higher refresh fraction;
* a cliff episode follows the ``full`` episode exactly up to its worst cached grasp frame and departs after it (the
  scene motion, hence the recorded lag MAE, changes from the next inference on): the divergence point the report
  looks for;
* every inference carries executed actions, gripper opening and eef height (``_mechanism``): cached frames re-play
  their full frame's plan, the phases follow the motion bursts;
* a success takes a few more steps under a cache mode (dithering) and a few more or fewer under another noise seed;
* ``control_seed`` adds a *control arm*: ``full`` at another ``eval.seed``, whose outcomes flip by chance alone and
  whose path departs from the baseline's from the first inference (other noise, other actions);
* latencies are those of a compiled engine on one H100-class GPU (full ~14 ms, cached ~4.7 ms), with jitter and rare
  stalls; optional crashed episodes and an interrupted run (missing pairs).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim_eval.analysis.stats import parse_mode
from sim_eval.analysis.summary import write_summary
from sim_eval.envs.benchmarks import split_name
from sim_eval.policies.cache_mode import DEFAULT_THRESHOLD
from sim_eval.records.episodes import EPISODES_FILE, episode_key

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
) -> tuple[list[dict[str, Any]], float, int | None]:
    """Inference trace of one episode under ``mode``, the lowest shadow cosine seen during the grasp burst and the
    index of the cached grasp frame with the stalest prefix (largest MAE to its full frame: where a cliff starts)."""
    kind, period = parse_mode(mode)
    grasp = set(np.flatnonzero(motion > 5.0).tolist())
    inferences, since_full, worst_grasp_cos = [], None, 1.0
    cause, cause_mae = None, -1.0
    for t in range(len(motion)):
        info: dict[str, Any] = {"step": t * REPLAN_STEPS}
        lag_mae = [round(_lag(motion, t, k), 3) for k in range(1, min(lags, t) + 1)]
        scheduled = kind == "full" or since_full is None or since_full + 1 >= (period or 1)
        forced, mae_full = False, None
        replayed = kind == "replay" and not scheduled
        if since_full is not None:
            # like the controller: MAE against the last full frame's inputs on every frame once one exists
            mae_full = _lag(motion, t, since_full + 1)
            wrist = mae_full * rng.uniform(0.95, 1.05)
            agent = mae_full * rng.uniform(0.35, 0.8)
            if kind != "replay":  # replay<N> looks at no image between its full frames
                info["pixel_mae"] = {"agentview": round(agent, 4), "wrist": round(wrist, 4)}
            forced = kind == "adaptive" and not scheduled and max(agent, wrist) >= threshold
        used_full = scheduled or forced
        if not used_full and t in grasp and mae_full > cause_mae:
            cause, cause_mae = t, mae_full
        if not used_full and (shadow or replayed):
            # a stale plan hurts a replayed frame as a stale prefix hurts a cached one; only the latter is shadowed
            cos = _shadow_cos(rng, mae_full)
            if not replayed:
                info["shadow_cos"] = round(cos, 6)
                info["shadow_max_abs"] = round(0.9 * (1.0 - cos) + abs(rng.normal(0, 0.005)), 6)
            if t in grasp:
                worst_grasp_cos = min(worst_grasp_cos, cos)
        since_full = 0 if used_full else since_full + 1
        if replayed:
            info.update({"infer_ms": 0.0, "prefix_ms": 0.0, "denoise_ms": 0.0, "replayed": True})
        else:
            info.update(_latency(rng, "full" if used_full else "cached", mae_full is not None))
        info.update({"used_full": used_full, "forced_refresh": forced, "window_pos": since_full, "infer_index": t})
        info["lag_mae"] = lag_mae
        inferences.append(info)
    return inferences, worst_grasp_cos, cause


def _mechanism(rng: np.random.Generator, inferences: list[dict[str, Any]], motion: np.ndarray) -> None:
    """Add what ``sim_eval.analysis.mechanism`` reads: executed actions, gripper opening and eef height. A full frame
    executes the start of a fresh plan for its point of the task; a cached frame re-plays its window's full-frame
    plan from the start, slightly perturbed (the mechanism of a decode-only frame); a replayed frame the plan's next
    actions. Height and gripper go approach, grasp (at the first burst), transport (lifted), place (lowered, open)."""
    n = len(motion)
    burst = np.flatnonzero(motion > 5.0)
    grasp = int(burst[0]) if burst.size else n // 3
    lift, place = grasp + 2, grasp + 2 + max(2, (n - grasp) // 2)

    def plan(t: int) -> np.ndarray:
        rows = np.arange(2 * REPLAN_STEPS) / REPLAN_STEPS + t
        actions = 0.3 * np.sin(0.4 * rows[:, None] + np.arange(7))
        actions[:, 6] = 1.0 if grasp <= t <= place else -1.0
        return actions

    current = plan(0)
    for t, inf in enumerate(inferences):
        if inf.get("replayed"):
            executed = current[REPLAN_STEPS * inf["window_pos"] :][:REPLAN_STEPS]
        elif inf.get("used_full", True):
            current = plan(t)
            executed = current[:REPLAN_STEPS]
        else:
            executed = current[:REPLAN_STEPS] + rng.normal(0.0, 0.01, (REPLAN_STEPS, 7))
        inf["executed"] = np.round(executed, 4).tolist()
        if t < grasp:
            z = 1.10 - 0.2 * t / max(grasp, 1)
        elif t < lift:
            z = 0.90
        elif t < place:
            z = 0.90 + 0.15 * min(1.0, (t - lift + 1) / 3)
        else:
            z = 1.05 - 0.07 * min(1.0, (t - place + 1) / 2)
        inf["eef_z"] = round(z, 4)
        inf["grip"] = 0.08 if t < grasp else 0.03 if t <= place else 0.07


def _depart(rng: np.random.Generator, motion: np.ndarray, after: int) -> np.ndarray:
    """``motion`` unchanged up to inference ``after`` and different from the next one on (another path through the
    scene: each later frame's motion rescaled by 0.5..1.5, so its overall level stays alike)."""
    out = motion.copy()
    out[after + 1 :] *= rng.uniform(0.5, 1.5, size=out.size - after - 1)
    return out


def make_sweep(
    out_dir: str | Path,
    *,
    modes: tuple[str, ...] = ("full", "cache3", "adaptive3"),
    tasks: int = 10,
    episodes: int = 10,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    lags: int = 3,
    shadow: bool = True,
    errors: bool = True,
    missing: int = 3,
    videos: bool = False,
    suite: str = "libero_spatial",
    policy: str = "pi05",
    control_seed: int | None = None,
    task_success: tuple[float, float] = (0.88, 1.0),
) -> Path:
    """Write one job dir per mode (``0/``, ``1/``, ...) under ``out_dir`` plus ``multirun.yaml``; return ``out_dir``.

    ``errors`` makes one ``full`` episode and one episode of each ``cache<N>`` mode crash; ``missing`` drops that
    many trailing episodes from the last mode's run (an interrupted run); ``videos`` gives failures (cliffs among
    them) an mp4 path and writes a placeholder file there (tests of the links; not a playable video);
    ``control_seed`` adds a last job, ``full`` at ``eval.seed=control_seed`` (the modes run at ``eval.seed=0``);
    ``task_success``: the range the ``full`` success probability of each task is drawn from."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task_rng = np.random.default_rng([seed, 1])
    spec = _Spec(seed, suite, policy, tasks, episodes, task_rng.uniform(*task_success, size=tasks), threshold, lags,
                 shadow, errors, videos)  # fmt: skip
    jobs = [(mode, 0) for mode in modes] + ([("full", control_seed)] if control_seed is not None else [])
    overrides_all = [f"policy.cache={','.join(modes)}"]
    multirun = {"synthetic": True, "hydra": {"overrides": {"task": overrides_all}}}
    (out / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    for job, (mode, eval_seed) in enumerate(jobs):
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
                "seed": eval_seed,
            },
            "analysis": {"shadow": shadow},
        }
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        overrides = [f"policy.cache={mode}"] + ([f"eval.seed={eval_seed}"] if eval_seed else [])
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        interrupted = job == len(modes) - 1 and len(modes) > 1  # the last mode's run, never the control arm
        records = []
        for task in range(tasks):
            for ep in range(episodes):
                if interrupted and task == tasks - 1 and ep >= episodes - missing:
                    continue  # the interrupted run never got to these
                records.append(_record(spec, mode, eval_seed, task, ep, run))
        with open(run / EPISODES_FILE, "w") as handle:
            for record in records:
                handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        write_summary(run, records)
    return out


def make_family_sweeps(
    out_dir: str | Path, suites: dict[str, tuple[float, float]], *, seed: int = 0, **sweep: Any
) -> list[Path]:
    """One ``make_sweep`` per suite under ``out_dir/<suite>`` (the same modes, so the report pairs each suite's modes
    with its ``full``), each suite's tasks succeeding under ``full`` with a probability drawn from its range (a
    perturbation that hurts: a lower range); return the sweep dirs."""
    return [
        make_sweep(Path(out_dir) / suite, suite=suite, seed=seed + k, task_success=success, **sweep)
        for k, (suite, success) in enumerate(suites.items())
    ]


@dataclass
class _Spec:
    """The sweep-wide settings every record is drawn under."""

    seed: int
    suite: str
    policy: str
    tasks: int
    episodes: int
    task_success: np.ndarray
    threshold: float
    lags: int
    shadow: bool
    errors: bool
    videos: bool


def _outcome(spec: _Spec, mode: str, eval_seed: int, task: int, ep: int, full_success: bool, worst: float) -> bool:
    """Success of one episode given the ``full`` outcome on it and the worst grasp-burst shadow cosine."""
    tag = [*map(ord, mode), eval_seed]
    # closed-loop chance beyond the cache's effect differs per mode: draws of its own, not the shared episode stream
    outcome_draw, rescue_draw = map(float, np.random.default_rng([spec.seed, 5, task, ep, *map(ord, mode)]).random(2))
    if mode == "full" and eval_seed == 0:
        return full_success
    if mode == "full":  # the control arm: other noise flips an outcome now and then, nothing else does
        flip = float(np.random.default_rng([spec.seed, 7, task, ep, *tag]).random())
        return (flip >= 0.04) if full_success else (flip < 0.2)
    if full_success:
        return not (worst < 0.5 and outcome_draw < 0.6 or outcome_draw < 0.02)
    return rescue_draw < 0.12


def _extra_steps(spec: _Spec, mode: str, eval_seed: int, task: int, ep: int) -> int:
    """Steps a success takes beyond the ``full`` episode's: a cache mode dithers a little (more the longer its reuse
    window), another noise seed takes a different but not longer path on average."""
    if mode == "full" and eval_seed == 0:
        return 0
    rng = np.random.default_rng([spec.seed, 6, task, ep, *map(ord, mode), eval_seed])
    period = parse_mode(mode)[1] or 1
    return int(round(rng.normal(1.5 * (period - 1), 4.0)))


def _identity(spec: _Spec, mode: str, eval_seed: int) -> dict[str, Any]:
    """The settings part of a record as ``sim_eval.records.manifest.identity`` writes it (the refresh rule for adaptive
    modes only: it acts on nothing else)."""
    ident: dict[str, Any] = {"suite": spec.suite, "policy.name": spec.policy, "policy.cache": mode}
    if parse_mode(mode)[0] == "adaptive":
        ident |= {"policy.refresh.threshold": spec.threshold, "policy.refresh.views": ["agentview", "wrist"]}
    return ident | {"protocol.name": "openpi", "eval.max_steps": MAX_STEPS, "eval.seed": eval_seed}


def _record(spec: _Spec, mode: str, eval_seed: int, task: int, ep: int, run_dir: Path) -> dict:
    suite = spec.suite
    ep_rng = np.random.default_rng([spec.seed, 2, task, ep])  # shared by every mode: the paired design
    full_success = bool(ep_rng.random() < spec.task_success[task])
    steps_success = int(ep_rng.integers(85, 195))
    motion = _motion_profile(ep_rng, math.ceil(MAX_STEPS / REPLAN_STEPS))
    if eval_seed != 0:
        motion = _depart(np.random.default_rng([spec.seed, 8, task, ep, eval_seed]), motion, 0)

    def trace(profile: np.ndarray) -> tuple[list[dict[str, Any]], float, int | None]:
        # the same generator seed for a re-drawn trace: it repeats the first one up to where the profiles differ
        rng = np.random.default_rng([spec.seed, 3, task, ep, *map(ord, mode), *([eval_seed] if eval_seed else [])])
        return _episode(rng, profile, mode, spec.threshold, spec.lags, spec.shadow)

    inferences, worst, cause = trace(motion)
    success = _outcome(spec, mode, eval_seed, task, ep, full_success, worst)
    if full_success and not success and mode != "full":  # a cliff: the path departs after its worst grasp frame
        depart_rng = np.random.default_rng([spec.seed, 9, task, ep, *map(ord, mode)])
        inferences, _, _ = trace(_depart(depart_rng, motion, cause if cause is not None else 1))
    steps = min(MAX_STEPS - 1, max(40, steps_success + _extra_steps(spec, mode, eval_seed, task, ep)))
    steps = steps if success else MAX_STEPS
    inferences = inferences[: math.ceil(steps / REPLAN_STEPS)]
    _mechanism(np.random.default_rng([spec.seed, 10, task, ep, *map(ord, mode), eval_seed]), inferences, motion)
    error = None
    crash_at = (1 % spec.tasks, 2 % spec.episodes) if mode == "full" else (2 % spec.tasks, 3 % spec.episodes)
    if spec.errors and eval_seed == 0 and (task, ep) == crash_at and parse_mode(mode)[0] != "adaptive":
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
    if spec.videos and success is False:
        video = f"videos/{suite}_task{task}_ep{ep}_failure.mp4"
        (run_dir / video).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / video).write_bytes(b"synthetic placeholder, not a video\n")
    return {
        "key": episode_key(suite, task, ep),
        "suite": suite,
        "base_suite": split_name(suite)[0],
        "perturbation": split_name(suite)[1],
        "task_id": task,
        "task_language": SPATIAL_TASKS[task % len(SPATIAL_TASKS)],
        "episode_index": ep,
        "init_state_index": ep,
        "env_seed": 7,
        "noise_seed": int(
            np.random.default_rng([spec.seed, 4, task, ep, *([eval_seed] if eval_seed else [])]).integers(2**31)
        ),
        "policy": spec.policy,
        "cache_mode": mode,
        "seed": eval_seed,
        "identity": _identity(spec, mode, eval_seed),
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

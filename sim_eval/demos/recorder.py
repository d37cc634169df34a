"""The demonstration recorder behind ``python -m sim_eval.record`` (options: that module).

Runs episodes through the evaluator's own env, protocol and ``run_episode``, but **never from the evaluation's init
states**: episode k of a task starts from the layout LIBERO's placement sampler draws under seed ``record.first_seed +
k``, and a start layout within ``record.held_out_tolerance`` metres of any of the task's evaluation init states (on
every object) is rejected before a step is taken (``sim_eval.envs.layouts``). For every successful episode it writes a
demo file (``sim_eval.demos.files``): both views as the model sees them (the protocol's image taken to
``record.image_size`` by the engine's own pre-processing), the 8-D states, the executed actions and the expert's clean
actions (labels). With ``record.dart_prob > 0`` the executed action is now and then perturbed
(``sim_eval.policies.dart``), so the demos hold recovery states; the label stays the expert's. Failed, rejected and
crashed episodes are counted in the manifest, not recorded. Work is spread over ``record.num_workers`` spawned
processes (``sim_eval.runtime.workers``); a worker that dies mid-episode leaves an error outcome for it and is replaced.

Rerunning into the same ``out`` skips episodes already attempted (their outcomes are in ``outcomes.jsonl``).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim_eval.demos.files import MANIFEST, DemoWriter, demo_filename
from sim_eval.envs.interrupts import reraise_if_interrupt
from sim_eval.envs.layouts import DEFAULT_TOLERANCE_M
from sim_eval.envs.libero_env import EnvPerTask, EveryNthFrame
from sim_eval.records.episodes import episode_key
from sim_eval.runtime.runner import build_policy, env_kwargs
from sim_eval.runtime.workers import run_in_workers

OUTCOMES = "outcomes.jsonl"


@dataclass
class RecordOptions:
    out: str
    placements: int = 50
    first_seed: int = 100000
    held_out_tolerance: float = DEFAULT_TOLERANCE_M
    dart_prob: float = 0.3
    dart_sigma: float = 0.3
    frame_stride: int = 2
    image_size: int = 128
    jpeg_quality: int = 90
    num_workers: int = 2

    def __post_init__(self) -> None:
        from sim_eval.config import ConfigError

        if self.placements < 1:
            raise ConfigError(f"record.placements={self.placements}: must be >= 1")
        if self.first_seed < 0:
            raise ConfigError(f"record.first_seed={self.first_seed}: must be >= 0")
        if not self.held_out_tolerance >= 0:
            raise ConfigError(f"record.held_out_tolerance={self.held_out_tolerance}: must be >= 0 (metres)")
        if not 0 <= self.dart_prob <= 1:
            raise ConfigError(f"record.dart_prob={self.dart_prob}: allowed are 0..1")
        if not self.dart_sigma >= 0:
            raise ConfigError(f"record.dart_sigma={self.dart_sigma}: must be >= 0")
        if self.frame_stride < 1:
            raise ConfigError(f"record.frame_stride={self.frame_stride}: must be >= 1")
        if self.image_size < 16:
            raise ConfigError(f"record.image_size={self.image_size}: must be >= 16")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"record.jpeg_quality={self.jpeg_quality}: allowed are 1..100")
        if self.num_workers < 0:
            raise ConfigError(f"record.num_workers={self.num_workers}: must be >= 0")


@dataclass
class EpisodeJob:
    """Everything a worker needs for its episodes, picklable (plain values only)."""

    suite: str
    policy: dict[str, Any]
    policy_name: str
    env_kwargs: dict[str, Any]
    replan_steps: int
    out: str
    image_size: int
    jpeg_quality: int
    held_out_tolerance: float = DEFAULT_TOLERANCE_M
    dart_prob: float = 0.0
    dart_sigma: float = 0.0
    frame_stride: int = 1


class _Worker:
    """One simulator (per task, kept between episodes of that task) and one policy (DART-wrapped if asked)."""

    def __init__(self, job: EpisodeJob, policy=None):
        from sim_eval.policies.dart import DartNoise

        self.job = job
        self.expert = policy if policy is not None else build_policy(job.policy)
        self.policy = DartNoise(self.expert, job.dart_prob, job.dart_sigma) if job.dart_prob > 0 else None
        self.envs = EnvPerTask(job.suite, **job.env_kwargs)

    def __call__(self, task_id: int, seed: int) -> dict[str, Any]:
        from sim_eval.envs.layouts import HeldOutViolation
        from sim_eval.policies.pi05.processing import model_input_u8
        from sim_eval.runtime.rollout import run_episode

        job = self.job
        outcome: dict[str, Any] = {"task_id": task_id, "placement_seed": seed, "file": None}
        policy = self.policy or self.expert
        writer = DemoWriter(job.image_size, job.jpeg_quality)

        def observe(obs, action, next_obs, info) -> None:
            if "images" in obs:  # a step whose frame is kept
                obs = {**obs, "images": {v: model_input_u8(im, job.image_size) for v, im in obs["images"].items()}}
            label = self.policy.last_label if self.policy is not None else None
            perturbed = self.policy.last_perturbed if self.policy is not None else False
            writer.add(obs, action, label, perturbed)

        try:
            env = EveryNthFrame(self.envs(task_id), job.frame_stride)
            record = run_episode(
                env,
                policy,
                suite=job.suite,
                task_id=task_id,
                episode_index=seed,
                placement_seed=seed,
                held_out_tolerance=job.held_out_tolerance,
                replan_steps=job.replan_steps,
                observer=observe,
            )
        except Exception as err:  # a simulator that cannot start: this episode's error
            reraise_if_interrupt(err)
            return _error_outcome(job, task_id, seed, f"{type(err).__name__}: {err}", traceback.format_exc())
        error = record["error"]
        if error is not None and error["type"] == HeldOutViolation.__name__:
            outcome.update(key=record["key"], success=None, steps=0, error=None, rejected=error["message"])
            return outcome
        outcome.update(
            key=record["key"],
            success=record["success"],
            steps=record["steps"],
            error=error and error["message"],
            held_out=env.held_out.to_dict() if env.held_out else None,
            perturbed_steps=int(sum(writer.perturbed)),
        )
        if record["success"]:
            name = demo_filename(job.suite, task_id, seed)
            meta = {
                "instruction": env.language,
                "suite": job.suite,
                "task_id": task_id,
                "placement_seed": seed,
                "held_out": env.held_out.to_dict(),
                "dart": {"prob": job.dart_prob, "sigma": job.dart_sigma},
                "frame_stride": job.frame_stride,
                "success": True,
                "policy": job.policy_name,
                "max_steps": env.max_steps,
                "num_wait_steps": env.num_wait_steps,
            }
            writer.save(Path(job.out) / name, meta)
            outcome["file"] = name
        return outcome

    def close(self) -> None:
        self.envs.close()


def _error_outcome(job: EpisodeJob, task_id: int, seed: int, error: str, trace: str) -> dict[str, Any]:
    """The outcome of an episode that did not finish: no success value, no demo; a rerun retries it."""
    return {
        "task_id": task_id,
        "placement_seed": seed,
        "file": None,
        "key": episode_key(job.suite, task_id, seed),
        "success": None,
        "steps": 0,
        "error": error,
        "traceback": trace,
    }


def _in_process(job: EpisodeJob, policy, todo: list[tuple[int, int]]):
    worker = _Worker(job, policy)
    try:
        for item in todo:
            yield worker(*item)
    finally:
        worker.close()


def record_demos(
    job: EpisodeJob, episodes: list[tuple[int, int]], num_workers: int = 2, policy=None, progress=None
) -> dict[str, Any]:
    """Record ``episodes`` ((task_id, placement_seed) pairs) into ``job.out``; returns the manifest.

    ``policy`` (only with ``num_workers=0``) is used as given instead of building ``job.policy``."""
    from sim_eval.records.episodes import EpisodeLog, read_records

    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    done = {(r["task_id"], r["placement_seed"]) for r in read_records(out / OUTCOMES) if r.get("error") is None}
    todo = [item for item in episodes if tuple(item) not in done]
    if not todo:
        stream = iter(())
    elif num_workers == 0:
        stream = _in_process(job, policy, todo)
    else:

        def died(item: tuple[int, int], message: str) -> dict[str, Any]:
            return _error_outcome(job, *item, f"WorkerDied: {message}", "")

        stream = run_in_workers(_Worker, (job,), todo, num_workers, died)
    with EpisodeLog(out / OUTCOMES) as log:
        for outcome in stream:
            log.append(outcome)
            if progress:
                progress(outcome)
    return write_manifest(job, episodes)


def write_manifest(job: EpisodeJob, episodes: list[tuple[int, int]]) -> dict[str, Any]:
    """Manifest derived from ``outcomes.jsonl`` (the last outcome per episode wins), restricted to ``episodes``."""
    import json
    import os

    from sim_eval.envs.simulator import simulator_identity
    from sim_eval.records.episodes import read_records

    out = Path(job.out)
    wanted = {tuple(e) for e in episodes}
    latest: dict[tuple[int, int], dict] = {}
    for r in read_records(out / OUTCOMES):
        key = (r["task_id"], r["placement_seed"])
        if key in wanted:
            latest[key] = r
    ordered = [latest[k] for k in sorted(latest)]
    demos = [
        {
            "file": r["file"],
            "key": r["key"],
            "task_id": r["task_id"],
            "placement_seed": r["placement_seed"],
            "steps": r["steps"],
            "perturbed_steps": r.get("perturbed_steps", 0),
            "held_out_distance_m": (r.get("held_out") or {}).get("distance_m"),
        }
        for r in ordered
        if r["success"] and r["file"] and (out / r["file"]).exists()
    ]
    manifest = {
        "format": "sim_eval.demo_manifest/1",
        "suite": job.suite,
        "policy": job.policy_name,
        "image_size": job.image_size,
        "frame_stride": job.frame_stride,
        "jpeg_quality": job.jpeg_quality,
        "views": ["agentview", "wrist"],
        "env": job.env_kwargs,
        # the world the frames and contacts come from: a model trained on them is a model of this simulator
        "simulator": simulator_identity(job.env_kwargs.get("texture_colorspace", "linear")),
        "replan_steps": job.replan_steps,
        "held_out_tolerance_m": job.held_out_tolerance,
        "dart": {
            "prob": job.dart_prob,
            "sigma": job.dart_sigma,
            "perturbed_steps": sum(d["perturbed_steps"] for d in demos),
            "steps": sum(d["steps"] for d in demos),
        },
        "episodes_planned": len(episodes),
        "episodes_run": len(ordered),
        "successes": len(demos),
        "rejected": [{"key": r["key"], "why": r["rejected"]} for r in ordered if r.get("rejected")],
        "failures": sum(1 for r in ordered if r["success"] is False),
        "errors": [{"key": r["key"], "error": r["error"]} for r in ordered if r.get("error")],
        "failed": [r["key"] for r in ordered if r["success"] is False],
        "demos": demos,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    return manifest


def job_from_config(cfg, options: RecordOptions) -> tuple[EpisodeJob, list[tuple[int, int]]]:
    from omegaconf import OmegaConf

    from sim_eval.config import validate

    run = validate(cfg)
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    job = EpisodeJob(
        suite=run.suite.name,
        policy=policy_cfg,
        policy_name=str(policy_cfg.get("name", "policy")),
        env_kwargs=env_kwargs(run),
        replan_steps=run.protocol.replan_steps,
        out=str(Path(options.out).expanduser().resolve()),
        image_size=options.image_size,
        jpeg_quality=options.jpeg_quality,
        held_out_tolerance=options.held_out_tolerance,
        dart_prob=options.dart_prob,
        dart_sigma=options.dart_sigma,
        frame_stride=options.frame_stride,
    )
    return job, placement_plan(run.task_ids, options.first_seed, options.placements)


def placement_plan(tasks: list[int], first_seed: int, per_task: int, block: int = 10) -> list[tuple[int, int]]:
    """(task, placement seed) pairs in rounds of ``block`` seeds per task: a recording stopped part-way has every
    task about equally covered, and a worker still reuses its simulator for ``block`` episodes in a row."""
    seeds = list(range(first_seed, first_seed + per_task))
    return [
        (task, seed) for start in range(0, per_task, block) for task in tasks for seed in seeds[start : start + block]
    ]

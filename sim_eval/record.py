"""Demonstration recorder: ``python -m sim_eval.record policy=scripted suite=libero_object out=DIR``.

Runs episodes exactly as the evaluator does (same Hydra config, same env, ``run_episode``), and for every successful
one writes a demo file (``sim_eval.demos``) with both camera views at ``record.image_size`` pixels, the 8-D states, the
executed 7-D actions and the episode's identity. Failed and crashed episodes are counted in the manifest, not
recorded. Work is spread over ``record.num_workers`` spawned processes (``sim_eval.workers``), each owning one
simulator and one policy; a worker that dies mid-episode leaves an error outcome for it and is replaced.

Recorder options (everything else is the main app's config: ``suite=``, ``policy=``, ``eval.tasks=``,
``eval.episodes_per_task=``, ``protocol.*``):
    out=DIR                   where demos and ``manifest.json`` go (required)
    record.image_size=128     square size of the stored images
    record.jpeg_quality=65    JPEG quality of the stored images (65 keeps a 128 px LIBERO frame near 2-2.6 KB)
    record.num_workers=2      worker processes (0 = this process)

Rerunning into the same ``out`` skips episodes already attempted (their outcomes are in ``outcomes.jsonl``).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim_eval.app import build_policy, env_kwargs, plan_episodes
from sim_eval.demos import MANIFEST, DemoWriter, demo_filename
from sim_eval.envs.libero_env import EnvPerTask
from sim_eval.records import episode_key
from sim_eval.workers import run_in_workers

OUTCOMES = "outcomes.jsonl"


@dataclass
class RecordOptions:
    out: str
    image_size: int = 128
    jpeg_quality: int = 65
    num_workers: int = 2

    def __post_init__(self) -> None:
        from sim_eval.config import ConfigError

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


class _Worker:
    """One simulator (per task, kept between episodes of that task) and one policy."""

    def __init__(self, job: EpisodeJob, policy=None):
        self.job = job
        self.policy = policy if policy is not None else build_policy(job.policy)
        self.envs = EnvPerTask(job.suite, **job.env_kwargs)

    def __call__(self, task_id: int, episode_index: int) -> dict[str, Any]:
        from sim_eval.rollout import run_episode

        job = self.job
        outcome: dict[str, Any] = {"task_id": task_id, "init_state_index": episode_index, "file": None}
        try:
            env = self.envs(task_id)
            writer = DemoWriter(job.image_size, job.jpeg_quality)
            record = run_episode(
                env,
                self.policy,
                suite=job.suite,
                task_id=task_id,
                episode_index=episode_index,
                replan_steps=job.replan_steps,
                observer=lambda obs, action, next_obs, info: writer.add(obs, action),
            )
        except Exception as err:  # a simulator that cannot start: this episode's error
            return _error_outcome(job, task_id, episode_index, f"{type(err).__name__}: {err}", traceback.format_exc())
        outcome.update(
            key=record["key"],
            success=record["success"],
            steps=record["steps"],
            error=record["error"] and record["error"]["message"],
        )
        if record["success"]:
            name = demo_filename(job.suite, task_id, episode_index)
            meta = {
                "instruction": env.language,
                "suite": job.suite,
                "task_id": task_id,
                "init_state_index": episode_index,
                "success": True,
                "env_seed": env.env_seed,
                "policy": job.policy_name,
                "max_steps": env.max_steps,
                "num_wait_steps": env.num_wait_steps,
            }
            writer.save(Path(job.out) / name, meta)
            outcome["file"] = name
        return outcome

    def close(self) -> None:
        self.envs.close()


def _error_outcome(job: EpisodeJob, task_id: int, episode_index: int, error: str, trace: str) -> dict[str, Any]:
    """The outcome of an episode that did not finish: no success value, no demo; a rerun retries it."""
    return {
        "task_id": task_id,
        "init_state_index": episode_index,
        "file": None,
        "key": episode_key(job.suite, task_id, episode_index),
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
    """Record ``episodes`` ((task_id, init_state_index) pairs) into ``job.out``; returns the manifest.

    ``policy`` (only with ``num_workers=0``) is used as given instead of building ``job.policy``."""
    from sim_eval.records import EpisodeLog, read_records

    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    done = {(r["task_id"], r["init_state_index"]) for r in read_records(out / OUTCOMES) if r.get("error") is None}
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

    from sim_eval.records import read_records

    out = Path(job.out)
    wanted = {tuple(e) for e in episodes}
    latest: dict[tuple[int, int], dict] = {}
    for r in read_records(out / OUTCOMES):
        key = (r["task_id"], r["init_state_index"])
        if key in wanted:
            latest[key] = r
    ordered = [latest[k] for k in sorted(latest)]
    demos = [
        {
            "file": r["file"],
            "key": r["key"],
            "task_id": r["task_id"],
            "init_state_index": r["init_state_index"],
            "steps": r["steps"],
        }
        for r in ordered
        if r["success"] and r["file"] and (out / r["file"]).exists()
    ]
    manifest = {
        "format": "sim_eval.demo_manifest/1",
        "suite": job.suite,
        "policy": job.policy_name,
        "image_size": job.image_size,
        "jpeg_quality": job.jpeg_quality,
        "views": ["agentview", "wrist"],
        "env": job.env_kwargs,
        "replan_steps": job.replan_steps,
        "episodes_planned": len(episodes),
        "episodes_run": len(ordered),
        "successes": len(demos),
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


# ----------------------------------------------------------------------------------------------------------------- CLI

_OPTION_KEYS = {
    "out": "out",
    "record.out": "out",
    "record.image_size": "image_size",
    "record.jpeg_quality": "jpeg_quality",
    "record.num_workers": "num_workers",
}


def split_argv(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Recorder options vs. overrides for the main app's config."""
    import yaml

    options, overrides = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in _OPTION_KEYS:
            options[_OPTION_KEYS[key]] = yaml.safe_load(value) if key != "out" and key != "record.out" else value
        else:
            overrides.append(arg)
    return options, overrides


def job_from_config(cfg, options: RecordOptions) -> tuple[EpisodeJob, list[tuple[int, int]]]:
    from omegaconf import OmegaConf

    from sim_eval.config import validate

    run = validate(cfg)
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    # The policy and the demo see the same (recorded) images.
    kwargs = {**env_kwargs(run), "model_image_size": options.image_size}
    job = EpisodeJob(
        suite=run.suite.name,
        policy=policy_cfg,
        policy_name=str(policy_cfg.get("name", "policy")),
        env_kwargs=kwargs,
        replan_steps=run.protocol.replan_steps,
        out=str(Path(options.out).expanduser().resolve()),
        image_size=options.image_size,
        jpeg_quality=options.jpeg_quality,
    )
    return job, plan_episodes(run)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    from sim_eval.__main__ import CONF_DIR, check_group_choices
    from sim_eval.config import ConfigError, register_configs

    argv = sys.argv[1:] if argv is None else argv
    try:
        raw, overrides = split_argv(argv)
        if "out" not in raw:
            raise ConfigError("out=DIR is required: the directory the demos and manifest.json are written to")
        options = RecordOptions(**raw)
        register_configs()
        check_group_choices(overrides)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        job, episodes = job_from_config(cfg, options)
    except ConfigError as err:
        print(f"sim_eval.record: error: {err}", file=sys.stderr)
        sys.exit(2)
    from tqdm import tqdm

    bar = tqdm(total=len(episodes), desc=f"record {job.suite} {job.policy_name}", unit="ep")
    counts = {"ok": 0, "fail": 0, "err": 0}

    def progress(outcome: dict[str, Any]) -> None:
        counts["ok" if outcome["success"] else "err" if outcome.get("error") else "fail"] += 1
        bar.update(1)
        bar.set_postfix(recorded=counts["ok"], failed=counts["fail"], errors=counts["err"])

    try:
        manifest = record_demos(job, episodes, num_workers=options.num_workers, progress=progress)
    finally:
        bar.close()
    print(
        f"recorded {manifest['successes']} demos of {manifest['episodes_run']} episodes "
        f"({manifest['failures']} failed, {len(manifest['errors'])} errors) in {job.out}"
    )
    return dataclasses.asdict(job) | {"manifest": manifest}


if __name__ == "__main__":
    main()

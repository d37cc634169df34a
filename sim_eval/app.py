"""The evaluation job: plan the episodes, skip those already recorded, run the rest, derive the summary.

``evaluate`` returns the summary as a metrics dict; it logs through the logger it is given and writes only the run
directory. Policies are built from their Hydra ``_target_`` once per process (the main one, or each spawned worker).
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sim_eval.config import RunConfig
from sim_eval.devices import WorkerDevice, pin_worker, plan_worker_devices, visible_gpus
from sim_eval.envs.libero_env import EnvPerTask
from sim_eval.records import EPISODES_FILE, EpisodeLog, episode_key, read_records, utc_now, write_summary
from sim_eval.rollout import run_episode
from sim_eval.video import EpisodeVideo
from sim_eval.workers import run_in_workers

log = logging.getLogger("sim_eval")


def plan_episodes(run: RunConfig) -> list[tuple[int, int]]:
    """This shard's (task_id, episode_index) pairs: the full task-major list cut into ``count`` contiguous blocks,
    so a shard reuses one simulator per task and every pair lands in exactly one shard."""
    pairs = [(task, episode) for task in run.task_ids for episode in run.episode_indices]
    index, count = run.eval.shard.index, run.eval.shard.count
    return pairs[len(pairs) * index // count : len(pairs) * (index + 1) // count]


def pending_episodes(run: RunConfig, run_dir: Path) -> tuple[list[tuple[int, int]], int]:
    """Planned pairs without a record in ``run_dir`` (resume); errors are rerun only with ``eval.retry_errors``."""
    done = {
        record["key"]
        for record in read_records(run_dir / EPISODES_FILE)
        if record.get("error") is None or not run.eval.retry_errors
    }
    planned = plan_episodes(run)
    todo = [(t, e) for t, e in planned if episode_key(run.suite.name, t, e) not in done]
    return todo, len(planned) - len(todo)


def build_policy(policy_cfg: DictConfig | dict):
    """Instantiate the policy's ``_target_`` with every key but ``name`` (a label for records, not an argument)."""
    kwargs = OmegaConf.to_container(policy_cfg, resolve=True) if isinstance(policy_cfg, DictConfig) else policy_cfg
    kwargs = {k: v for k, v in kwargs.items() if k != "name"}
    return instantiate(kwargs, _convert_="all")


def run_meta(run: RunConfig) -> dict[str, Any]:
    """What every record of this run says about how it was run."""
    checkpoint = getattr(run.policy, "checkpoint", None)
    return {
        "policy": run.policy.name,
        **({"checkpoint": str(checkpoint)} if checkpoint is not None else {}),
        "cache_mode": run.policy.cache_mode,
        # eval.seed moves the flow-matching noise stream: the report tells a `full` control arm apart by it
        "seed": run.eval.seed,
        "protocol": {**dataclasses.asdict(run.protocol), "max_steps": run.max_steps},
        "shard": dataclasses.asdict(run.eval.shard),
    }


def crash_record(run: RunConfig, task_id: int, episode_index: int, error: dict[str, str]) -> dict[str, Any]:
    """The record of an episode that crashed outside the rollout loop (simulator start-up, a dead worker)."""
    suite = run.suite.name
    return {
        "key": episode_key(suite, task_id, episode_index),
        "suite": suite,
        "task_id": task_id,
        "episode_index": episode_index,
        "init_state_index": episode_index,
        **run_meta(run),
        "success": None,
        "steps": 0,
        "inferences": [],
        "error": error,
        "video": None,
        "finished_at": utc_now(),
    }


def env_kwargs(run: RunConfig) -> dict[str, Any]:
    """``LiberoEnv`` arguments (besides suite and task) that apply the run's protocol."""
    protocol = run.protocol
    return {
        "max_steps": run.max_steps,
        "env_seed": protocol.env_seed,
        "num_wait_steps": protocol.num_wait_steps,
        "wait_action": list(protocol.wait_action),
        "render_size": protocol.render_size,
        "model_image_size": protocol.model_image_size,
        # The policy schema says whether it needs simulator state (a property there, not a config key).
        "privileged": bool(getattr(run.policy, "privileged", False)),
    }


def policy_device(policy) -> str:
    """The torch device the policy's engine actually runs on ("-" for policies without one)."""
    return str(getattr(getattr(policy, "engine", None), "device", "-"))


class EpisodeRunner:
    """Runs episodes of one suite with one policy, keeping one simulator per task alive between episodes.

    ``device``: what this process was given (``sim_eval.devices.pin_worker``); every record carries it."""

    def __init__(self, run: RunConfig, policy, run_dir: Path, device: dict[str, Any] | None = None):
        self.run, self.policy, self.run_dir = run, policy, Path(run_dir)
        self.envs = EnvPerTask(run.suite.name, **env_kwargs(run))
        device = device or {"gpu": None, "egl_device": None, "gpu_name": None}
        self.meta = {**run_meta(run), "device": {**device, "policy": policy_device(policy)}}

    def __call__(self, task_id: int, episode_index: int) -> dict[str, Any]:
        suite = self.run.suite.name
        try:
            env = self.envs(task_id)
        except Exception as err:  # a simulator that cannot start is this episode's error, not a task failure
            error = {"type": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()}
            return crash_record(self.run, task_id, episode_index, error)
        video = None
        if self.run.eval.video != "none":
            video = EpisodeVideo(self.run_dir / "videos", fps=self.run.eval.video_fps)
        record = run_episode(
            env,
            self.policy,
            suite=suite,
            task_id=task_id,
            episode_index=episode_index,
            replan_steps=self.run.protocol.replan_steps,
            seed=self.run.eval.seed,
            lag_mae=self.run.eval.lag_mae,
            meta=self.meta,
            observer=video.observe(env) if video is not None else None,
        )
        record["video"] = None
        if video is not None:
            keep = self.run.eval.video == "all" or record["success"] is False
            outcome = "error" if record["error"] else ("success" if record["success"] else "failure")
            path = video.finish(f"{suite}_task{task_id:02d}_ep{episode_index:03d}_{outcome}", keep=keep)
            record["video"] = str(path.relative_to(self.run_dir)) if path is not None else None
        return record

    def close(self) -> None:
        self.envs.close()


def _episode_runner(run: RunConfig, policy_cfg: dict, run_dir: str, device: WorkerDevice) -> EpisodeRunner:
    """What a spawned worker runs: its own policy (built from the config, on its slot's device) and simulator
    (rendering on its slot's GPU)."""
    info = pin_worker(device)
    if "device" in policy_cfg:
        policy_cfg = {**policy_cfg, "device": device.policy}
    return EpisodeRunner(run, build_policy(policy_cfg), Path(run_dir), device=info)


def _run_workers(run: RunConfig, cfg: DictConfig, run_dir: Path, todo: list[tuple[int, int]]) -> Iterator[dict]:
    """Records from ``eval.num_workers`` spawned processes (``sim_eval.workers``); a worker that dies mid-episode
    becomes a ``WorkerDied`` error record for that episode."""

    def died(item: tuple[int, int], message: str) -> dict:
        return crash_record(run, *item, {"type": "WorkerDied", "message": message, "traceback": ""})

    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    gpus = visible_gpus(run.eval.gpus)
    plan = plan_worker_devices(run.eval.num_workers, gpus, str(policy_cfg.get("device", "auto")))
    if gpus:
        log.info("workers over GPUs %s: %s", gpus, ", ".join(f"{d.policy}/egl-gpu{d.gpu}" for d in plan))
    args = (run, policy_cfg, str(run_dir))
    return run_in_workers(_episode_runner, args, todo, run.eval.num_workers, died, slot_args=lambda k: (plan[k],))


def evaluate(run: RunConfig, cfg: DictConfig, run_dir: str | Path, logger, policy=None) -> dict[str, Any]:
    """Run every pending episode of the plan and return the summary derived from all records in ``run_dir``.

    ``policy`` is used as given in this process (tests, notebooks); otherwise it is built from ``cfg.policy``."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    todo, already = pending_episodes(run, run_dir)
    log.info("%s: %d episodes to run, %d already recorded in %s", run.suite.name, len(todo), already, run_dir)
    successes = finished = errors = 0
    bar = tqdm(total=len(todo), desc=f"{run.suite.name} {run.policy.name}:{run.policy.cache_mode}", unit="ep")
    with EpisodeLog(run_dir / EPISODES_FILE) as episodes:
        if run.eval.num_workers == 0:
            runner = EpisodeRunner(run, policy if policy is not None else build_policy(cfg.policy), run_dir)
            stream = (runner(task, episode) for task, episode in todo)
        else:
            runner, stream = None, _run_workers(run, cfg, run_dir, todo)
        try:
            for record in stream:
                episodes.append(record)
                logger.log_episode(record)
                if record.get("error") is not None:
                    errors += 1
                    log.warning("episode %s crashed: %s", record["key"], record["error"]["message"])
                else:
                    finished += 1
                    successes += bool(record["success"])
                rate = f"{successes / finished:.0%}" if finished else "-"
                bar.set_postfix(success=f"{successes}/{finished} ({rate})", errors=errors)
                bar.update(1)
        finally:
            bar.close()
            if runner is not None:
                runner.close()
    records = read_records(run_dir / EPISODES_FILE)
    summary = write_summary(run_dir, records)
    logger.finish(summary, records)
    return summary


def closing_summary(run: RunConfig, run_dir: Path) -> str:
    """What a finished run prints: which model and mode, success with its Wilson interval, latency per inference kind,
    how often the prefix was recomputed, where the records are and the next command. Derived from the records."""
    from sim_eval.analysis.stats import latency_by_kind, refresh_stats, wilson_interval
    from sim_eval.records import dedupe, summarize

    records = dedupe(read_records(run_dir / EPISODES_FILE))
    overall = summarize(records)["overall"]
    model = getattr(run.policy, "checkpoint", None)
    lines = [f"{run.suite.name} {run.policy.name}:{run.policy.cache_mode}" + (f" ({model})" if model else "")]
    n, k = overall["finished"], overall["successes"]
    if n:
        lo, hi = wilson_interval(k, n)
        lines.append(f"  success {k}/{n} = {k / n:.0%} (95% CI {lo:.0%}-{hi:.0%}), {overall['errors']} crashed")
    else:
        lines.append(f"  no episode finished ({overall['errors']} crashed)")
    latency = latency_by_kind(records)
    kinds = [f"{kind} {latency[kind]['p50']:.1f} ms" for kind in ("full", "cached", "forced") if latency[kind]["n"]]
    if kinds:
        refresh = refresh_stats(records)
        lines.append(f"  latency p50: {', '.join(kinds)}; full prefix on {refresh['full_fraction']:.0%} of inferences")
    lines.append(f"  records: {run_dir / EPISODES_FILE}; report: python -m sim_eval.report {run_dir}")
    return "\n".join(lines)

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
from sim_eval.devices import (
    WorkerDevice,
    cpu_info,
    cuda_memory_mib,
    pin_worker,
    plan_worker_devices,
    visible_gpus,
)
from sim_eval.envs.libero_env import EnvPerTask
from sim_eval.envs.simulator import warn_if_not_reference
from sim_eval.manifest import check_resume, identity, matches, read_manifest, run_info, write_manifest
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


def pending_episodes(
    run: RunConfig, run_dir: Path, ident: dict[str, Any] | None = None
) -> tuple[list[tuple[int, int]], int]:
    """Planned pairs without a record of this identity in ``run_dir`` (resume); errors are rerun only with
    ``eval.retry_errors`` (the default). Records of other settings (kept beside a forced resume) count as not done."""
    ident = identity(run) if ident is None else ident
    done = {
        record["key"]
        for record in read_records(run_dir / EPISODES_FILE)
        if (record.get("error") is None or not run.eval.retry_errors) and matches(record, ident)
    }
    planned = plan_episodes(run)
    todo = [(t, e) for t, e in planned if episode_key(run.suite.name, t, e) not in done]
    return todo, len(planned) - len(todo)


def build_policy(policy_cfg: DictConfig | dict):
    """Instantiate the policy's ``_target_`` with every key but ``name`` (a label for records, not an argument)."""
    kwargs = OmegaConf.to_container(policy_cfg, resolve=True) if isinstance(policy_cfg, DictConfig) else policy_cfg
    kwargs = {k: v for k, v in kwargs.items() if k != "name"}
    return instantiate(kwargs, _convert_="all")


def run_meta(run: RunConfig, ident: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every record of this run says about how it was run: the headline settings, and the whole identity
    (``sim_eval.manifest``) with the versions and device beside it, so that records of different models or
    settings can never be pooled unnoticed."""
    checkpoint = getattr(run.policy, "checkpoint", None)
    return {
        "policy": run.policy.name,
        **({"checkpoint": str(checkpoint)} if checkpoint is not None else {}),
        "cache_mode": run.policy.cache_mode,
        # eval.seed moves the flow-matching noise stream: the report tells a `full` control arm apart by it
        "seed": run.eval.seed,
        # the suite as LIBERO-PRO names it: which base suite it perturbs, how, and whose step limit it ran under
        "base_suite": run.suite.base_suite,
        "perturbation": run.suite.perturbation,
        "protocol": {
            **dataclasses.asdict(run.protocol),
            "max_steps": run.max_steps,
            "max_steps_from": "eval.max_steps" if run.eval.max_steps else run.step_limit_suite,
        },
        "shard": dataclasses.asdict(run.eval.shard),
        "identity": identity(run) if ident is None else ident,
        "info": run_info(run),
    }


def crash_record(
    run: RunConfig, task_id: int, episode_index: int, error: dict[str, str], meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The record of an episode that crashed outside the rollout loop (simulator start-up, a dead worker)."""
    suite = run.suite.name
    return {
        "key": episode_key(suite, task_id, episode_index),
        "suite": suite,
        "task_id": task_id,
        "episode_index": episode_index,
        "init_state_index": episode_index,
        **(meta if meta is not None else run_meta(run)),
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
        "texture_colorspace": run.sim.texture_colorspace,
        # The policy schema says whether it needs simulator state (a property there, not a config key).
        "privileged": bool(getattr(run.policy, "privileged", False)),
    }


def policy_device(policy) -> str:
    """The torch device the policy's engine actually runs on ("-" for policies without one; a batched server's
    client names the server's)."""
    if isinstance(getattr(policy, "device", None), str):
        return policy.device
    return str(getattr(getattr(policy, "engine", None), "device", "-"))


class EpisodeRunner:
    """Runs episodes of one suite with one policy, keeping one simulator per task alive between episodes.

    ``meta``: what every record says about the run (``run_meta``, or the parent's with the checkpoint hashed once);
    ``device``: what this process was given (``sim_eval.devices.pin_worker``); every record carries both."""

    def __init__(
        self,
        run: RunConfig,
        policy,
        run_dir: Path,
        meta: dict[str, Any] | None = None,
        device: dict[str, Any] | None = None,
    ):
        self.run, self.policy, self.run_dir = run, policy, Path(run_dir)
        self.envs = EnvPerTask(run.suite.name, **env_kwargs(run))
        device = device or {"gpu": None, "egl_device": None, "gpu_name": None}
        meta = run_meta(run) if meta is None else meta
        self.meta = {**meta, "device": {**device, "policy": policy_device(policy), "cpu": cpu_info()}}

    def __call__(self, task_id: int, episode_index: int) -> dict[str, Any]:
        suite = self.run.suite.name
        try:
            env = self.envs(task_id)
        except Exception as err:  # a simulator that cannot start is this episode's error, not a task failure
            error = {"type": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()}
            return crash_record(self.run, task_id, episode_index, error, self.meta)
        if "renderer" not in self.meta["device"]:  # one GL implementation per process: ask the first env
            self.meta["device"]["renderer"] = env.gl_renderer() if hasattr(env, "gl_renderer") else None
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
            render_policy_frames_only=video is None and getattr(env, "cameras", False),
        )
        memory = cuda_memory_mib(getattr(getattr(self.policy, "engine", None), "device", None))
        if memory is not None:
            record["gpu_mem_mib"] = memory
        record["video"] = None
        if video is not None:
            keep = self.run.eval.video == "all" or record["success"] is False
            outcome = "error" if record["error"] else ("success" if record["success"] else "failure")
            path = video.finish(f"{suite}_task{task_id:02d}_ep{episode_index:03d}_{outcome}", keep=keep)
            record["video"] = str(path.relative_to(self.run_dir)) if path is not None else None
        return record

    def close(self) -> None:
        self.envs.close()


def _policy_on(policy_cfg: dict, device: WorkerDevice) -> tuple[Any, dict[str, Any]]:
    """Pin this process to ``device`` (rendering, before any simulator exists) and build the policy on its torch
    device; returns the policy and what records say about the device."""
    info = pin_worker(device)
    if "device" in policy_cfg:
        policy_cfg = {**policy_cfg, "device": device.policy}
    return build_policy(policy_cfg), info


def _episode_runner(
    run: RunConfig, policy_cfg: dict, run_dir: str, meta: dict[str, Any], device: WorkerDevice
) -> EpisodeRunner:
    """What a spawned worker runs: its own policy (built from the config, on its slot's device) and simulator
    (rendering on its slot's GPU). ``meta`` comes from the parent, which has hashed the checkpoint once for all
    workers."""
    policy, info = _policy_on(policy_cfg, device)
    return EpisodeRunner(run, policy, Path(run_dir), meta, device=info)


def _remote_episode_runner(
    run: RunConfig, run_dir: str, meta: dict[str, Any], server_device: str, device: WorkerDevice, conn
) -> EpisodeRunner:
    """A worker under ``eval.server=batched``: its simulator (rendering on its slot's GPU) and the server's client
    for slot ``conn``."""
    from sim_eval.server import RemotePolicy

    return EpisodeRunner(run, RemotePolicy(conn, server_device), Path(run_dir), meta, device=pin_worker(device))


def _served(server, records: Iterator[dict]) -> Iterator[dict]:
    try:
        yield from records
    finally:
        server.stop()


def _run_workers(
    run: RunConfig, cfg: DictConfig, run_dir: Path, todo: list[tuple[int, int]], meta: dict[str, Any]
) -> Iterator[dict]:
    """Records from ``eval.num_workers`` spawned processes (``sim_eval.workers``); a worker that dies mid-episode
    becomes a ``WorkerDied`` error record for that episode."""

    def died(item: tuple[int, int], message: str) -> dict:
        return crash_record(run, *item, {"type": "WorkerDied", "message": message, "traceback": ""}, meta)

    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    gpus = visible_gpus(run.eval.gpus)
    plan = plan_worker_devices(run.eval.num_workers, gpus, str(policy_cfg.get("device", "auto")))
    if gpus:
        log.info("workers over GPUs %s: %s", gpus, ", ".join(f"{d.policy}/egl-gpu{d.gpu}" for d in plan))
    if run.eval.server == "none":
        args = (run, policy_cfg, str(run_dir), meta)
        return run_in_workers(_episode_runner, args, todo, run.eval.num_workers, died, slot_args=lambda k: (plan[k],))
    from sim_eval.server import ServerProcess

    # one engine for every worker, on slot 0's device; the workers keep their own GPUs for rendering
    ev = run.eval
    server = ServerProcess(
        _policy_on, (policy_cfg, plan[0]), ev.num_workers, ev.server_max_batch, ev.server_max_wait_ms
    )
    try:
        ready = server.wait_ready()
        log.info("batched policy server on %s (batches up to %d, %.1f ms wait)", ready["policy"],
                 ev.server_max_batch, ev.server_max_wait_ms)  # fmt: skip
        args = (run, str(run_dir), meta, ready["policy"])
        slot = lambda k: (plan[k], server.clients[k])  # noqa: E731
        return _served(server, run_in_workers(_remote_episode_runner, args, todo, ev.num_workers, died, slot))
    except BaseException:
        server.stop()
        raise


def evaluate(run: RunConfig, cfg: DictConfig, run_dir: str | Path, logger, policy=None) -> dict[str, Any]:
    """Run every pending episode of the plan and return the summary derived from all records in ``run_dir``.

    ``policy`` is used as given in this process (tests, notebooks); otherwise it is built from ``cfg.policy``."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    warn_if_not_reference(log)
    ident = identity(run)
    check_resume(run_dir, ident, run.eval.force_resume)
    meta = run_meta(run, ident)
    todo, already = pending_episodes(run, run_dir, ident)
    log.info("%s: %d episodes to run, %d already recorded in %s", run.suite.name, len(todo), already, run_dir)
    # The manifest goes down with the first record: a run that ends before any leaves the dir free for any settings.
    manifest_due = read_manifest(run_dir) is None or run.eval.force_resume
    successes = finished = errors = 0
    # The policy is built (here, or by every worker) before the log or the progress bar appear: a run that cannot
    # start ends with its one error line and leaves no records file.
    if run.eval.num_workers == 0:
        device = None
        if policy is None:  # this process is the only worker: the same GPU rule as slot 0 of a worker pool
            policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
            slot = plan_worker_devices(0, visible_gpus(run.eval.gpus), str(policy_cfg.get("device", "auto")))[0]
            policy, device = _policy_on(policy_cfg, slot)
        runner = EpisodeRunner(run, policy, run_dir, meta, device=device)
        stream = (runner(task, episode) for task, episode in todo)
    else:
        runner, stream = None, _run_workers(run, cfg, run_dir, todo, meta)
    bar = tqdm(total=len(todo), desc=f"{run.suite.name} {run.policy.name}:{run.policy.cache_mode}", unit="ep")
    with EpisodeLog(run_dir / EPISODES_FILE) as episodes:
        try:
            for record in stream:
                if manifest_due:
                    write_manifest(run_dir, ident, meta["info"])
                    manifest_due = False
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
    # Only this identity's records: those of other settings that a forced resume kept beside them are not its results.
    records = [r for r in read_records(run_dir / EPISODES_FILE) if matches(r, ident)]
    summary = write_summary(run_dir, records, identity=ident)
    logger.finish(summary, records)
    return summary


def crash_failure(records: list[dict[str, Any]]) -> str | None:
    """What a run in which episodes crashed and none finished says (a broken simulator or policy set-up: every
    episode would crash the same way, so it must not end as if it had run), from its deduplicated records; None
    when an episode finished or none crashed."""
    errors = [r for r in records if r.get("error") is not None]
    if not errors or len(errors) < len(records):
        return None
    error = errors[0]["error"]
    first = f"{error.get('type')}: {str(error.get('message', '')).splitlines()[0] if error.get('message') else ''}"
    return f"every episode crashed ({len(errors)}), none finished; the first: {first[:200]}"


def closing_summary(run: RunConfig, run_dir: Path) -> str:
    """What a finished run prints: which model and mode, success with its Wilson interval, latency per inference kind,
    how often the prefix was recomputed, where the records are and the next command. Derived from the records of
    this run's identity."""
    from sim_eval.analysis.stats import latency_by_kind, refresh_stats
    from sim_eval.callbacks import latency_text, outcome_text
    from sim_eval.records import dedupe, summarize

    ident = identity(run)
    records = dedupe(r for r in read_records(run_dir / EPISODES_FILE) if matches(r, ident))
    model = getattr(run.policy, "checkpoint", None)
    lines = [f"{run.suite.name} {run.policy.name}:{run.policy.cache_mode}" + (f" ({model})" if model else "")]
    lines.append("  " + outcome_text(summarize(records)))
    # a policy without a prefix cache (scripted, constant) has no full/cached latency to tell
    latency = latency_text(latency_by_kind(records), refresh_stats(records)) if run.policy.cache_mode != "-" else None
    if latency:
        lines.append("  " + latency)
    lines.append(f"  records: {run_dir / EPISODES_FILE}; report: python -m sim_eval.report {run_dir}")
    return "\n".join(lines)

"""The evaluation job: plan the episodes, skip those already recorded, run the rest (in this process or in spawned
workers, ``sim_eval.runtime.workers``; under ``eval.server=batched`` against one policy server), derive the summary.

``evaluate`` returns the summary as a metrics dict; it logs through the logger it is given and writes only the run
directory. Policies are built from their Hydra ``_target_`` once per process (``runtime.runner``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sim_eval.analysis.summary import write_summary
from sim_eval.checkpoints import unseen_suite_warning
from sim_eval.config import Pi05PolicyConfig, RunConfig
from sim_eval.envs.simulator import warn_if_not_reference
from sim_eval.records.episodes import EPISODES_FILE, EpisodeLog, episode_key, read_records
from sim_eval.records.manifest import check_resume, identity, matches, read_manifest, write_manifest
from sim_eval.runtime.devices import plan_worker_devices, visible_gpus
from sim_eval.runtime.runner import (
    EpisodeRunner,
    crash_record,
    episode_runner,
    policy_on,
    remote_episode_runner,
    run_meta,
)
from sim_eval.runtime.workers import run_in_workers

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


def _served(server, records: Iterator[dict]) -> Iterator[dict]:
    try:
        yield from records
    finally:
        server.stop()


def _run_workers(
    run: RunConfig, cfg: DictConfig, run_dir: Path, todo: list[tuple[int, int]], meta: dict[str, Any]
) -> Iterator[dict]:
    """Records from ``eval.num_workers`` spawned processes (``sim_eval.runtime.workers``); a worker that dies
    mid-episode becomes a ``WorkerDied`` error record for that episode."""

    def died(item: tuple[int, int], message: str) -> dict:
        return crash_record(run, *item, {"type": "WorkerDied", "message": message, "traceback": ""}, meta)

    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    gpus = visible_gpus(run.eval.gpus)
    plan = plan_worker_devices(run.eval.num_workers, gpus, str(policy_cfg.get("device", "auto")))
    if gpus:
        log.info("workers over GPUs %s: %s", gpus, ", ".join(f"{d.policy}/egl-gpu{d.gpu}" for d in plan))
    if run.eval.server == "none":
        args = (run, policy_cfg, str(run_dir), meta)
        return run_in_workers(episode_runner, args, todo, run.eval.num_workers, died, slot_args=lambda k: (plan[k],))
    from sim_eval.runtime.server import ServerProcess

    # one engine for every worker, on slot 0's device; the workers keep their own GPUs for rendering
    ev = run.eval
    server = ServerProcess(policy_on, (policy_cfg, plan[0]), ev.num_workers, ev.server_max_batch, ev.server_max_wait_ms)
    try:
        ready = server.wait_ready()
        log.info("batched policy server on %s (batches up to %d, %.1f ms wait; %d graphs captured in %.1f s)",
                 ready["policy"], ev.server_max_batch, ev.server_max_wait_ms, ready["warmup"]["graphs"],
                 ready["warmup"]["s"])  # fmt: skip
        args = (run, str(run_dir), meta, ready)
        slot = lambda k: (plan[k], server.clients[k], ready["frames"][k])  # noqa: E731
        return _served(server, run_in_workers(remote_episode_runner, args, todo, ev.num_workers, died, slot))
    except BaseException:
        server.stop()
        raise


def evaluate(run: RunConfig, cfg: DictConfig, run_dir: str | Path, logger, policy=None) -> dict[str, Any]:
    """Run every pending episode of the plan and return the summary derived from all records in ``run_dir``.

    ``policy`` is used as given in this process (tests, notebooks); otherwise it is built from ``cfg.policy``."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    warn_if_not_reference(log)
    if isinstance(run.policy, Pi05PolicyConfig):  # its checkpoint may say which suites it knows (training.json)
        unseen = unseen_suite_warning(run.policy.checkpoint, run.suite.name, run.suite.base_suite)
        if unseen:
            log.warning(unseen)
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
            policy, device = policy_on(policy_cfg, slot)
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

"""The evaluation job: plan the episodes, skip those already recorded, run the rest, derive the summary.

``evaluate`` returns the summary as a metrics dict; it logs through the logger it is given and writes only the run
directory. Policies are built from their Hydra ``_target_`` once per process (the main one, or each spawned worker).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import queue
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sim_eval.config import RunConfig
from sim_eval.envs.libero_env import EnvPerTask
from sim_eval.records import EPISODES_FILE, EpisodeLog, episode_key, read_records, utc_now, write_summary
from sim_eval.rollout import run_episode
from sim_eval.video import EpisodeVideo

log = logging.getLogger("sim_eval")


def plan_episodes(run: RunConfig) -> list[tuple[int, int]]:
    """This shard's (task_id, episode_index) pairs: the full task-major list cut into ``count`` contiguous blocks,
    so a shard reuses one simulator per task and every pair lands in exactly one shard."""
    pairs = [(task, episode) for task in run.task_ids for episode in range(run.episodes_per_task)]
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
    return {
        "policy": run.policy.name,
        "cache_mode": run.policy.cache_mode,
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


class EpisodeRunner:
    """Runs episodes of one suite with one policy, keeping one simulator per task alive between episodes."""

    def __init__(self, run: RunConfig, policy, run_dir: Path):
        self.run, self.policy, self.run_dir = run, policy, Path(run_dir)
        self.envs = EnvPerTask(run.suite.name, **env_kwargs(run))
        self.meta = run_meta(run)

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


def _worker_main(run: RunConfig, policy_cfg: dict, run_dir: str, todo: mp.Queue, results: mp.Queue, worker: int):
    """A spawned worker: its own policy and simulator; pulls episodes until the sentinel, reports start and record."""
    try:
        runner = EpisodeRunner(run, build_policy(policy_cfg), Path(run_dir))
    except Exception:  # the policy cannot be built here: no episode can run, so the parent stops the evaluation
        results.put(("fatal", worker, traceback.format_exc()))
        return
    try:
        while (item := todo.get()) is not None:
            results.put(("start", worker, item))
            results.put(("record", worker, runner(*item)))
    finally:
        runner.close()
        results.put(("done", worker, None))


def _run_workers(run: RunConfig, cfg: DictConfig, run_dir: Path, todo: list[tuple[int, int]]) -> Iterator[dict]:
    """Yield records from ``eval.num_workers`` spawned processes. A worker that dies mid-episode (segfault, OOM kill)
    yields an error record for its episode in flight and is replaced, so no planned episode is silently lost; a
    worker that cannot build its policy stops the evaluation."""
    ctx = mp.get_context("spawn")  # forked children of a process that rendered hang in EGL
    work, results = ctx.Queue(), ctx.Queue()
    for item in todo:
        work.put(item)
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    n_workers = min(run.eval.num_workers, len(todo))
    for _ in range(n_workers):
        work.put(None)
    procs: dict[int, mp.Process] = {}
    in_flight: dict[int, tuple[int, int] | None] = {}

    def start(worker: int) -> None:
        args = (run, policy_cfg, str(run_dir), work, results, worker)
        proc = ctx.Process(target=_worker_main, args=args, daemon=True)
        proc.start()
        procs[worker], in_flight[worker] = proc, None

    for worker in range(n_workers):
        start(worker)
    next_id, done = n_workers, set()
    try:
        while len(done) < len(procs):
            try:
                kind, worker, payload = results.get(timeout=1.0)
            except queue.Empty:
                # Only an empty queue proves a dead worker said nothing more: its last messages precede its exit.
                for worker, proc in list(procs.items()):
                    if worker not in done and proc.exitcode is not None:
                        done.add(worker)
                        if in_flight[worker] is not None:
                            message = f"worker process exited with code {proc.exitcode} during this episode"
                            error = {"type": "WorkerDied", "message": message, "traceback": ""}
                            yield crash_record(run, *in_flight[worker], error)
                        start(next_id)  # the dead worker never took its sentinel: the replacement will
                        next_id += 1
                continue
            if kind == "fatal":
                raise RuntimeError(f"worker {worker} could not build the policy:\n{payload}")
            if kind == "start":
                in_flight[worker] = tuple(payload)
            elif kind == "record":
                in_flight[worker] = None
                yield payload
            elif kind == "done":
                done.add(worker)
    finally:
        for proc in procs.values():  # all done after a normal run; after a fatal error, stop the rest now
            if len(done) < len(procs):
                proc.terminate()
            proc.join(timeout=30)


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

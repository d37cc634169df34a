"""Experiment loggers the evaluator talks to: ``NullLogger`` and ``WandbLogger``, built by ``build_logger`` from the
``logger`` config group (``mode: online | offline | disabled``, ``project``, ``entity``, ``dir``).

Interface (what ``sim_eval.runtime.job`` calls, in this order)::

    start(config: dict, name: str, group: str, run_dir: str)   # once per Hydra job
    log_episode(record: dict)                                  # after each finished episode
    finish(metrics: dict, records: list[dict])                 # once, with the summary and every record of the job

One wandb run per Hydra job: ``group`` is the sweep dir, ``name`` the job's overrides, ``config`` the resolved config.
At ``finish`` the run summary gets the headline numbers of ``sim_eval.analysis.stats.headline`` (success with Wilson
bounds, latency per kind, refresh fraction, control rate, pixel MAE, shadow cosine), plus a table with one row per
episode and the videos of cliff episodes by file path. Paired numbers (cliffs, rescues, McNemar p, Δ, excess cliffs
against a control arm) come from ``sim_eval.analysis.pairs`` over the records of the whole sweep dir, as the report
computes them: a job pairs against whatever its baseline has recorded when it ends, and ``log_sweep`` (called when
the sweep ends, ``sim_eval.callbacks``) logs one more run, ``sweep``, with every group's complete paired numbers,
whatever order the jobs ran or finished in.

Logging must never stop an evaluation: if wandb raises at any point the logger warns once and goes inert.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sim_eval.analysis.pairs import labels, paired_numbers, sweep_groups
from sim_eval.analysis.runs import Group, NoEpisodesError, baseline_of
from sim_eval.analysis.stats import (
    Pairing,
    headline,
    inference_kind,
    pair_with_baseline,
    record_seed,
    shadow_episode_metrics,
)
from sim_eval.records.episodes import arm_mode, dedupe

log = logging.getLogger("sim_eval.runtime.loggers")

MODES = ("online", "offline", "disabled")
TABLE_COLUMNS = [
    "key", "suite", "task_id", "episode_index", "task_language", "policy", "cache_mode", "success", "error", "steps",
    "wall_s", "inferences", "full", "cached", "forced", "infer_ms_mean", "cos_min", "paired_outcome", "video",
]  # fmt: skip


class NullLogger:
    """Logs nothing (``logger.mode=disabled``)."""

    def start(self, config: dict[str, Any], name: str, group: str, run_dir: str) -> None:
        pass

    def log_episode(self, record: dict[str, Any]) -> None:
        pass

    def finish(self, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
        pass


def build_logger(
    mode: str = "disabled", project: str = "sim_eval", entity: str | None = None, dir: str | None = None
) -> NullLogger | WandbLogger:
    """The logger for ``logger.mode``; ``dir`` is where wandb writes its files (``None`` = the job's run dir)."""
    if mode not in MODES:
        raise ValueError(f"logger.mode={mode!r}: allowed are {', '.join(MODES)}")
    if mode == "disabled":
        return NullLogger()
    return WandbLogger(mode=mode, project=project, entity=entity, dir=dir)


def job_group(groups: list[Group], record: dict[str, Any]) -> Group | None:
    """The group (policy, arm mode, seed) a job's record belongs to."""
    ident = (str(record.get("policy")), arm_mode(record), record_seed(record))
    return next((g for g in groups if (g.policy, g.mode, g.seed) == ident), None)


def flat_paired(numbers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{label: {name: value}}`` as wandb summary keys ``<label>/<name>``."""
    return {f"{label}/{name}": value for label, values in numbers.items() for name, value in values.items()}


def log_sweep(logger_cfg: dict[str, Any], sweep_dir: str | Path) -> dict[str, Any] | None:
    """One wandb run (``job_type=sweep``, in the sweep's group) whose summary holds every group's paired numbers
    (``flat_paired(analysis.pairs.paired_numbers)``): the report's numbers, once every job has ended. Returns what
    was logged; None when logging is off or there is nothing to pair. Warns and returns None if anything fails."""
    if logger_cfg.get("mode", "disabled") == "disabled":
        return None
    try:
        numbers = flat_paired(paired_numbers(sweep_groups(sweep_dir)))
    except (NoEpisodesError, ValueError) as exc:  # nothing recorded, or records report refuses to pool
        log.warning("wandb: no paired numbers for the sweep %s (%s)", sweep_dir, exc)
        return None
    if not numbers:
        return None
    try:
        import wandb

        wandb_dir = logger_cfg.get("dir") or str(sweep_dir)
        os.makedirs(wandb_dir, exist_ok=True)
        run = wandb.init(
            project=logger_cfg.get("project", "sim_eval"), entity=logger_cfg.get("entity"), dir=wandb_dir,
            mode=logger_cfg["mode"], name="sweep", group=str(sweep_dir), job_type="sweep", reinit="finish_previous",
        )  # fmt: skip
        run.summary.update(numbers)
        run.finish()
    except Exception as exc:  # logging must never turn a finished sweep into a failure
        log.warning("wandb logging of the sweep's paired numbers failed (%s: %s)", type(exc).__name__, exc)
        return None
    return numbers


def episode_row(record: dict[str, Any], paired_outcome: str | None = None) -> list[Any]:
    infs = record.get("inferences") or []
    kinds = [inference_kind(i) for i in infs]
    times = [float(i["infer_ms"]) for i in infs if i.get("infer_ms") is not None]
    shadow = shadow_episode_metrics(record)
    error = record.get("error")
    return [
        record.get("key"), record.get("suite"), record.get("task_id"), record.get("episode_index"),
        record.get("task_language"), record.get("policy"), record.get("cache_mode"),
        None if record.get("success") is None else bool(record["success"]),
        (error.get("type") if isinstance(error, dict) else str(error)) if error is not None else None,
        record.get("steps"), record.get("wall_s"), len(infs), kinds.count("full"), kinds.count("cached"),
        kinds.count("forced"), sum(times) / len(times) if times else None, shadow["cos_min"] if shadow else None,
        paired_outcome, record.get("video"),
    ]  # fmt: skip


class WandbLogger:
    """One wandb run per Hydra job (see the module docstring). Warns once and goes inert if wandb raises."""

    def __init__(self, mode: str, project: str, entity: str | None = None, dir: str | None = None):
        self.mode, self.project, self.entity, self.dir = mode, project, entity, dir
        self._run = None
        self._broken = False
        self._episodes = self._finished = self._successes = 0
        self._group = self._run_dir = None

    @property
    def active(self) -> bool:
        return self._run is not None and not self._broken

    def _fail(self, where: str, exc: BaseException) -> None:
        if not self._broken:
            log.warning(
                "wandb logging failed in %s (%s: %s); the evaluation continues without wandb", where,
                type(exc).__name__, exc,
            )  # fmt: skip
        self._broken = True

    def start(self, config: dict[str, Any], name: str, group: str, run_dir: str) -> None:
        self._group, self._run_dir = group, run_dir
        if self._broken:
            return
        try:
            import wandb

            wandb_dir = self.dir or run_dir
            os.makedirs(wandb_dir, exist_ok=True)
            self._run = wandb.init(
                project=self.project,
                entity=self.entity,
                dir=wandb_dir,
                mode=self.mode,
                name=name,
                group=group,
                job_type="eval",
                config=config,
                reinit="finish_previous",  # a Hydra multirun runs its jobs in one process
            )
        except Exception as exc:  # any wandb failure must leave the evaluation running
            self._fail("start", exc)

    def log_episode(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        try:
            self._episodes += 1
            row: dict[str, Any] = {
                "episode/steps": record.get("steps"),
                "episode/error": record.get("error") is not None,
            }
            if record.get("error") is None:
                self._finished += 1
                self._successes += record.get("success") is True
                row["episode/success"] = int(record.get("success") is True)
            row["running/success_rate"] = self._successes / self._finished if self._finished else None
            row["running/episodes"] = self._episodes
            times = [float(i["infer_ms"]) for i in record.get("inferences") or [] if i.get("infer_ms") is not None]
            if times:
                row["episode/infer_ms_mean"] = sum(times) / len(times)
            self._run.log({k: v for k, v in row.items() if v is not None}, step=self._episodes)
        except Exception as exc:
            self._fail("log_episode", exc)

    def finish(self, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
        if not self.active:
            return
        try:
            import wandb

            records = dedupe(records)
            numbers = headline(records)
            pairing, baseline = self._paired(records, numbers)
            self._run.summary.update({k: v for k, v in numbers.items() if v is not None})
            self._run.summary["summary"] = metrics
            outcome = {}
            if pairing is not None:
                for name in ("both_success", "cliffs", "rescues", "both_fail"):
                    outcome.update(dict.fromkeys(getattr(pairing, name), name))
            table = wandb.Table(columns=TABLE_COLUMNS, data=[episode_row(r, outcome.get(r["key"])) for r in records])
            # after the last per-episode step: wandb steps only move forward
            self._run.log({"episodes": table}, step=self._episodes + 1)
            if pairing is not None:  # the group may span shards: this job's cliffs only
                mine = {r["key"] for r in records}
                self._log_cliff_videos(wandb, [k for k in pairing.cliffs if k in mine], records, baseline)
            self._run.finish()
            self._run = None
        except Exception as exc:
            self._fail("finish", exc)

    def _paired(self, records: list[dict], numbers: dict[str, Any]) -> tuple[Pairing | None, list[dict]]:
        """This job's group paired as the report pairs it, over the records of the whole sweep dir (a job of any
        order pairs with whatever its baseline has recorded so far): adds the group's ``paired_numbers`` to
        ``numbers`` and returns the pairing and the baseline's records (empty without a baseline)."""
        if not records or not self._group:
            return None, []
        try:
            groups = sweep_groups(self._group)
        except (NoEpisodesError, ValueError) as exc:  # records report would refuse to pool: say so, log the rest
            log.warning("wandb: no paired numbers for %s (%s)", self._run_dir, exc)
            return None, []
        group = job_group(groups, records[0])
        if group is None:
            return None, []
        numbers.update(paired_numbers(groups)[labels(groups)[id(group)]])
        base = baseline_of(group, groups)
        if base is None:
            return None, []
        return pair_with_baseline(base.records, group.records), base.records

    def _log_cliff_videos(self, wandb: Any, cliffs: list[str], records: list[dict], baseline: list[dict]) -> None:
        """Each cliff episode's mode video and its baseline's, where recorded, by file path (wandb copies the file)."""
        by_key = {r["key"]: r for r in records}
        base_by_key = {r["key"]: r for r in baseline}
        videos = {}
        for key in cliffs:
            for side, record, root in (
                ("mode", by_key.get(key), Path(self._run_dir)),
                ("full", base_by_key.get(key), (base_by_key.get(key) or {}).get("_run_dir")),
            ):
                if record and record.get("video") and root is not None:
                    path = Path(root) / record["video"]
                    if path.is_file():
                        videos[f"cliff_videos/{key}/{side}"] = wandb.Video(str(path), format="mp4")
        if videos:
            self._run.log(videos, step=self._episodes + 1)

"""Hydra callbacks: a sweep ends with one line per job (its settings, success with the Wilson interval, latency per
inference kind: the end-of-run text of ``sim_eval.analysis.summary``) and the report command, read from the jobs'
``summary.json`` files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sim_eval.analysis.summary import SUMMARY_FILE, crash_failure, latency_text, outcome_text
from sim_eval.records.episodes import EPISODES_FILE, dedupe, read_records

# jobs of the last sweep that ended without a finished episode ("job N: why"), read by ``sim_eval.__main__``
FAILED_JOBS: list[str] = []


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def multirun_summary(sweep_dir: str | Path, failed: list[str] | None = None) -> str:
    """The sweep's closing lines; ``failed`` gets one entry per job that finished no episode."""
    failed = [] if failed is None else failed
    sweep_dir = Path(sweep_dir)
    jobs = _job_dirs(sweep_dir) if sweep_dir.is_dir() else []
    lines = [f"multirun: {len(jobs)} jobs in {sweep_dir}"]
    for job in jobs:
        crashed = crash_failure(dedupe(read_records(job / EPISODES_FILE)))
        if crashed or not (job / SUMMARY_FILE).is_file():
            failed.append(f"job {job.name}: {crashed or 'ended before it finished'} ({job})")
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else None
        label = f"  job {job.name} ({' '.join(overrides or []) or 'defaults'}): "
        if not (job / SUMMARY_FILE).is_file():
            lines.append(label + "no summary (the job ended before it finished)")
            continue
        summary = json.loads((job / SUMMARY_FILE).read_text())
        cached = "policy.cache" in (summary.get("identity") or {"policy.cache": None})  # none for scripted, constant
        latency = latency_text(summary.get("latency_ms") or {}, summary.get("refresh") or {}) if cached else None
        lines.append(label + outcome_text(summary) + (f"; {latency}" if latency else ""))
    lines.append(f"  report: python -m sim_eval.report {sweep_dir}")
    return "\n".join(lines)


class MultirunSummary(Callback):
    """Prints ``multirun_summary`` once every job of a sweep has returned (on the submitting machine)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        FAILED_JOBS.clear()
        print(multirun_summary(config.hydra.sweep.dir, FAILED_JOBS), flush=True)
        logger_cfg = OmegaConf.to_container(config.logger, resolve=True) if "logger" in config else {}
        if logger_cfg.get("mode", "disabled") != "disabled":  # every job has ended: the complete paired numbers
            from sim_eval.runtime.loggers import log_sweep

            log_sweep(logger_cfg, config.hydra.sweep.dir)

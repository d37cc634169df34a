"""What a run or a sweep says when it ends, derived from its records: ``summary.json`` (``summarize`` per task, suite
and overall, with latency per inference kind and the refresh share), the end-of-run lines (``closing_summary``,
``outcome_text``, ``latency_text``; a sweep's lines in ``sim_eval.callbacks``) and whether every episode crashed
(``crash_failure``)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sim_eval.analysis.stats import KINDS, count_outcomes, latency_by_kind, refresh_stats, wilson_interval
from sim_eval.config import RunConfig
from sim_eval.records.episodes import EPISODES_FILE, dedupe, read_records
from sim_eval.records.manifest import identity, matches

SUMMARY_FILE = "summary.json"


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per-task, per-suite and overall success derived from episode records. Crashed episodes are counted under
    ``errors`` and left out of ``success_rate`` (None when no episode finished)."""
    records = dedupe(records)
    by_suite: dict[str, list] = defaultdict(list)
    by_task: dict[tuple[str, int], list] = defaultdict(list)
    for record in records:
        by_suite[record["suite"]].append(record)
        by_task[(record["suite"], record["task_id"])].append(record)
    suites = {}
    for suite in sorted(by_suite):
        tasks = {}
        for (task_suite, task_id), group in sorted(by_task.items()):
            if task_suite == suite:
                tasks[str(task_id)] = {"language": group[0].get("task_language"), **count_outcomes(group)}
        suites[suite] = {**count_outcomes(by_suite[suite]), "tasks": tasks}
    modes = sorted({f"{r.get('policy')}:{r.get('cache_mode')}" for r in records})
    return {"overall": count_outcomes(records), "suites": suites, "runs": modes}


def write_summary(
    run_dir: str | Path, records: Iterable[dict[str, Any]], identity: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``summary.json``: success (``summarize``), latency per inference kind and how often the prefix was recomputed
    (``sim_eval.analysis.stats``), and the identity the records were run under when there is one."""
    records = dedupe(records)
    summary = summarize(records)
    summary["latency_ms"] = latency_by_kind(records)
    summary["refresh"] = refresh_stats(records)
    if identity is not None:
        summary["identity"] = identity
    target = Path(run_dir) / SUMMARY_FILE
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, target)
    return summary


def outcome_text(summary: dict[str, Any]) -> str:
    """``success 3/4 = 75% (95% CI 30%-95%), 0 crashed`` from a summary's ``overall``."""
    overall = summary["overall"]
    n, k = overall["finished"], overall["successes"]
    if not n:
        return f"no episode finished ({overall['errors']} crashed)"
    lo, hi = wilson_interval(k, n)
    return f"success {k}/{n} = {k / n:.0%} (95% CI {lo:.0%}-{hi:.0%}), {overall['errors']} crashed"


def latency_text(latency: dict[str, Any], refresh: dict[str, Any]) -> str | None:
    """``latency p50: full 40.0 ms, cached 20.0 ms; full prefix on 57% of inferences``, or None without inferences."""
    kinds = [f"{kind} {latency[kind]['p50']:.1f} ms" for kind in KINDS if latency.get(kind, {}).get("n")]
    if not kinds:
        return None
    return f"latency p50: {', '.join(kinds)}; full prefix on {refresh['full_fraction']:.0%} of inferences"


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

"""Render ``report.md`` (+ PNG plots and ``report.json``) from one or more run / sweep directories.

The report answers, per cache mode: how much success does it cost against ``full`` on the same episodes, is the loss
smooth or are there cliff episodes, and what happened in them. All numbers come from ``sim_eval.analysis.stats``; each
section is a module of ``sim_eval.analysis.sections`` named after it, run here in report order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from sim_eval.analysis.pairs import paired_numbers
from sim_eval.analysis.sections import (
    answer,
    cliffs,
    control,
    errors,
    families,
    header,
    headline,
    latency,
    lengths,
    mae,
    mechanism,
    method,
    paired,
    per_suite,
    per_task,
    provenance,
    published,
    shadow,
    sweep,
)
from sim_eval.analysis.sections.context import PLOTS_DIR, VIDEOS_DIR, ReportContext

REPORT_FILE = "report.md"
__all__ = ["PLOTS_DIR", "REPORT_FILE", "VIDEOS_DIR", "build_report", "render"]

# report order: what a reader asks first (how much success, paired, beyond chance?) before how and why
SECTIONS = (
    header,
    answer,
    headline,
    paired,
    control,
    sweep,
    per_suite,
    families,
    per_task,
    lengths,
    latency,
    mae,
    shadow,
    cliffs,
    mechanism,
    published,
    errors,
    provenance,
    method,
)


def render(ctx: ReportContext) -> Path:
    """Run every section into ``ctx`` and write ``report.md`` and ``report.json``; return the path of the markdown."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    for section in SECTIONS:
        section.render(ctx)
    target = ctx.out / REPORT_FILE
    target.write_text("\n".join(ctx.lines).rstrip() + "\n")
    paired = paired_numbers(ctx.groups, ctx.pairings, ctx.excess)  # what the wandb logger logs (analysis.pairs)
    for group in ctx.groups:
        ctx.json["groups"][ctx.label[id(group)]] = {
            "policy": group.policy,
            "mode": group.mode,
            "seed": group.seed,
            "role": "baseline" if group.is_baseline else "control" if group.is_control else "mode",
            **ctx.headlines[id(group)],
            "paired": paired[ctx.label[id(group)]],
        }
    (ctx.out / "report.json").write_text(json.dumps(ctx.json, indent=2, allow_nan=False) + "\n")
    return target


def build_report(
    paths: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    title: str | None = None,
    note: str | None = None,
    max_traces: int = 24,
    input_label: str | None = None,
    video_paths: Sequence[str | Path] = (),
) -> Path:
    """Write ``report.md``, ``report.json``, ``report_plots/*.png`` and, for cliff episodes whose baseline and mode
    episodes both have a video, ``report_videos/*.mp4`` (full above, mode below) into ``out_dir`` (default: the
    first path); return the path of ``report.md``. ``input_label`` replaces the list of input paths in the header
    (reports whose inputs live in a temporary directory). ``video_paths``: runs that re-ran some episodes with
    videos, shown for episodes recorded without one (each marked with whether the re-run repeated it). Raises
    ``runs.NoEpisodesError`` for a path without episode records."""
    if not paths:
        raise ValueError("no directory given")
    if max_traces < 0:
        raise ValueError(f"max_traces must be >= 0, got {max_traces}")
    out = Path(out_dir) if out_dir is not None else Path(paths[0])
    return render(ReportContext(paths, out.resolve(), title, note, max_traces, input_label, video_paths))

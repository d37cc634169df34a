"""``## Perturbation families``: results grouped by base suite and LIBERO-PRO perturbation family (``suite=
libero_object_swap`` is the family ``swap`` of the base suite ``libero_object``): success per family and mode, the
paired comparison against ``full`` within each suite, and a family x mode heat map. Shown when the records span a
perturbed suite; the family comes from the suite's name (``sim_eval.envs.benchmarks.split_name``), so records written
before they carried ``base_suite`` / ``perturbation`` group the same way."""

from __future__ import annotations

from typing import Any

from sim_eval.analysis import plots
from sim_eval.analysis.paired import per_suite_deltas
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import pct, pvalue, table
from sim_eval.analysis.stats import count_outcomes
from sim_eval.envs.benchmarks import dimension, split_name

BASE = "(none)"  # the family of an unperturbed base suite


def family_of(suite: str) -> tuple[str, str]:
    """``(base suite, family)`` of a suite name; a suite extending no base suite is its own base."""
    base, perturbation = split_name(suite)
    return base or suite, perturbation or BASE


def family_rows(ctx: ReportContext) -> list[dict[str, Any]]:
    """One row per (base suite, family, mode): outcome counts with a Wilson interval and, for modes paired with
    ``full``, the paired numbers on that suite (``paired.per_suite_deltas``)."""
    rows = []
    for group in ctx.groups:
        paired = {}
        if id(group) in ctx.pairings:
            paired = {d["suite"]: d for d in per_suite_deltas(ctx.pairings[id(group)], ctx.baseline(group).records)}
        by_suite: dict[str, list[dict[str, Any]]] = {}
        for record in group.records:
            by_suite.setdefault(record["suite"], []).append(record)
        for suite, records in by_suite.items():
            base, family = family_of(suite)
            rows.append({"suite": suite, "base_suite": base, "family": family, "dimension": _dimension(family),
                         "mode": ctx.label[id(group)], **count_outcomes(records),
                         "paired": paired.get(suite)})  # fmt: skip
    order = {ctx.label[id(g)]: k for k, g in enumerate(ctx.groups)}
    rows.sort(key=lambda r: (r["base_suite"], r["family"] != BASE, r["family"], order[r["mode"]]))
    return rows


def _dimension(family: str) -> str:
    return "-" if family == BASE else dimension(family)


def heat_cells(rows: list[dict[str, Any]], modes: list[str]) -> tuple[list[str], list[list[tuple[int, int] | None]]]:
    """Families (pooled over base suites) x modes: (successes, finished episodes) per cell, None where not run."""
    families = sorted({r["family"] for r in rows}, key=lambda f: (f != BASE, f))
    cells = []
    for family in families:
        line = []
        for mode in modes:
            hits = [r for r in rows if r["family"] == family and r["mode"] == mode]
            finished = sum(r["finished"] for r in hits)
            line.append((sum(r["successes"] for r in hits), finished) if hits else None)
        cells.append(line)
    return families, cells


def render(ctx: ReportContext) -> None:
    rows = family_rows(ctx)
    if all(r["family"] == BASE for r in rows):
        return  # base suites only: the per-suite tables say it all
    ctx.add("## Perturbation families", "")
    bases = sorted({r["base_suite"] for r in rows})
    families = sorted({r["family"] for r in rows if r["family"] != BASE})
    ctx.add(
        f"{len(families)} perturbation famil{'y' if len(families) == 1 else 'ies'} ({', '.join(families)}) of "
        f"{len(bases)} base suite{'s' if len(bases) > 1 else ''} ({', '.join(bases)}); a family is the suite name's "
        "perturbation (`libero_object_swap`: `swap` of `libero_object`), its dimension LIBERO-PRO's. Paired columns "
        "compare a mode with `full` on the same episodes of the same suite.",
        "",
    )
    body = []
    for r in rows:
        p = r["paired"]
        body.append([
            r["base_suite"], r["family"], r["dimension"], f"`{r['mode']}`",
            f"{r['successes']}/{r['finished']}", pct(r["success_rate"]),
            *([p["pairs"], p["cliffs"], p["rescues"], pct(p["delta"]), pvalue(p["mcnemar_p"])] if p else ["–"] * 5),
        ])  # fmt: skip
    headers = ["base suite", "family", "dimension", "mode", "successes", "success", "pairs", "cliffs", "rescues", "Δ",
               "McNemar p"]  # fmt: skip
    ctx.add(table(headers, body), "")
    modes = [ctx.label[id(g)] for g in ctx.groups]
    labels, cells = heat_cells(rows, modes)
    path = plots.heatmap(labels, modes, cells, ctx.plot_dir / "family_heatmap.png",
                         title="Success per perturbation family (pooled over base suites) and mode")  # fmt: skip
    ctx.image(path, "family x mode success")
    ctx.json["families"] = [{k: v for k, v in r.items()} for r in rows]

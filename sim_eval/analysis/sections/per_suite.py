"""``## Paired comparison per suite``: each paired group's cliffs, rescues, Δ and exact McNemar per suite (between the
overall paired table and the per-task one), from ``paired.per_suite_deltas``."""

from __future__ import annotations

from sim_eval.analysis.paired import per_suite_deltas
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import pct, pvalue, table


def render(ctx: ReportContext) -> None:
    compared = [g for g in ctx.groups if id(g) in ctx.pairings]
    if not compared:
        return  # the paired table already says why nothing was paired
    ctx.add("## Paired comparison per suite", "")
    rows = []
    for group in compared:
        base = ctx.baseline(group)
        for d in per_suite_deltas(ctx.pairings[id(group)], base.records):
            rows.append(
                [
                    d["suite"],
                    f"`{ctx.label[id(group)]}`",
                    d["pairs"],
                    f"{d['baseline_successes']}→{d['mode_successes']}" if d["pairs"] else "no pairs",
                    d["cliffs"],
                    d["rescues"],
                    pct(d["delta"]),
                    pvalue(d["mcnemar_p"]),
                ]
            )
    suites = sorted({row[0] for row in rows}, key=str)
    if len(suites) == 1:
        ctx.add(f"One suite (`{suites[0]}`): per suite, the paired comparison is the table above.", "")
        return
    rows.sort(key=lambda row: str(row[0]))  # suite-major, groups in report order within a suite (stable sort)
    headers = ["suite", "mode", "pairs", "full → mode successes", "cliffs", "rescues", "Δ", "McNemar p"]
    ctx.add(table(headers, rows), "")

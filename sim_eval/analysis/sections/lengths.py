"""``## Episode length and wall time``: median steps of successes per group and, against `full`, the paired change in
steps on the episodes both solved with the exact sign test (``sim_eval.analysis.lengths``)."""

from __future__ import annotations

from sim_eval.analysis.lengths import length_summary, paired_length
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import num, pvalue, table


def render(ctx: ReportContext) -> None:
    ctx.add("## Episode length and wall time", "")
    rows = []
    for group in ctx.groups:
        s = length_summary(group.records)
        pairing = ctx.pairings.get(id(group))
        paired = paired_length(pairing, ctx.baseline(group).records, group.records) if pairing else None
        if paired is None or not paired.pairs:
            delta = ["(baseline)" if group.is_baseline else "–", "–", "–", "–", "–"]
        else:
            delta = [
                paired.pairs,
                f"{num(paired.median, 1)} / {num(paired.mean, 1)}",
                f"{paired.longer} / {paired.shorter} / {paired.ties}",
                pvalue(paired.sign_p),
                num(paired.wall_median, 2),
            ]
        rows.append(
            [
                f"`{ctx.label[id(group)]}`",
                s["successes"],
                num(s["steps_success_median"], 0),
                num(s["steps_finished_median"], 0),
                num(s["wall_success_median_s"], 2),
                *delta,
            ]
        )
    headers = [
        "mode",
        "successes",
        "median steps (successes)",
        "median steps (finished)",
        "median wall s (successes)",
        "both solved",
        "Δsteps median / mean",
        "longer / shorter / same",
        "sign test p",
        "median Δwall s",
    ]
    ctx.add(table(headers, rows), "")
    ctx.add(
        "Steps are control steps after the wait steps; a failure runs to the step limit, so lengths are compared on "
        "successes. *Δsteps*: mode − `full` on the episodes both solved (same key). *sign test*: exact two-sided "
        "binomial test of longer vs shorter, ties dropped. Wall time (simulation, rendering and inference) depends "
        "on the machine and its load; steps do not.",
        "",
    )

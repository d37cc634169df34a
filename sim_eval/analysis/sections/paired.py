"""``## Paired comparison against `full```: per mode, the outcome of every episode pair (both succeed, cliffs,
rescues, both fail), rates on the pairs, Δ, exact McNemar and the keys that could not be paired."""

from __future__ import annotations

from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import pct, pvalue, table
from sim_eval.analysis.stats import parse_mode


def render(ctx: ReportContext) -> None:
    ctx.add("## Paired comparison against `full`", "")
    compared = [g for g in ctx.groups if id(g) in ctx.pairings]
    missing_base = [g for g in ctx.groups if not g.is_baseline and id(g) not in ctx.pairings]
    for group in missing_base:
        if parse_mode(group.mode)[1] is None:  # e.g. "-" of a scripted policy: nothing to compare against
            ctx.add(f"- `{ctx.label[id(group)]}`: a policy without cache modes; shown without pairing.")
        else:
            # a mode pairs with the full run of its own seed only: another seed's noise would mix in chance flips
            at_seed = "" if group.seed == group.primary_seed else f" at seed {group.seed}"
            ctx.add(
                f"- `{ctx.label[id(group)]}`: no `full` run of policy `{group.policy}`{at_seed} among the inputs, so "
                "no paired comparison."
            )
    if missing_base:
        ctx.add("")
    if not compared:
        ctx.add("No mode could be paired with a `full` baseline.", "")
        return
    rows = []
    for group in compared:
        p = ctx.pairings[id(group)]
        rows.append(
            [
                f"`{ctx.label[id(group)]}`",
                p.n_pairs,
                len(p.both_success),
                len(p.cliffs),
                len(p.rescues),
                len(p.both_fail),
                pct(p.baseline_rate),
                pct(p.mode_rate),
                pct(p.delta),
                pvalue(p.mcnemar_p),
                len(p.missing_in_mode),
                len(p.missing_in_baseline),
                p.error_excluded,
            ]
        )
    ctx.add(
        table(
            [
                "mode",
                "pairs",
                "both succeed",
                "cliffs (full ✓, mode ✗)",
                "rescues (full ✗, mode ✓)",
                "both fail",
                "full on pairs",
                "mode on pairs",
                "Δ",
                "McNemar p",
                "missing in mode",
                "missing in full",
                "excluded (error)",
            ],
            rows,
        ),
        "",
    )

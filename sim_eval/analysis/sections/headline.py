"""``## Headline``: one row per group (success with Wilson interval, paired Δ, cliffs, latency, refresh), the
success-vs-latency frontier plot and, over several suites, success per suite."""

from __future__ import annotations

from sim_eval.analysis import plots
from sim_eval.analysis.compute import Arm, at_common_speed, speed_spread
from sim_eval.analysis.lengths import length_summary
from sim_eval.analysis.runs import Group
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.control import excess_cell
from sim_eval.analysis.sections.fmt import num, pct, pvalue, rate_ci, table
from sim_eval.analysis.stats import KINDS, parse_mode, success_by


def render(ctx: ReportContext) -> None:
    ctx.add("## Headline", "")
    rows = []
    for group in ctx.groups:
        h = ctx.headlines[id(group)]
        pairing = ctx.pairings.get(id(group))
        counts = {"success_rate": h["success_rate"], "ci_low": h["success_ci_low"], "ci_high": h["success_ci_high"]}
        rows.append(
            [
                f"`{ctx.label[id(group)]}`",
                h["episodes"],
                h["finished"],
                h["errors"],
                rate_ci(counts),
                pct(pairing.delta) if pairing else "(baseline)" if group.is_baseline else "no baseline",
                len(pairing.cliffs) if pairing else "–",
                len(pairing.rescues) if pairing else "–",
                pvalue(pairing.mcnemar_p) if pairing else "–",
                num(h["latency_mean_ms"]),
                num(h["latency_p50_ms"]),
                num(h["latency_p95_ms"]),
                num(h["compute_ms_per_step"]),
                " / ".join(num(h[f"latency_{kind}_p50_ms"]) for kind in KINDS),
                pct(h["refresh_fraction"]),
                num(h["control_rate_hz"], 0),
                num(length_summary(group.records)["steps_success_median"], 0),
                *([_excess(ctx, group)] if ctx.controls else []),
            ]
        )
    ctx.add(
        table(
            [
                "mode",
                "episodes",
                "finished",
                "errors",
                "success [Wilson 95%]",
                "Δ vs full (paired)",
                "cliffs",
                "rescues",
                "McNemar p",
                "mean ms",
                "p50 ms",
                "p95 ms",
                "compute ms/step",
                "p50 ms " + " / ".join(KINDS),
                "refresh",
                "control Hz",
                "median steps (successes)",
                *(["excess cliffs vs control"] if ctx.controls else []),
            ],
            rows,
        ),
        "",
    )
    ctx.add(
        "Errors (crashed episodes) are excluded from success rates. Δ, cliffs, rescues and the exact McNemar "
        "p-value use only episodes finished in both the mode and `full`. *refresh* = forced refreshes / frames "
        "the window allowed to be cached; *p50 ms full / cached / forced*: median latency of "
        "each inference kind (see Latency); *compute ms/step*: policy compute per control step, the episode's "
        "summed inference time over its steps, averaged over finished episodes (a `replay<N>` frame costs 0); "
        "*control Hz* = replan_steps / mean inference time (see Method)."
        + (
            " *excess cliffs vs control*: mode cliffs − control-arm cliffs on the episodes paired in both, with the "
            "Newcombe 95% interval of the rate and the exact McNemar p (see Control arm)."
            if ctx.controls
            else ""
        ),
        "",
    )
    spread = speed_spread([(ctx.label[id(g)], ctx.headlines[id(g)]["latency_full_p50_ms"]) for g in ctx.groups])
    if spread:
        (fast, fast_ms), (slow, slow_ms) = spread
        ctx.add(
            f"**The millisecond columns mix machine speeds**: full frames took a median {fast_ms:.1f} ms in "
            f"`{fast}` but {slow_ms:.1f} ms in `{slow}` (other work on the machine during some runs, or another "
            "machine), so latency and compute compare between these runs only as far as that allows; the Answer and "
            "the compute plot compare compute at one speed.",
            "",
        )
    rows = [{"label": ctx.label[id(g)], "mode": g.mode, "control": g.is_control, **ctx.headlines[id(g)]}
            for g in ctx.groups]  # fmt: skip
    ctx.image(plots.frontier(rows, ctx.plot_dir / "frontier.png"), "success vs latency")
    # the cost a robot pays per control step: zero-compute and cached frames at their real cost; runs of unequal
    # machine speed at the full run's speed, as the Answer compares them
    x, xlabel = "compute_ms_per_step", "policy compute per control step, ms"
    common = at_common_speed([_arm(row) for row in rows]) if spread else None
    if common:
        scaled = {a.label: a.compute_ms for a in common[0]}
        rows = [{**row, "compute_ms_per_step_common": scaled.get(row["label"])} for row in rows]
        x, xlabel = "compute_ms_per_step_common", "policy compute per control step at the full run's speed, ms"
        ctx.json["compute_ms_per_step_common"] = scaled
    compute = plots.frontier(
        rows, ctx.plot_dir / "frontier_compute.png", title="Success vs policy compute per control step", x=x,
        xlabel=xlabel,
    )  # fmt: skip
    ctx.image(compute, "success vs compute per control step")
    suites = {}
    for group in ctx.groups:
        for (suite,), counts in success_by(group.records, ("suite",)).items():
            suites.setdefault(suite, []).append((group, counts))
    if len(suites) > 1:
        ctx.add("### Per suite", "")
        rows = [
            [suite, f"`{ctx.label[id(g)]}`", c["episodes"], c["finished"], c["errors"], rate_ci(c)]
            for suite, items in suites.items()
            for g, c in items
        ]
        ctx.add(table(["suite", "mode", "episodes", "finished", "errors", "success [Wilson 95%]"], rows), "")


def _arm(row: dict) -> Arm:
    """A headline row as ``compute.at_common_speed`` takes it; a control arm is never the reference ``full``."""
    return Arm.from_headline(row["label"], "control" if row["control"] else parse_mode(row["mode"])[0], row)


def _excess(ctx: ReportContext, group: Group) -> str:
    """The mode's excess cliffs over the first control arm sharing its baseline; roles for the full runs."""
    if group.is_control:
        return "(control)"
    found = ctx.excess.get(id(group))
    return excess_cell(found[0][1]) if found else "–"

"""``## Control arm``: `full` at another noise seed against the baseline `full` (the cliffs chance alone makes), and
every cache mode's cliffs against it -- *excess cliffs* with the exact McNemar test on the discordant cliffs and
Newcombe's interval (``sim_eval.analysis.paired``)."""

from __future__ import annotations

from sim_eval.analysis.paired import ExcessCliffs
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import pct, pvalue, table

ALPHA = 0.05


def excess_cell(ex: ExcessCliffs) -> str:
    """``+2 (2.0% [-1.0%, 9.5%]), p 0.500``: excess count, its rate with the Newcombe 95% interval, exact p."""
    interval = ex.interval
    ci = f" [{pct(interval[0])}, {pct(interval[1])}]" if interval else ""
    return f"{ex.excess:+d} ({pct(ex.excess_rate)}{ci}), p {pvalue(ex.p_value)}"


def render(ctx: ReportContext) -> None:
    ctx.add("## Control arm (`full` at another noise seed)", "")
    if not ctx.controls:
        ctx.add(
            "No control arm among the inputs. A flow-matching policy also flips some episodes when only its noise "
            "changes; to see how many of a mode's cliffs chance alone explains, run `full` once more at another "
            "`eval.seed` (e.g. `policy.cache=full eval.seed=1`) on the same episodes and report both runs together.",
            "",
        )
        return
    for control in ctx.controls:
        pairing = ctx.pairings[id(control)]
        base = ctx.baseline(control)
        name, base_name = ctx.label[id(control)], ctx.label[id(base)]
        ctx.add(
            f"`{name}` ran the episodes of `{base_name}` with another flow-matching noise stream (`eval.seed` "
            f"{control.seed} instead of {base.seed}): on {pairing.n_pairs} pairs it has {len(pairing.cliffs)} cliff(s) "
            f"and {len(pairing.rescues)} rescue(s) against `{base_name}` -- the flips chance alone produces.",
            "",
        )
        rows, exceeding = [], []
        for group in ctx.groups:
            ex = next((e for c, e in ctx.excess.get(id(group), []) if c is control), None)
            if ex is None:
                continue
            label = ctx.label[id(group)]
            if ex.exceeds(ALPHA):
                exceeding.append((label, ex))
            interval = ex.interval
            rows.append(
                [
                    f"`{label}`",
                    ex.pairs,
                    ex.mode_cliffs,
                    ex.control_cliffs,
                    ex.both_cliff,
                    ex.mode_only,
                    ex.control_only,
                    f"{ex.excess:+d}",
                    f"{pct(ex.excess_rate)} [{pct(interval[0])}, {pct(interval[1])}]" if interval else "–",
                    pvalue(ex.p_value),
                    ex.mode_rescues,
                    ex.control_rescues,
                ]
            )
        if not rows:
            ctx.add(f"No cache mode shares the baseline of `{name}`, so there is nothing to compare with it.", "")
            continue
        headers = [
            "mode",
            "common pairs",
            "mode cliffs",
            "control cliffs",
            "both",
            "mode only",
            "control only",
            "excess cliffs",
            "excess rate [Newcombe 95%]",
            "exact p",
            "mode rescues",
            "control rescues",
        ]
        ctx.add(table(headers, rows), "")
        if exceeding:
            listed = ", ".join(f"`{label}` ({ex.excess:+d}, p {pvalue(ex.p_value)})" for label, ex in exceeding)
            ctx.add(f"**More cliffs than the control arm beyond chance** (p < {ALPHA}): {listed}.", "")
        else:
            ctx.add(
                f"**No mode exceeds the control arm**: no mode has more cliffs than `{name}` beyond chance (every "
                f"exact p ≥ {ALPHA} or excess ≤ 0); the cliffs seen are as many as another noise seed alone flips.",
                "",
            )
    ctx.add(
        "*Common pairs*: episode keys paired (finished in both runs) in both the mode's and the control's pairing "
        "with the baseline. *Excess cliffs* = mode cliffs − control cliffs on them = mode only − control only. "
        "*exact p*: two-sided exact McNemar test on the discordant cliffs (mode only vs control only, "
        "Bin(n, 1/2) under H0: the mode adds no cliff beyond chance). *Newcombe 95%*: Newcombe's hybrid score "
        "interval (1998, method 10) for the difference of the two paired cliff rates.",
        "",
    )

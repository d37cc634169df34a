"""``## Adaptive threshold sweep``: when one adaptive mode ran at several refresh thresholds (``python -m sim_eval -m
policy.cache=adaptive3 policy.refresh.threshold=2,4,6.5,9``), one row per threshold and the success-vs-latency
frontier over them: a lower threshold refreshes more (slower, closer to ``full``), a higher one caches more."""

from __future__ import annotations

from collections import defaultdict

from sim_eval.analysis import plots
from sim_eval.analysis.runs import Group
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import num, pct, pvalue, rate_ci, slug, table
from sim_eval.analysis.stats import parse_mode


def sweeps(ctx: ReportContext) -> dict[tuple[str, str, int], list[tuple[float, Group]]]:
    """Per ``(policy, adaptive mode, seed)`` with at least two thresholds: ``(threshold, group)`` by threshold."""
    found: dict[tuple[str, str, int], list[tuple[float, Group]]] = defaultdict(list)
    for group in ctx.groups:
        kind, period = parse_mode(group.mode)
        threshold = ctx.threshold(group)
        if kind == "adaptive" and threshold is not None:
            found[(group.policy, f"adaptive{period}", group.seed)].append((threshold, group))
    return {k: sorted(v, key=lambda item: item[0]) for k, v in found.items() if len({t for t, _ in v}) > 1}


def render(ctx: ReportContext) -> None:
    found = sweeps(ctx)
    if not found:
        return
    ctx.add("## Adaptive threshold sweep", "")
    ctx.json["sweeps"] = {}
    for (policy, mode, seed), items in found.items():
        name = mode if len(found) == 1 else f"{policy}:{mode}@seed{seed}"
        rows, points = [], []
        for threshold, group in items:
            h, pairing = ctx.headlines[id(group)], ctx.pairings.get(id(group))
            counts = {"success_rate": h["success_rate"], "ci_low": h["success_ci_low"], "ci_high": h["success_ci_high"]}
            rows.append(
                [
                    f"{threshold:g}",
                    f"`{ctx.label[id(group)]}`",
                    h["finished"],
                    rate_ci(counts),
                    pct(pairing.delta) if pairing else "no baseline",
                    len(pairing.cliffs) if pairing else "–",
                    pvalue(pairing.mcnemar_p) if pairing else "–",
                    pct(h["refresh_fraction"]),
                    num(h["latency_mean_ms"]),
                ]
            )
            points.append({"label": f"{threshold:g}", "mode": group.mode, **h})
        ctx.json["sweeps"][name] = [
            {"threshold": t, "group": ctx.label[id(g)], **{k: ctx.headlines[id(g)][k] for k in _JSON_KEYS}}
            for t, g in items
        ]
        ctx.add(
            f"`{name}` at {len(items)} refresh thresholds (pixel MAE, max over views):",
            "",
            table(
                [
                    "threshold",
                    "arm",
                    "finished",
                    "success [Wilson 95%]",
                    "Δ vs full (paired)",
                    "cliffs",
                    "McNemar p",
                    "refresh",
                    "mean ms",
                ],
                rows,
            ),
            "",
        )
        path = plots.frontier(points, ctx.plot_dir / f"sweep_{slug(name)}.png", title=f"{name}: threshold sweep")
        ctx.image(path, f"{name} success vs latency over thresholds")


_JSON_KEYS = ("finished", "success_rate", "success_ci_low", "success_ci_high", "refresh_fraction", "latency_mean_ms")

"""``## Latency and refresh``: ``infer_ms`` per inference kind, how often the prefix ran, the control rate."""

from __future__ import annotations

from sim_eval.analysis import plots
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import num, pct, table
from sim_eval.analysis.stats import ALL_KINDS, inference_kind, latency_by_kind, refresh_stats


def render(ctx: ReportContext) -> None:
    ctx.add("## Latency and refresh", "")
    rows, box = [], {}
    for group in ctx.groups:
        stats = latency_by_kind(group.records)
        for kind in (*ALL_KINDS, "all"):
            s = stats[kind]
            if s["n"]:
                rows.append(
                    [
                        f"`{ctx.label[id(group)]}`",
                        kind,
                        s["n"],
                        num(s["p50"]),
                        num(s["p95"]),
                        num(s["p99"]),
                        num(s["mean"]),
                        num(s["prefix_ms_mean"]),
                        num(s["denoise_ms_mean"]),
                    ]
                )
        box[ctx.label[id(group)]] = {
            kind: [
                float(i["infer_ms"])
                for r in group.records
                for i in r.get("inferences") or []
                if i.get("infer_ms") is not None and inference_kind(i) == kind
            ]
            for kind in ALL_KINDS
        }
    if not rows:
        ctx.add("No timed inference in these records.", "")
        return
    ctx.add(
        table(
            ["mode", "kind", "n", "p50 ms", "p95 ms", "p99 ms", "mean ms", "prefix ms (mean)", "denoise ms (mean)"],
            rows,
        ),
        "",
    )
    rows = []
    for group in ctx.groups:
        r = refresh_stats(group.records)
        h = ctx.headlines[id(group)]
        rows.append(
            [
                f"`{ctx.label[id(group)]}`",
                r["inferences"],
                r["full_inferences"],
                r["cached_inferences"],
                r["forced_inferences"],
                pct(r["full_fraction"]),
                pct(r["refresh_fraction"]),
                num(h["control_rate_hz"], 0),
            ]
        )
    ctx.add(
        table(
            [
                "mode",
                "inferences",
                "full",
                "cached",
                "forced",
                "ran full prefix",
                "refresh fraction",
                "control rate Hz",
            ],
            rows,
        ),
        "",
    )
    ctx.image(plots.latency_by_kind(box, ctx.plot_dir / "latency.png"), "latency per inference kind")

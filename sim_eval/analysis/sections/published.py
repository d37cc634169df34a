"""``## Published real-Pi0.5 numbers``: the verified published closed-loop numbers of K/V reuse on the real Pi0.5
(``sim_eval/analysis/published.yaml``, with their provenance) beside this report's, and how the degradation measured
here compares (``sim_eval.analysis.published``)."""

from __future__ import annotations

from sim_eval.analysis import published
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import pct, table
from sim_eval.analysis.stats import parse_mode


def our_retentions(ctx: ReportContext) -> dict[str, tuple[float, tuple[str, ...]]]:
    """Per reuse mode of the report (the refresh rule dropped: adaptive3 at any threshold is adaptive3; the first
    group of a mode wins): its paired success rate over ``full``'s on the same episodes, and its suites."""
    out: dict[str, tuple[float, tuple[str, ...]]] = {}
    for group in ctx.groups:
        pairing = ctx.pairings.get(id(group))
        kind, period = parse_mode(group.mode)
        if group.is_control or pairing is None or not pairing.baseline_rate or period is None or kind == "full":
            continue
        name = f"{kind}{period}"
        if name not in out:
            suites = tuple(sorted({r["suite"] for r in group.records}))
            out[name] = (pairing.mode_rate / pairing.baseline_rate, suites)
    return out


def render(ctx: ReportContext) -> None:
    sources = published.load()
    ctx.add("## Published real-Pi0.5 numbers", "")
    for source in sources:
        ctx.add(
            f"**[{source['title']}]({source['url']})** -- model: {source['model']}; hardware: {source['hardware']}; "
            f"protocol: {source['protocol']}; episodes: {source['episodes']}. Verified from {source['verified']}.",
            "",
        )
        rows = []
        for row in source["rows"]:
            count = f"{row['successes']}/{row['episodes']} = " if "successes" in row else ""
            rows.append(
                [
                    row["suite"],
                    row["arm"],
                    f"`{row['mode']}`",
                    count + pct(published.row_rate(row)),
                    row.get("detail", ""),
                ]
            )
        ctx.add(table(["suite", "arm", "like", "success", "detail"], rows), "")
    text = published.comparison_text(our_retentions(ctx), sources)
    ctx.add(
        (f"**Against these records:** {text} " if text else "No mode of these records has a published counterpart. ")
        + "Retention = a mode's success over its own synchronous rate (published: per source and suite; here: on "
        f"the paired episodes); stronger / weaker = more than {published.MARGIN * 100:.0f} points of retention "
        "outside the published range. What transfers is the shape of the loss under reuse, not absolute rates: the "
        "published numbers are the real Pi0.5 on other hardware, protocols and episode counts (30 or 200 per arm), "
        "and Latent Bridge's baseline denoises in one step.",
        "",
    )
    ctx.json["published"] = {"comparison": text}

"""``## Shadow reference``: executed vs fresh full-frame action chunks on cached frames, per mode."""

from __future__ import annotations

from sim_eval.analysis.runs import Group
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import num, pct, table
from sim_eval.analysis.stats import COS_THRESHOLDS, shadow_episode_metrics, shadow_summary


def render(ctx: ReportContext) -> None:
    ctx.add("## Shadow reference (executed vs fresh full-frame actions on cached frames)", "")
    rows = []
    for group in ctx.groups:
        s = shadow_summary(group.records)
        if not s["episodes"]:
            continue
        cells = []
        for t in COS_THRESHOLDS:
            b = s["below"][t]
            cells.append(
                f"{pct(b['episode_fraction'], 0)} / {num(b['first_index_median'], 0)} / {pct(b['frame_fraction'])}"
            )
        cliff_cos = _cos_min_of(ctx, group, "cliffs")
        ok_cos = _cos_min_of(ctx, group, "both_success")
        rows.append(
            [
                f"`{ctx.label[id(group)]}`",
                s["episodes"],
                s["frames"],
                num(s["cos_min_median"], 3),
                num(s["cos_min_min"], 3),
                *cells,
                num(cliff_cos, 3),
                num(ok_cos, 3),
            ]
        )
    if not rows:
        ctx.add("No shadow reference in these records (run cached modes with `policy.shadow=true`).", "")
        return
    ctx.add(
        table(
            [
                "mode",
                "episodes",
                "cached frames",
                "median cos_min",
                "lowest cos_min",
                *[f"cos < {t}: episodes / median first index / frames" for t in COS_THRESHOLDS],
                "median cos_min, cliff episodes",
                "median cos_min, both-succeed episodes",
            ],
            rows,
        ),
        "",
    )
    ctx.add(
        "*cos_min*: lowest cosine similarity between the executed action chunk and the chunk a full frame "
        "would have produced with the same noise, over an episode's cached frames. *first index*: the "
        "inference index at which an episode first went below the bound.",
        "",
    )


def _cos_min_of(ctx: ReportContext, group: Group, category: str) -> float | None:
    pairing = ctx.pairings.get(id(group))
    if pairing is None:
        return None
    records = ctx.records_by_key[id(group)]
    values = [m["cos_min"] for k in getattr(pairing, category) if (m := shadow_episode_metrics(records[k])) is not None]
    if not values:
        return None
    values.sort()
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

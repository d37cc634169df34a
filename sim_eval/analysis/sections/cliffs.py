"""``## Cliff episodes``: per mode, every episode that succeeded under `full` and failed under the mode, with its
inference mix, shadow cosine, videos (side by side when both exist) and trace plots."""

from __future__ import annotations

from pathlib import Path

from sim_eval.analysis import plots
from sim_eval.analysis.divergence import ACTION_COS_TOL, INPUT_MAE_TOL, Divergence, divergence_point, has_evidence
from sim_eval.analysis.runs import Group, baseline_of
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import num, pct, rel, short, slug, table, video_cell
from sim_eval.analysis.stats import Pairing, inference_kind, shadow_episode_metrics
from sim_eval.analysis.videos import side_by_side

SHOWN_ROWS = 20


def render(ctx: ReportContext) -> None:
    ctx.add("## Cliff episodes (success under `full`, failure under the mode)", "")
    compared = [g for g in ctx.groups if id(g) in ctx.pairings]
    if not compared:
        ctx.add("No cliff analysis: no mode has a `full` baseline among the inputs.", "")
        return
    for group in compared:
        label = ctx.label[id(group)]
        pairing = ctx.pairings[id(group)]
        base = baseline_of(group, ctx.groups)
        base_records = ctx.records_by_key[id(base)]
        records = ctx.records_by_key[id(group)]
        ctx.add(f"### `{label}`", "")
        if pairing.n_pairs == 0:
            ctx.add(
                f"No episode finished under both `full` and `{label}`, so there is nothing to pair "
                "(see the paired-comparison table for missing and crashed episodes).",
                "",
            )
            continue
        base_ok = len(pairing.both_success)
        if not pairing.cliffs and base_ok == 0:
            ctx.add(
                f"**No cliff episodes**: no paired episode succeeded under `full` ({pairing.n_pairs} pairs), so "
                f"`{label}` had no success to lose.",
                "",
            )
        elif not pairing.cliffs:
            ctx.add(
                f"**No cliff episodes**: all {base_ok} paired episodes that succeeded under `full` also "
                f"succeeded under `{label}` ({pairing.n_pairs} pairs).",
                "",
            )
        else:
            _cliff_table(ctx, group, pairing, base_records, records)
        if pairing.rescues:
            ctx.add(
                f"Rescues (failed under `full`, succeeded under `{label}`): "
                + ", ".join(f"`{k}`" for k in pairing.rescues),
                "",
            )


def _cliff_table(ctx: ReportContext, group: Group, pairing: Pairing, base_records: dict, records: dict) -> None:
    label = ctx.label[id(group)]
    rows = []
    divergences: dict[str, Divergence | None] = {}
    base_group = ctx.baseline(group)
    # per cliff: the videos of the `full` and the mode episode (their own or a re-run's), looked up once
    videos = {k: (ctx.video_of(base_group, base_records[k]), ctx.video_of(group, records[k])) for k in pairing.cliffs}
    filmed = [k for k in pairing.cliffs if videos[k][0][0] or videos[k][1][0]]
    # the episodes with a video come first in the table and the trace plots, so their rows sit beside the videos
    order = [*filmed, *(k for k in pairing.cliffs if k not in filmed)]
    for key in order:
        record, base = records[key], base_records[key]
        infs = record.get("inferences") or []
        kinds = [inference_kind(i) for i in infs]
        shadow = shadow_episode_metrics(record)
        div = divergences[key] = divergence_point(base, record, views=ctx.views(group))
        rows.append(
            [
                f"`{key}`",
                short(record.get("task_language"), 50),
                base.get("steps", "–"),
                record.get("steps", "–"),
                len(infs),
                kinds.count("cached"),
                kinds.count("forced"),
                num(shadow["cos_min"], 3) if shadow else "–",
                num(shadow["first_below"][0.5], 0) if shadow and shadow["first_below"][0.5] is not None else "–",
                *_divergence_cells(div, has_evidence(base, record)),
                _video(ctx, *videos[key][0]),
                _video(ctx, *videos[key][1]),
                _side_by_side(ctx, group, key, videos[key][0][0], videos[key][1][0]),
            ]
        )
    ctx.add(
        f"{len(pairing.cliffs)} cliff episode(s) of {pairing.n_pairs} pairs "
        f"({pct(len(pairing.cliffs) / pairing.n_pairs)}). {_divergence_summary(divergences)}",
        "",
    )
    headers = [
        "episode",
        "instruction",
        "steps full",
        f"steps {label}",
        "inferences",
        "cached",
        "forced",
        "cos_min",
        "first cos<0.5",
        "diverges at (inference / step)",
        "how",
        "kind there",
        "window pos",
        "pixel MAE there",
        "shadow cos there",
        "video full",
        f"video {label}",
        "side by side",
    ]
    # past SHOWN_ROWS the rest fold away (a mode can have hundreds of cliffs)
    ctx.add(table(headers, rows[:SHOWN_ROWS]), "")
    if len(rows) > SHOWN_ROWS:
        ctx.add(
            f"<details><summary>{len(rows) - SHOWN_ROWS} more cliff episode(s) of `{label}`</summary>",
            "",
            table(headers, rows[SHOWN_ROWS:]),
            "",
            "</details>",
            "",
        )
    if not filmed:
        ctx.add(
            "No videos were recorded for these episodes (run with `eval.video=failures` or `all`, or re-run some "
            "with it and pass those runs to `--videos`).",
            "",
        )
    elif not all(videos[k][0][0] for k in pairing.cliffs):
        # a cliff's baseline episode succeeded, and eval.video=failures keeps only failures
        ctx.add("For side-by-side videos of every cliff, run the `full` baseline with `eval.video=all`.", "")
    shown = order[: ctx.max_traces]
    for key in shown:
        path = ctx.plot_dir / f"trace_{slug(group.policy)}_{slug(group.name)}_{slug(key)}.png"
        title = f"{label} cliff {key}: {short(records[key].get('task_language'), 70)}"
        div = divergences[key]
        plots.episode_trace(
            records[key],
            path,
            threshold=ctx.threshold(group),
            views=ctx.views(group),
            title=title,
            divergence=div.index if div else None,
        )
        ctx.add(f"**`{key}`**", "")
        ctx.image(path, f"trace {key}")
    if len(pairing.cliffs) > len(shown):
        ctx.add(f"({len(pairing.cliffs) - len(shown)} more cliff episode(s) not plotted; raise `--max-traces`.)", "")


def _divergence_cells(div: Divergence | None, evidence: bool) -> list[str]:
    if div is None:
        return ["none within tolerance" if evidence else "not recorded", "–", "–", "–", "–", "–"]
    return [
        f"{div.index} / {div.step if div.step is not None else '–'}",
        div.describe(),
        div.kind,
        "–" if div.window_pos is None else str(div.window_pos),
        num(div.pixel_mae, 2),
        num(div.shadow_cos, 3),
    ]


def _divergence_summary(divergences: dict[str, Divergence | None]) -> str:
    found = [d for d in divergences.values() if d is not None]
    rule = (
        f"*Divergence*: the first inference where the episode departs from the `full` episode of the same key -- its "
        f"inputs (a lag MAE differing by more than {INPUT_MAE_TOL:g}) or, while they agree, its executed actions "
        f"(shadow cos < {ACTION_COS_TOL:g}); the dashed line on the trace plots."
    )
    if not found:
        return rule
    cached = sum(d.kind == "cached" for d in found)
    median = sorted(d.index for d in found)[(len(found) - 1) // 2]
    return (
        f"{rule} Found in {len(found)} of {len(divergences)}: median (lower) inference {median}, {cached} of them at "
        "a cached frame."
    )


def _video(ctx: ReportContext, shown: dict | None, note: str) -> str:
    """The cell for one episode's video (``ReportContext.video_of``: its own, or a re-run's marked as such)."""
    cell = video_cell(shown, ctx.out)
    return f"{cell} ({note})" if note and shown else cell


def _side_by_side(ctx: ReportContext, group: Group, key: str, base: dict | None, record: dict | None) -> str:
    """Link to a composed video (``full`` above, the mode below) when both episodes have one (their own or a
    re-run's: the records holding them); ``–`` otherwise."""
    paths = [Path(r["_run_dir"]) / r["video"] for r in (base, record) if r is not None]
    if len(paths) < 2 or not all(p.is_file() for p in paths):
        return "–"
    out = ctx.video_dir / f"{slug(group.policy)}_{slug(group.name)}_{slug(key)}.mp4"
    try:
        side_by_side(paths[0], paths[1], out, f"full  {key}", f"{group.name}  {key}")
    except Exception as exc:  # an unreadable video must not cost the rest of the report
        return f"could not compose ({type(exc).__name__})"
    return f"[side by side]({rel(out, ctx.out)})"

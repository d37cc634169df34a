"""``## Mechanism``: do cached frames re-play the old plan, and in which task phase do cliff episodes depart
(``sim_eval.analysis.mechanism``)."""

from __future__ import annotations

from sim_eval.analysis.mechanism import PHASES, departure_phases, replay_frames, replay_summary
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import num, pct, table


def render(ctx: ReportContext) -> None:
    modes = [g for g in ctx.groups if id(g) in ctx.pairings and not g.is_control and ctx.pairings[id(g)].n_pairs]
    if not modes:
        return
    ctx.add("## Mechanism", "")
    replay_rows, phase_rows = [], []
    for group in modes:
        base = ctx.records_by_key[id(ctx.baseline(group))]
        mine = ctx.records_by_key[id(group)]
        keys = [k for k in mine if k in base]
        summary = replay_summary([f for k in keys for f in replay_frames(base[k], mine[k])])
        if summary["frames"]:
            replay_rows.append(
                [
                    f"`{ctx.label[id(group)]}`",
                    summary["frames"],
                    num(summary["to_previous_median"], 4),
                    num(summary["to_full_median"], 4),
                    pct(summary["replay_fraction"]),
                ]
            )
        cliffs = ctx.pairings[id(group)].cliffs
        counts = departure_phases(((base[k], mine[k]) for k in cliffs), ctx.views(group))
        if cliffs and any(counts.get(p) for p in PHASES):
            phase_rows.append(
                [f"`{ctx.label[id(group)]}`", len(cliffs), *(counts.get(p, 0) for p in (*PHASES, "unknown"))]
            )
        ctx.json.setdefault("mechanism", {})[ctx.label[id(group)]] = {"replay": summary, "cliff_phases": counts}
    if not replay_rows and not phase_rows:
        ctx.add(
            "These records carry no executed actions or gripper state per inference (recorded since `executed`, "
            "`grip` and `eef_z` were added), so the mechanism cannot be read from them.",
            "",
        )
        return
    if replay_rows:
        ctx.add(
            table(
                ["mode", "cached frames", "to previous plan (median)", "to `full` (median)", "closer to previous"],
                replay_rows,
            ),
            "",
            "Per cached frame: mean |difference| of its executed actions to those executed one replan earlier "
            "(*to previous plan*: small = the old plan re-played from its start) and to those `full` executed at "
            "the same inference of the paired episode (*to `full`*: what a fresh prefix gave there; a fair reference "
            "while the episodes still share a path). *closer to previous*: frames nearer the old plan than `full`.",
            "",
        )
    if phase_rows:
        ctx.add(
            table(["mode", "cliffs", *PHASES, "unknown"], phase_rows),
            "",
            "Task phase of the `full` episode where each cliff episode departs from it (see Cliff episodes), read "
            "from gripper opening and end-effector height: grasp from the gripper closing, transport from the lift, "
            "place from the descent or release. Cliffs that never depart within tolerance are not counted.",
            "",
        )

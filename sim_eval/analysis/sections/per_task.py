"""``## Per task``: success per task and group (heat map + collapsed table) and the paired successes per task."""

from __future__ import annotations

from sim_eval.analysis import plots
from sim_eval.analysis.runs import baseline_of
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import pct, short, table
from sim_eval.analysis.stats import per_task_deltas, success_by


def render(ctx: ReportContext) -> None:
    ctx.add("## Per task", "")
    tasks = sorted(
        {(r.get("suite"), r.get("task_id")) for g in ctx.groups for r in g.records},
        key=lambda t: (str(t[0]), t[1] if isinstance(t[1], int) else -1),
    )
    language = {}
    for group in ctx.groups:
        for record in group.records:
            language.setdefault((record.get("suite"), record.get("task_id")), record.get("task_language"))
    by_group = {id(g): success_by(g.records, ("suite", "task_id")) for g in ctx.groups}
    cells = [
        [(c["successes"], c["finished"]) if (c := by_group[id(g)].get(t)) else None for g in ctx.groups] for t in tasks
    ]
    labels = [f"{s}/{t}: {short(language.get((s, t)), 38)}" for s, t in tasks]
    ctx.image(
        plots.heatmap(labels, [ctx.label[id(g)] for g in ctx.groups], cells, ctx.plot_dir / "tasks_heatmap.png"),
        "per-task success",
    )
    rows = []
    for task in tasks:
        row = [f"{task[0]}/{task[1]}"]
        for group in ctx.groups:
            c = by_group[id(group)].get(task)
            if c is None:
                row.append("not run")
                continue
            cell = f"{c['successes']}/{c['finished']}"
            if c["finished"]:
                cell += f" [{pct(c['ci_low'], 0)}, {pct(c['ci_high'], 0)}]"
            row.append(cell + (f", {c['errors']} error(s)" if c["errors"] else ""))
        rows.append(row)
    # collapsed: the heat map carries the picture, this table the exact counts and intervals
    ctx.add("<details><summary>Per-task successes / finished episodes [Wilson 95%], errors</summary>", "")
    ctx.add(table(["task", *[f"`{ctx.label[id(g)]}`" for g in ctx.groups]], rows), "", "</details>", "")
    compared = [g for g in ctx.groups if id(g) in ctx.pairings]
    if not compared:
        return
    deltas = {}
    for group in compared:
        base = baseline_of(group, ctx.groups)
        deltas[id(group)] = {
            (row["suite"], row["task_id"]): row for row in per_task_deltas(ctx.pairings[id(group)], base.records)
        }
    rows = []
    for suite, task in tasks:
        row = [f"{suite}/{task}", short(language.get((suite, task)), 50)]
        for group in compared:
            d = deltas[id(group)].get((suite, task))
            if d is None or not d["pairs"]:
                row.append("no pairs")
            else:
                row.append(
                    f"{d['baseline_successes']}→{d['mode_successes']} of {d['pairs']} "
                    f"({pct(d['delta'], 0)}; {d['cliffs']} cliff)"
                )
        rows.append(row)
    ctx.add("Paired successes per task, `full` → mode, over the episodes finished in both:", "")
    ctx.add(table(["task", "instruction", *[f"`{ctx.label[id(g)]}`" for g in compared]], rows), "")

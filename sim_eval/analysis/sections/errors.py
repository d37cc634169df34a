"""``## Crashed episodes``: every record with ``error`` set."""

from __future__ import annotations

from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import short, table


def render(ctx: ReportContext) -> None:
    rows = []
    for group in ctx.groups:
        for record in group.records:
            error = record.get("error")
            if error is not None:
                message = error.get("message") if isinstance(error, dict) else str(error)
                kind = error.get("type") if isinstance(error, dict) else ""
                rows.append(
                    [
                        f"`{ctx.label[id(group)]}`",
                        f"`{record['key']}`",
                        kind,
                        short((message or "").splitlines()[0] if message else "", 90),
                    ]
                )
    ctx.add("## Crashed episodes", "")
    if not rows:
        ctx.add("None.", "")
        return
    ctx.add(
        f"{len(rows)} episode(s) crashed; they count neither as success nor failure and are left out of "
        "success rates and pairs.",
        "",
    )
    ctx.add(table(["mode", "episode", "error", "message"], rows), "")

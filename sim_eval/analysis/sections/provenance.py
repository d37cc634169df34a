"""``## Runs``: what made these numbers, per run directory -- its groups, record count, the code commit(s) its records
name, the simulator (MuJoCo version, texture colour space) they ran in, the command-line overrides it ran under, and
the renderer and CPU its episodes ran on (the pixels, and so the episodes, depend on all three: docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import rel, short, table


def _distinct(values: list[Any], missing: str) -> str:
    seen = sorted({str(v) for v in values if v})
    unknown = sum(1 for v in values if not v)
    text = ", ".join(f"`{v}`" for v in seen)
    if unknown:
        text += f"{'; ' if text else ''}{unknown} record(s): {missing}"
    return text or missing


def _cpu(device: dict[str, Any]) -> str | None:
    cpu = device.get("cpu")
    if not isinstance(cpu, dict) or not cpu.get("model"):
        return None
    return f"{cpu['model']} ({cpu.get('torch_capability') or '?'})"


def _simulator(record: dict[str, Any]) -> str | None:
    """MuJoCo version and texture colour space a record's identity names (older records name neither)."""
    ident = record.get("identity") or {}
    if not ident.get("sim.mujoco"):
        return None
    return f"MuJoCo {ident['sim.mujoco']}, textures {ident.get('sim.texture_colorspace', '?')}"


def _run_name(ctx: ReportContext, path: Path) -> str:
    """A run's dir relative to the report, or, for inputs in a temporary dir (``input_label``), to its input: a
    temporary path means nothing to a reader and changes with every regeneration."""
    if ctx.input_label:
        for base in ctx.paths:
            try:
                return str(path.relative_to(Path(base).resolve()))
            except ValueError:
                continue
    return rel(path, ctx.out)


def render(ctx: ReportContext) -> None:
    ctx.add("## Runs", "")
    labels = {}
    for group in ctx.groups:
        for record in group.records:
            labels.setdefault(record["_run_dir"], set()).add(ctx.label[id(group)])
    rows = []
    for run in ctx.runs:
        devices = [r.get("device") or {} for r in run.records]
        rows.append(
            [
                f"`{_run_name(ctx, run.path)}`",
                ", ".join(f"`{x}`" for x in sorted(labels.get(str(run.path), ()))),
                len(run.records),
                _distinct([(r.get("info") or {}).get("code_commit") for r in run.records], "not recorded"),
                _distinct([_simulator(r) for r in run.records], "not recorded"),
                " ".join(f"`{o}`" for o in run.overrides) or "–",
                _distinct([short(d.get("renderer"), 60) if d.get("renderer") else None for d in devices], "–"),
                _distinct([_cpu(d) for d in devices], "not recorded"),
            ]
        )
    ctx.add(table(["run", "groups", "records", "code commit", "simulator", "overrides", "renderer", "CPU"], rows), "")
    ctx.add(
        f"Model: {ctx.model_label()}. Each run was started as `python -m sim_eval` with the overrides shown "
        "(its resolved config is in the run's `.hydra/`); records name the commit of the code that ran them, "
        "where they were written by a version that recorded it.",
        "",
    )

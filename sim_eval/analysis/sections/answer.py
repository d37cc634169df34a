"""``## Answer``: the report's opening paragraph -- the question sim_eval exists for (does success degrade smoothly
and boundedly under prefix reuse, or are there cliffs, and how many beyond chance?) answered in plain words from the
numbers of the sections below, for the model the records name."""

from __future__ import annotations

from sim_eval.analysis.compute import Arm, at_common_speed, zero_compute_sentence
from sim_eval.analysis.divergence import divergence_point
from sim_eval.analysis.runs import Group
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.control import ALPHA
from sim_eval.analysis.sections.fmt import pct, pvalue
from sim_eval.analysis.stats import inference_kind, parse_mode
from sim_eval.config import standard_step_limit


def _points(delta: float) -> str:
    return f"{delta * 100:+.1f} points"


def _mode_sentence(ctx: ReportContext, group: Group) -> str:
    label = ctx.label[id(group)]
    pairing = ctx.pairings[id(group)]
    text = (
        f"`{label}` succeeds on {pct(pairing.mode_rate)} of {pairing.n_pairs} paired episodes "
        f"({_points(pairing.delta)} "
        f"against `{ctx.label[id(ctx.baseline(group))]}`): {len(pairing.cliffs)} cliff(s), "
        f"{len(pairing.rescues)} rescue(s)"
    )
    found = ctx.excess.get(id(group))
    if found:
        control, ex = found[0]
        verdict = "beyond chance" if ex.exceeds(ALPHA) else "within chance"
        text += (
            f", {ex.excess:+d} against the control arm's {ex.control_cliffs} on the same {ex.pairs} episodes "
            f"(exact p {pvalue(ex.p_value)}: {verdict})"
        )
    return text + "."


def _reused(group: Group) -> str:
    """The inference kind that reuses instead of computing in ``group``: replayed frames for ``replay<N>``."""
    return "replayed" if parse_mode(group.mode)[0] == "replay" else "cached"


def _departures(ctx: ReportContext, group: Group, keys: list[str]) -> tuple[int, int | None, int]:
    """Over ``keys``: how many episodes depart from the baseline's (``divergence_point``), their median (lower)
    departure inference, and in how many the inference whose actions made the departure was a cached (for
    ``replay<N>``: replayed) frame (the one before, when the inputs are what departed)."""
    base = ctx.records_by_key[id(ctx.baseline(group))]
    mine = ctx.records_by_key[id(group)]
    found, cached = [], 0
    for key in keys:
        div = divergence_point(base[key], mine[key], views=ctx.views(group))
        if div is None:
            continue
        found.append(div.index)
        source = div.index - 1 if div.cause == "inputs" else div.index
        infs = mine[key].get("inferences") or []
        cached += 0 <= source < len(infs) and inference_kind(infs[source]) == _reused(group)
    median = sorted(found)[(len(found) - 1) // 2] if found else None
    return len(found), median, cached


def _where(ctx: ReportContext, modes: list[Group]) -> list[str]:
    lines = []
    for group in modes:
        cliffs = ctx.pairings[id(group)].cliffs
        n, median, cached = _departures(ctx, group, cliffs)
        if n:
            lines.append(
                f"under `{ctx.label[id(group)]}`, {n} of {len(cliffs)} cliff episodes depart from `full` by "
                f"inference {median} (median), and in {cached} of them the actions that departed came from a "
                f"{_reused(group)} frame"
            )
    for control in ctx.controls[:1]:
        pairing = ctx.pairings[id(control)]
        keys = [*pairing.both_success, *pairing.cliffs, *pairing.rescues, *pairing.both_fail]
        n, median, _ = _departures(ctx, control, keys)
        if n and lines:
            lines.append(
                f"the control arm's episodes depart as early (by inference {median}, {n} of {len(keys)} pairs) and "
                f"{len(pairing.both_success) + len(pairing.rescues)} of them succeed: when an episode departs does "
                "not by itself tell a cliff from chance"
            )
    return lines


def shortened(ctx: ReportContext) -> list[str]:
    """``suite: N of M steps`` for every suite whose records ran under a step limit below their protocol's
    (``eval.max_steps`` of a short test run): there a failure may be a timeout, not the model's."""
    found = {}
    for group in ctx.groups:
        for record in group.records:
            protocol = record.get("protocol") or {}
            limit, suite = protocol.get("max_steps"), record.get("suite")
            standard = standard_step_limit(str(protocol.get("name")), str(suite))
            if isinstance(limit, int) and standard is not None and limit < standard:
                found[str(suite)] = f"{suite}: {limit} of {standard} steps"
    return [found[suite] for suite in sorted(found)]


def arms(ctx: ReportContext) -> list[Arm]:
    """Every mode with finished, timed episodes as the zero-compute comparison sees it (control arms left out)."""
    out = []
    for group in ctx.groups:
        h = ctx.headlines[id(group)]
        if group.is_control or h["success_rate"] is None or h["compute_ms_per_step"] is None:
            continue
        out.append(Arm.from_headline(ctx.label[id(group)], parse_mode(group.mode)[0], h))
    return out


def render(ctx: ReportContext) -> None:
    modes = [g for g in ctx.groups if id(g) in ctx.pairings and not g.is_control and ctx.pairings[id(g)].n_pairs]
    if not modes:
        return  # nothing was compared with `full`: the headline says what there is
    ctx.add("## Answer", "")
    model = ctx.model_label()
    sizes = sorted({ctx.pairings[id(g)].n_pairs for g in modes})
    pairs = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    exceeding = [g for g in modes if (found := ctx.excess.get(id(g))) and found[0][1].exceeds(ALPHA)]
    lead = f"For {model}, over {pairs} paired episodes per mode: "
    if not ctx.controls:
        lead += (
            "there is no control arm among these runs, so how many of the cliffs below chance alone would make is "
            "not known (run `full` again at another `eval.seed`)."
        )
    elif exceeding:
        names = ", ".join(f"`{ctx.label[id(g)]}`" for g in exceeding)
        control = ctx.controls[0]
        lead += (
            f"**cliffs, not a smooth and bounded loss.** {names} lose episodes that `full` solves far more often "
            f"than the control arm (`{ctx.label[id(control)]}`, the same episodes under other noise: "
            f"{len(ctx.pairings[id(control)].cliffs)} cliff(s) in {ctx.pairings[id(control)].n_pairs}) does."
        )
    else:
        worst = min(modes, key=lambda g: ctx.pairings[id(g)].delta)
        lead += (
            f"**no mode exceeds the control arm**: no mode has more cliffs than `{ctx.label[id(ctx.controls[0])]}` "
            f"beyond chance (p < {ALPHA:g}); the largest paired loss is {_points(ctx.pairings[id(worst)].delta)} "
            f"(`{ctx.label[id(worst)]}`)."
        )
    cut = shortened(ctx)
    if cut:  # 0% there reads as a model failure when the episodes were cut short
        lead = (
            f"**Shortened episodes** (eval.max_steps below the protocol's limit; {', '.join(cut)}): successes the "
            "full limit would allow may be missing, so rates here are not the protocol's. " + lead
        )
    ctx.add(lead, "")
    for group in modes:
        ctx.add(f"- {_mode_sentence(ctx, group)}")
    ctx.add("")
    compared = arms(ctx)
    common = at_common_speed(compared)
    note = "(Compute = policy inference time per control step; see Headline.)"
    if common:
        compared, note = common
    zero = zero_compute_sentence(compared)
    if zero:
        ctx.add(f"{zero} {note}", "")
    ladder = sorted((g for g in modes if parse_mode(g.mode)[0] == "cache"), key=lambda g: parse_mode(g.mode)[1])
    if len(ladder) >= 2:
        steps = [ctx.baseline(ladder[0]), *ladder]
        steps = [f"`{ctx.label[id(g)]}` {pct(ctx.headlines[id(g)]['success_rate'])}" for g in steps]
        ctx.add(f"Success by reuse window: {' → '.join(steps)}.", "")
    where = _where(ctx, modes)
    if where:
        ctx.add("Where (see Cliff episodes): " + "; ".join(where) + ".", "")
    ctx.json["answer"] = {
        "exceeding_control": [ctx.label[id(g)] for g in exceeding],
        "has_control": bool(ctx.controls),
        "shortened": cut,
        "zero_compute": zero,
        "compute_at_common_speed": common[1] if common else None,
        "model": model,
    }

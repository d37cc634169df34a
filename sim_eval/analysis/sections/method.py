"""``## Method``: how each number of the report is computed."""

from __future__ import annotations

from sim_eval.analysis.sections.context import ReportContext


def render(ctx: ReportContext) -> None:
    ctx.add("## Method", "")
    ctx.add(
        "- Success rate = successes / finished episodes; 95% Wilson score interval.",
        "- Pairing: a mode's episode is paired with the `full` episode of the same policy and key "
        "(suite/task/episode: same init state, env seed and flow-matching noise). Keys present in only one run "
        "are *missing*, keys where either side crashed are *excluded*.",
        "- McNemar: exact two-sided binomial test on the discordant pairs (cliffs vs rescues), p = "
        "min(1, 2·P[X ≤ min(b, c)]), X ~ Bin(b + c, 1/2).",
        "- Inference kinds: *full* = scheduled full frame (every frame of `full`), *cached* = prefix reused, "
        "*forced* = adaptive refresh that ran full although the window allowed reuse. Latency is the policy's "
        "`infer_ms` (shadow-reference compute excluded).",
        "- Control rate = replan_steps / mean inference time: control steps per second of policy compute, the "
        "rate the policy alone could sustain (simulation time excluded).",
        "",
    )

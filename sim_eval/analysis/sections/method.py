"""``## Method``: how each number of the report is computed."""

from __future__ import annotations

from sim_eval.analysis.divergence import ACTION_COS_TOL, INPUT_MAE_TOL
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
        "- Runs are identified by policy, cache mode and `eval.seed` (the base of the per-episode noise); a mode is "
        "paired with `full` at its own seed. *Control arm*: `full` at another seed, paired with the baseline `full` "
        "(same episodes, other noise): its cliffs are chance alone.",
        "- Excess cliffs = mode cliffs − control cliffs on the keys paired in both arms; exact two-sided McNemar test "
        "on the discordant cliffs (mode only vs control only), and Newcombe's (1998, method 10) hybrid score 95% "
        "interval for the difference of the two paired cliff rates. A mode *exceeds* the control when its excess is "
        "positive with p < 0.05.",
        "- Episode length: control steps of successes (a failure runs to the step limit); paired Δsteps on the "
        "episodes both runs solved, exact two-sided sign test (ties dropped).",
        f"- Divergence point of a cliff: the first inference where the mode's inputs depart from the `full` "
        f"episode's (any lag MAE differing by more than {INPUT_MAE_TOL:g}; equal inputs give equal lag MAE in the "
        f"deterministic simulator) or, while they agree, its executed chunk departs from the one `full` executed "
        f"(shadow cos < {ACTION_COS_TOL:g}: with equal inputs the shadow's fresh chunk is `full`'s chunk). Records "
        "hold neither actions nor end-effector states, so these two recorded fields stand in for them.",
        "",
    )

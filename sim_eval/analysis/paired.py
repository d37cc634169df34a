"""Paired comparisons beyond the overall table of ``stats``: per suite, and a mode's cliffs against a *control arm*.

The control arm is ``full`` run again at another ``eval.seed``: the same episodes (task, init state, env seed), another
flow-matching noise stream. Paired with the baseline ``full`` run, its cliffs (success under the baseline, failure
under the control) are what chance alone -- a different noise draw -- costs; a cache mode's cliffs are read against
that floor. Both arms are paired with the same baseline, so on every episode key paired in both the baseline outcome
is shared and the two arms' cliff indicators are paired observations:

    both_cliff   the mode and the control both failed a baseline success
    mode_only    only the mode failed it          (the mode's excess)
    control_only only the control failed it
    neither      no cliff in either arm (a baseline failure always lands here)

*Excess cliffs* = mode cliffs - control cliffs on those common keys = ``mode_only - control_only``. The test is the
exact McNemar test on the discordant counts (``mode_only`` vs ``control_only``; under H0 -- the cache adds no cliff
beyond chance -- each discordant key is equally likely to be either, Bin(n, 1/2)); it conditions on the episodes and
needs no large-sample assumption, which matters at the handful of cliffs a study sees. The interval is Newcombe's
(1998, method 10) hybrid score interval for a difference of paired proportions -- Wilson intervals of the two cliff
rates combined with their estimated correlation -- which, unlike the Wald interval, stays inside [-1, 1] and keeps
its coverage at small counts."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sim_eval.analysis.stats import Z95, Pairing, mcnemar_exact, per_task_deltas, wilson_interval

Record = dict[str, Any]
CATEGORIES = ("both_success", "cliffs", "rescues", "both_fail")


def per_suite_deltas(pairing: Pairing, baseline: Iterable[Record]) -> list[dict[str, Any]]:
    """Per suite: pairs, baseline and mode successes on them, cliffs, rescues, rates, Δ and the exact McNemar p;
    the sum of ``stats.per_task_deltas`` over a suite's tasks (suites without a pair have ``pairs == 0``)."""
    rows: dict[Any, dict[str, Any]] = {}
    for task in per_task_deltas(pairing, baseline):
        row = rows.setdefault(
            task["suite"],
            {"suite": task["suite"], "pairs": 0, "baseline_successes": 0, "mode_successes": 0, "cliffs": 0,
             "rescues": 0},
        )  # fmt: skip
        for name in ("pairs", "baseline_successes", "mode_successes", "cliffs", "rescues"):
            row[name] += task[name]
    for row in rows.values():
        pairs = row["pairs"]
        row["baseline_rate"] = row["baseline_successes"] / pairs if pairs else None
        row["mode_rate"] = row["mode_successes"] / pairs if pairs else None
        row["delta"] = (row["mode_successes"] - row["baseline_successes"]) / pairs if pairs else None
        row["mcnemar_p"] = mcnemar_exact(row["cliffs"], row["rescues"]) if pairs else None
    return list(rows.values())


def paired_difference_ci(
    both: int, only_first: int, only_second: int, neither: int, z: float = Z95
) -> tuple[float, float] | None:
    """Newcombe's (1998, method 10) interval for ``p1 - p2`` of two paired binary outcomes, with ``p1 = (both +
    only_first) / n`` and ``p2 = (both + only_second) / n``; ``None`` without pairs.

    The correlation term uses Newcombe's continuity-corrected phi (as in Altman et al., *Statistics with
    Confidence*, 2nd ed., p. 52): ``A·D - B·C`` reduced by ``n/2`` when above it, kept when negative, else 0."""
    counts = (both, only_first, only_second, neither)
    if min(counts) < 0:
        raise ValueError(f"counts must be >= 0, got {counts}")
    n = sum(counts)
    if n == 0:
        return None
    first, second = both + only_first, both + only_second
    p1, p2 = first / n, second / n
    l1, u1 = wilson_interval(first, n, z)
    l2, u2 = wilson_interval(second, n, z)
    margins = first * (n - first) * second * (n - second)
    cross = both * neither - only_first * only_second
    corrected = cross - n / 2 if cross > n / 2 else cross if cross < 0 else 0.0
    phi = corrected / math.sqrt(margins) if margins > 0 else 0.0
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, low), min(1.0, high)


@dataclass
class ExcessCliffs:
    """A mode's cliffs against a control arm's, both paired with the same baseline, on the keys paired in both."""

    pairs: int
    both_cliff: int
    mode_only: int
    control_only: int
    mode_rescues: int
    control_rescues: int

    @property
    def mode_cliffs(self) -> int:
        return self.both_cliff + self.mode_only

    @property
    def control_cliffs(self) -> int:
        return self.both_cliff + self.control_only

    @property
    def excess(self) -> int:
        """Mode cliffs minus control cliffs on the common pairs."""
        return self.mode_only - self.control_only

    @property
    def excess_rate(self) -> float | None:
        return self.excess / self.pairs if self.pairs else None

    @property
    def p_value(self) -> float:
        """Exact two-sided McNemar p on the discordant keys (mode-only vs control-only cliffs)."""
        return mcnemar_exact(self.mode_only, self.control_only)

    @property
    def interval(self) -> tuple[float, float] | None:
        """Newcombe 95% interval of the excess cliff rate (mode cliff rate - control cliff rate on the pairs)."""
        neither = self.pairs - self.both_cliff - self.mode_only - self.control_only
        return paired_difference_ci(self.both_cliff, self.mode_only, self.control_only, neither)

    def exceeds(self, alpha: float = 0.05) -> bool:
        """More cliffs than the control beyond chance: a positive excess with exact p < ``alpha``."""
        return self.excess > 0 and self.p_value < alpha


def _paired_keys(pairing: Pairing) -> set[str]:
    return {key for name in CATEGORIES for key in getattr(pairing, name)}


def excess_cliffs(mode: Pairing, control: Pairing) -> ExcessCliffs:
    """Compare ``mode`` (a cache mode vs the baseline) with ``control`` (the control arm vs the same baseline) on the
    episode keys paired in both; a key missing or crashed in either arm is left out of both counts."""
    common = _paired_keys(mode) & _paired_keys(control)
    mode_cliffs, control_cliffs = set(mode.cliffs) & common, set(control.cliffs) & common
    return ExcessCliffs(
        pairs=len(common),
        both_cliff=len(mode_cliffs & control_cliffs),
        mode_only=len(mode_cliffs - control_cliffs),
        control_only=len(control_cliffs - mode_cliffs),
        mode_rescues=len(set(mode.rescues) & common),
        control_rescues=len(set(control.rescues) & common),
    )

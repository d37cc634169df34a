"""Propose the ``adaptive<N>`` pixel-MAE threshold that gives a target refresh fraction, from closed-loop records.

The rule being calibrated (``sim_eval/policies/cache.py``): after a full frame the next N-1 inferences may reuse its
prefix; before each of them the controller computes the max-over-views pixel MAE between the current model-input images
and those of the last full frame, and runs full instead (a *forced refresh*, which starts a new window) when
``MAE >= threshold``. The *refresh fraction* is forced refreshes / frames the window allowed to be cached -- the
fraction of MAE checks that fire.

Two sources, best first:

1. **Replay of lag MAE** (``lag_mae`` of each inference: max-over-views MAE against the model inputs 1..L inferences
   earlier, recorded by the evaluator -- in ``full`` runs preferably, whose trajectory no cache has altered). The rule
   is replayed exactly on each episode's inference sequence: a candidate frame at distance k from the last full frame
   is compared through ``lag_mae[k-1]``, a forced refresh resets the window. This counts what the rule would have done
   on those observations for any threshold, including the knock-on effect that a refresh shortens later lags. It needs
   L >= N-1. What it cannot see is that caching changes the actions and hence the later observations; the trajectories
   of a ``full`` run are the closest closed-loop stand-in, and the proposal should be checked by running it.
2. **Candidate MAE of adaptive runs** (``pixel_mae`` on the frames that were MAE-checked): the refresh fraction at
   threshold t is estimated as the fraction of recorded checks with MAE >= t. A first-order estimate: it is exact at
   the threshold the run used and drifts away from it, because a different threshold changes which frame is the
   reference of later checks.

The refresh fraction falls as the threshold rises (a replayed refresh can raise later lags, so the fall need not be
strictly monotone); the proposal is the smallest recorded MAE value t whose refresh fraction is <= the target, found
by bisection over the sorted distinct values (the fraction only changes there), and the achieved fraction is reported
next to it rather than assumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim_eval.analysis.stats import BASELINE_MODE, distribution, mae_values, parse_mode

Record = dict[str, Any]


@dataclass
class Proposal:
    source: str  # "lag_mae replay" or "adaptive pixel_mae"
    period: int
    target: float
    threshold: float
    achieved: float  # refresh fraction at ``threshold``
    below_threshold_fraction: float | None  # refresh fraction at the next lower distinct value (the step size)
    checks: int  # MAE checks the fraction is computed over, at the proposed threshold
    episodes: int
    curve: list[tuple[float, float]]  # (threshold, refresh fraction) at a few quantiles, for the reader


def lag_sequences(records: Iterable[Record]) -> list[list[list[float] | None]]:
    """Per episode, the ``lag_mae`` list of every inference (``None`` where absent); episodes without any skipped."""
    sequences = []
    for record in records:
        seq = [inf.get("lag_mae") for inf in record.get("inferences") or []]
        if any(seq):
            sequences.append(seq)
    return sequences


LagSequence = Sequence[Sequence[float] | None]


def replay_refresh(sequences: Sequence[LagSequence], period: int, threshold: float) -> tuple[int, int]:
    """(forced refreshes, MAE checks) of the ``adaptive<period>`` rule replayed on lag-MAE sequences.

    A check whose lag is not recorded (the first inferences of an episode have fewer lags) cannot happen: a frame at
    distance k from the last full one always has k earlier inferences."""
    forced = checks = 0
    for seq in sequences:
        since_full: int | None = None  # inferences since the last full frame; None before the first
        for lags in seq:
            if since_full is None or since_full + 1 >= period:
                since_full = 0  # scheduled full frame
                continue
            distance = since_full + 1
            if not lags or len(lags) < distance or lags[distance - 1] is None:
                raise ValueError(f"lag_mae has {len(lags or [])} lags; adaptive{period} needs lag {distance}")
            checks += 1
            if lags[distance - 1] >= threshold:
                forced += 1
                since_full = 0
            else:
                since_full = distance
    return forced, checks


def _propose(values: np.ndarray, fraction_at: Callable[[float], tuple[int, int]], target: float) -> tuple[float, ...]:
    """Smallest candidate t with refresh fraction <= target (bisection), plus its fraction, the fraction at the next
    lower candidate and the number of checks at t. Above the largest value nothing fires."""
    candidates = np.unique(values)
    top = float(np.nextafter(candidates[-1], math.inf))
    grid = [*map(float, candidates), top]

    def frac(t: float) -> tuple[float, int]:
        forced, checks = fraction_at(t)
        return (forced / checks if checks else 0.0), checks

    lo, hi = 0, len(grid) - 1  # invariant: frac(grid[hi]) <= target (nothing fires at ``top``)
    while lo < hi:
        mid = (lo + hi) // 2
        if frac(grid[mid])[0] <= target:
            hi = mid
        else:
            lo = mid + 1
    achieved, checks = frac(grid[hi])
    below = frac(grid[hi - 1])[0] if hi > 0 else None
    return grid[hi], achieved, below, checks


def _curve(values: np.ndarray, fraction_at: Callable[[float], tuple[int, int]]) -> list[tuple[float, float]]:
    points = []
    for q in (10, 25, 50, 75, 90, 95, 99):
        t = float(np.percentile(values, q))
        forced, checks = fraction_at(t)
        points.append((t, forced / checks if checks else 0.0))
    return points


def propose_from_lags(records: Sequence[Record], period: int, target: float) -> Proposal | None:
    """Replay-based proposal; ``None`` without ``lag_mae`` records."""
    sequences = lag_sequences(records)
    values = np.asarray(
        [
            lags[k]
            for seq in sequences
            for lags in seq
            if lags
            for k in range(min(len(lags), period - 1))
            if lags[k] is not None
        ],
        dtype=float,
    )
    if values.size == 0:
        return None

    def fraction_at(t: float) -> tuple[int, int]:
        return replay_refresh(sequences, period, t)

    threshold, achieved, below, checks = _propose(values, fraction_at, target)
    return Proposal(
        "lag_mae replay",
        period,
        target,
        threshold,
        achieved,
        below,
        checks,
        len(sequences),
        _curve(values, fraction_at),
    )


def propose_from_checks(
    records: Sequence[Record], period: int, target: float, views: Sequence[str] | None = None
) -> Proposal | None:
    """Proposal from the MAE checks recorded by adaptive runs; ``None`` when there are none."""
    values = np.asarray(mae_values(records, views), dtype=float)
    if values.size == 0:
        return None

    def fraction_at(t: float) -> tuple[int, int]:
        return int((values >= t).sum()), int(values.size)

    threshold, achieved, below, checks = _propose(values, fraction_at, target)
    episodes = sum(1 for r in records if mae_values([r], views))
    return Proposal(
        "adaptive pixel_mae", period, target, threshold, achieved, below, checks, episodes, _curve(values, fraction_at)
    )


def adaptive_periods(records: Iterable[Record]) -> set[int]:
    periods = set()
    for record in records:
        kind, period = parse_mode(record.get("cache_mode"))
        if kind == "adaptive" and period:
            periods.add(period)
    return periods


def calibrate(
    records: Sequence[Record], target: float, period: int | None = None, views: Sequence[str] | None = None
) -> dict[str, Any]:
    """Both proposals where their data exist, plus the MAE distributions they rest on.

    ``period`` defaults to the N of the adaptive runs among ``records`` when they agree, else 3 (``adaptive3``, the
    mode of the issue's examples); pass it explicitly for anything else."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target refresh fraction must be in [0, 1], got {target}")
    if period is None:
        found = adaptive_periods(records)
        period = found.pop() if len(found) == 1 else 3
    if period < 2:
        raise ValueError(f"adaptive<N> needs N >= 2, got {period}")
    full = [r for r in records if r.get("cache_mode") == BASELINE_MODE]
    # the full runs' trajectories are unaltered by caching; other runs' lags are the fallback
    lag_source = full if lag_sequences(full) else list(records)
    adaptive = [r for r in records if parse_mode(r.get("cache_mode"))[0] == "adaptive"]
    lag_dist = {}
    for seq in lag_sequences(lag_source):
        for lags in seq:
            for k, value in enumerate(lags or [], start=1):
                if value is not None:
                    lag_dist.setdefault(k, []).append(float(value))
    check_values = mae_values(adaptive, views)
    max_lag = max(lag_dist, default=0)
    # the replay needs the MAE against the last full frame at every window position, i.e. lags 1..N-1
    replay = propose_from_lags(lag_source, period, target) if max_lag >= period - 1 else None
    return {
        "period": period,
        "target": target,
        "lag_source_modes": sorted({str(r.get("cache_mode")) for r in lag_source if r.get("inferences")}),
        "lag_distribution": {k: distribution(v) for k, v in sorted(lag_dist.items())},
        "check_distribution": distribution(check_values),
        "max_lag": max_lag,
        "replay": replay,
        "checks": propose_from_checks(adaptive, period, target, views),
    }

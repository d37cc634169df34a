"""Statistics of closed-loop episode records: success with confidence intervals, paired comparison against the
``full`` baseline, latency per inference kind, refresh behaviour, pixel MAE and the shadow reference.

Everything here is a pure function of episode records (``sim_eval.records.episodes``); nothing is counted anywhere
else, so a report, a wandb summary and a test all see the same numbers.

Conventions:
    * A record with ``error`` set is a crashed episode: neither success nor failure, excluded from success-rate
      denominators and from pairs, and counted separately.
    * Records are grouped by ``(policy, cache_mode, seed)``, ``seed`` being ``eval.seed``, the base of the per-episode
      flow-matching noise (``record_seed``). The baseline of a mode is the ``full`` group of the same policy and seed;
      a ``full`` group at another seed is a *control arm* (``analysis.runs``, ``analysis.paired``).
    * Inference kinds: ``forced`` (``forced_refresh`` true: an adaptive refresh that ran the full prefix although the
      window allowed reuse), ``full`` (``used_full`` true and not forced -- a scheduled full frame, or every frame of a
      policy without a cache controller, where ``used_full`` is absent), ``cached`` (``used_full`` false), ``replayed``
      (``replayed`` true: a ``replay<N>`` frame that executed the stored chunk's next actions without calling the
      model; ``infer_ms`` 0).
    * The *inference index* of a call is its 0-based position in the episode's ``inferences`` list.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from sim_eval.analysis.compute import compute_per_step_ms, mean_compute_per_step_ms
from sim_eval.policies.cache_mode import DEFAULT_THRESHOLD, parse_arm
from sim_eval.records.episodes import arm_mode, dedupe, record_seed

Z95 = 1.959963984540054  # two-sided 95% normal quantile, scipy.stats.norm.ppf(0.975)
COS_THRESHOLDS = (0.9, 0.8, 0.5)
KINDS = ("full", "cached", "forced")
# With the zero-compute arm's frames (``replay<N>``: the model not called, ``replayed`` true, ``infer_ms`` 0). Kept
# apart from KINDS so tables of the cache modes keep their columns.
ALL_KINDS = (*KINDS, "replayed")
BASELINE_MODE = "full"

Record = dict[str, Any]


# --------------------------------------------------------------------------------------------------------------------
# Success rates


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; ``None`` when ``n == 0`` (no finished episode, no estimate).

    Chosen over the normal (Wald) interval because success rates near 0% or 100% are common here and Wald collapses
    to a zero-width interval at the edges."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return None
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def count_outcomes(group: list[Record]) -> dict[str, Any]:
    """Episodes, finished, successes, failures, errors and success rate of deduplicated records (crashed episodes
    are counted apart and left out of the rate, which is None when none finished)."""
    errors = sum(1 for r in group if r.get("error") is not None)
    successes = sum(1 for r in group if r.get("error") is None and r.get("success") is True)
    finished = len(group) - errors
    return {
        "episodes": len(group),
        "finished": finished,
        "successes": successes,
        "failures": finished - successes,
        "errors": errors,
        "success_rate": successes / finished if finished else None,
    }


def success_counts(records: Iterable[Record]) -> dict[str, Any]:
    """Counts and success rate (with Wilson 95% bounds) of already-deduplicated records of one group."""
    counts = count_outcomes(list(records))
    interval = wilson_interval(counts["successes"], counts["finished"])
    return {
        **counts,
        "ci_low": interval[0] if interval else None,
        "ci_high": interval[1] if interval else None,
    }


def group_records(records: Iterable[Record]) -> dict[tuple[str, str, int], list[Record]]:
    """Deduplicated records keyed by ``(policy, arm mode, seed)`` (``arm_mode``: the cache mode, with the refresh
    rule when an adaptive one is not the default), sorted by policy, then ``full`` first and by mode
    period, then by seed. Deduplication runs per group: two ``full`` runs at different seeds share every episode key
    and must not replace each other's records."""
    groups: dict[tuple[str, str, int], list[Record]] = defaultdict(list)
    for record in records:
        groups[(str(record.get("policy")), arm_mode(record), record_seed(record))].append(record)
    order = sorted(groups, key=lambda k: (k[0], mode_sort_key(k[1]), k[2]))
    return {key: dedupe(groups[key]) for key in order}


def mode_sort_key(mode: str) -> tuple:
    """``full`` first, then the zero-compute ``replay<N>`` by N, then ``cache<N>`` by N, then ``adaptive<N>`` by N and
    refresh threshold, then anything else by name."""
    arm = parse_arm(mode)
    order = {"full": 0, "replay": 1, "cache": 2, "adaptive": 3}.get(arm.kind, 4)
    return order, arm.period or 0, DEFAULT_THRESHOLD if arm.threshold is None else arm.threshold, mode


def parse_mode(mode: str) -> tuple[str, int | None]:
    """``(kind, N)`` of a record's mode or arm name by the one grammar (``sim_eval.policies.cache_mode.parse_arm``):
    ``("full", 1)``, ``("cache", N)``, ``("adaptive", N)``, ``("replay", N)``, or ``(mode, None)`` for anything else
    (e.g. ``-``). An arm's refresh rule (``adaptive3@mae4.2``) is not part of the kind."""
    arm = parse_arm(mode)
    return arm.kind, arm.period


def success_by(records: Iterable[Record], fields: Sequence[str]) -> dict[tuple, dict[str, Any]]:
    """``success_counts`` per distinct value of ``fields`` (e.g. ``("suite",)`` or ``("suite", "task_id")``)."""
    buckets: dict[tuple, list[Record]] = defaultdict(list)
    for record in records:
        buckets[tuple(record.get(f) for f in fields)].append(record)
    return {key: success_counts(buckets[key]) for key in sorted(buckets, key=lambda k: tuple(map(str, k)))}


# --------------------------------------------------------------------------------------------------------------------
# Paired comparison against the full baseline


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar test: under H0 the ``b + c`` discordant pairs split Binomial(b + c, 1/2); the p-value is
    twice the smaller tail, capped at 1. ``1.0`` when there are no discordant pairs (nothing contradicts H0).

    Computed with exact integer arithmetic so it is right for any number of pairs."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


@dataclass
class Pairing:
    """Outcome of every episode key of a mode against the ``full`` baseline of the same policy.

    Only keys present in both runs with both episodes finished form a pair. ``cliffs`` are pairs where the baseline
    succeeded and the mode failed; ``rescues`` the reverse."""

    policy: str
    mode: str
    both_success: list[str] = field(default_factory=list)
    cliffs: list[str] = field(default_factory=list)
    rescues: list[str] = field(default_factory=list)
    both_fail: list[str] = field(default_factory=list)
    missing_in_mode: list[str] = field(default_factory=list)  # baseline has it, the mode run does not
    missing_in_baseline: list[str] = field(default_factory=list)
    baseline_errors: list[str] = field(default_factory=list)  # shared keys whose baseline episode crashed
    mode_errors: list[str] = field(default_factory=list)  # shared keys whose mode episode crashed

    @property
    def n_pairs(self) -> int:
        return len(self.both_success) + len(self.cliffs) + len(self.rescues) + len(self.both_fail)

    @property
    def error_excluded(self) -> int:
        """Shared keys left out because either side crashed (a key where both crashed counts once)."""
        return len(set(self.baseline_errors) | set(self.mode_errors))

    @property
    def mcnemar_p(self) -> float:
        return mcnemar_exact(len(self.cliffs), len(self.rescues))

    @property
    def baseline_rate(self) -> float | None:
        return (len(self.both_success) + len(self.cliffs)) / self.n_pairs if self.n_pairs else None

    @property
    def mode_rate(self) -> float | None:
        return (len(self.both_success) + len(self.rescues)) / self.n_pairs if self.n_pairs else None

    @property
    def delta(self) -> float | None:
        """Mode success rate minus baseline success rate on the paired episodes; ``(rescues - cliffs) / pairs``."""
        return (len(self.rescues) - len(self.cliffs)) / self.n_pairs if self.n_pairs else None

    def category(self, key: str) -> str | None:
        for name in ("both_success", "cliffs", "rescues", "both_fail"):
            if key in getattr(self, name):
                return name
        return None


def pair_with_baseline(baseline: Iterable[Record], mode: Iterable[Record]) -> Pairing:
    """Pair ``mode`` records with ``baseline`` (``full``) records by episode key; both lists of one policy.

    Keys are sorted in every list so the output is deterministic."""
    base_by_key = {r["key"]: r for r in dedupe(baseline)}
    mode_by_key = {r["key"]: r for r in dedupe(mode)}
    some = next(iter(mode_by_key.values()), None) or next(iter(base_by_key.values()), None) or {}
    pairing = Pairing(policy=str(some.get("policy")), mode=arm_mode(some))
    for key in sorted(set(base_by_key) | set(mode_by_key), key=_key_order):
        base, other = base_by_key.get(key), mode_by_key.get(key)
        if other is None:
            pairing.missing_in_mode.append(key)
            continue
        if base is None:
            pairing.missing_in_baseline.append(key)
            continue
        crashed = False
        if base.get("error") is not None:
            pairing.baseline_errors.append(key)
            crashed = True
        if other.get("error") is not None:
            pairing.mode_errors.append(key)
            crashed = True
        if crashed:
            continue
        base_ok, mode_ok = base.get("success") is True, other.get("success") is True
        if base_ok and mode_ok:
            pairing.both_success.append(key)
        elif base_ok:
            pairing.cliffs.append(key)
        elif mode_ok:
            pairing.rescues.append(key)
        else:
            pairing.both_fail.append(key)
    return pairing


def _key_order(key: str) -> tuple:
    # "suite/task/episode": numeric order of task and episode reads naturally (task 10 after task 9)
    parts = key.split("/")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def per_task_deltas(pairing: Pairing, baseline: Iterable[Record]) -> list[dict[str, Any]]:
    """Per ``(suite, task_id)``: paired episodes, baseline and mode successes on them, delta, cliffs and rescues.

    Tasks come from the baseline records (a pair always has one); tasks without a single pair are listed with
    ``pairs == 0`` and ``delta None`` so a reader sees they were not compared."""
    task_of: dict[str, tuple] = {}
    language: dict[tuple, Any] = {}
    for record in baseline:
        task = (record.get("suite"), record.get("task_id"))
        task_of[record["key"]] = task
        language.setdefault(task, record.get("task_language"))
    rows: dict[tuple, dict[str, Any]] = {
        task: {
            "suite": task[0],
            "task_id": task[1],
            "language": language[task],
            "pairs": 0,
            "baseline_successes": 0,
            "mode_successes": 0,
            "cliffs": 0,
            "rescues": 0,
        }
        for task in sorted(language, key=lambda t: (str(t[0]), _as_int(t[1])))
    }
    for name, base_ok, mode_ok in (("both_success", 1, 1), ("cliffs", 1, 0), ("rescues", 0, 1), ("both_fail", 0, 0)):
        for key in getattr(pairing, name):
            row = rows[task_of[key]]
            row["pairs"] += 1
            row["baseline_successes"] += base_ok
            row["mode_successes"] += mode_ok
            row["cliffs"] += name == "cliffs"
            row["rescues"] += name == "rescues"
    for row in rows.values():
        pairs = row["pairs"]
        row["baseline_rate"] = row["baseline_successes"] / pairs if pairs else None
        row["mode_rate"] = row["mode_successes"] / pairs if pairs else None
        row["delta"] = (row["mode_successes"] - row["baseline_successes"]) / pairs if pairs else None
    return list(rows.values())


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


# --------------------------------------------------------------------------------------------------------------------
# Inference kinds, latency, refresh, control rate


def inference_kind(inference: dict[str, Any]) -> str:
    """``full``, ``cached``, ``forced`` or ``replayed`` (see the module docstring)."""
    if inference.get("replayed"):
        return "replayed"
    if inference.get("forced_refresh"):
        return "forced"
    if inference.get("used_full", True):
        return "full"
    return "cached"


def _percentiles(values: Sequence[float], qs: Sequence[float]) -> dict[str, float | None]:
    if len(values) == 0:
        return {f"p{q:g}": None for q in qs}
    result = np.percentile(np.asarray(values, dtype=float), qs)
    return {f"p{q:g}": float(v) for q, v in zip(qs, result, strict=True)}


def latency_by_kind(records: Iterable[Record]) -> dict[str, dict[str, Any]]:
    """Per inference kind and ``all``: count, p50/p95/p99/mean of ``infer_ms``, mean ``prefix_ms`` and ``denoise_ms``.

    Every recorded inference counts, including those of crashed episodes (each was a completed call); a kind that
    never occurred has ``n == 0`` and ``None`` statistics. Shadow-reference compute is not part of ``infer_ms`` (the
    policy excludes it), so these are the latencies of what was executed."""
    buckets: dict[str, list[dict]] = {kind: [] for kind in (*ALL_KINDS, "all")}
    for record in records:
        for inference in record.get("inferences") or []:
            if inference.get("infer_ms") is None:
                continue
            buckets[inference_kind(inference)].append(inference)
            buckets["all"].append(inference)
    result = {}
    for kind, infs in buckets.items():
        ms = [float(i["infer_ms"]) for i in infs]
        prefix = [float(i["prefix_ms"]) for i in infs if i.get("prefix_ms") is not None]
        denoise = [float(i["denoise_ms"]) for i in infs if i.get("denoise_ms") is not None]
        result[kind] = {
            "n": len(ms),
            **_percentiles(ms, (50, 95, 99)),
            "mean": float(np.mean(ms)) if ms else None,
            "prefix_ms_mean": float(np.mean(prefix)) if prefix else None,
            "denoise_ms_mean": float(np.mean(denoise)) if denoise else None,
        }
    return result


def typical_compute_per_step_ms(records: Iterable[Record]) -> float | None:
    """Policy compute per control step from each inference kind's median latency: the sum over kinds of count x
    median ``infer_ms``, over the control steps of the finished, timed episodes. A burst of other work on the machine
    moves the mean (``compute_per_step_ms``) but hardly the medians; the report compares runs of unequal speed with
    it (``compute.at_common_speed``). ``None`` without a finished, timed episode."""
    timed = [r for r in records if compute_per_step_ms(r) is not None]
    steps = sum(int(r["steps"]) for r in timed)
    if not steps:
        return None
    latency = latency_by_kind(timed)
    return sum(latency[kind]["n"] * (latency[kind]["p50"] or 0.0) for kind in ALL_KINDS) / steps


def refresh_stats(records: Iterable[Record]) -> dict[str, Any]:
    """How often the prefix was recomputed.

    ``full_fraction``: inferences that ran the full prefix (scheduled or forced) / all inferences.
    ``refresh_fraction``: forced refreshes / inferences the window allowed to be cached (forced + cached) -- the
    fraction of pixel-MAE checks that fired, i.e. what an adaptive threshold controls. ``None`` when no inference was
    eligible for caching (a ``full`` run)."""
    counts = dict.fromkeys(ALL_KINDS, 0)
    for record in records:
        for inference in record.get("inferences") or []:
            counts[inference_kind(inference)] += 1
    total = sum(counts.values())
    eligible = counts["forced"] + counts["cached"]
    return {
        "inferences": total,
        **{f"{kind}_inferences": counts[kind] for kind in ALL_KINDS},
        "full_fraction": (counts["full"] + counts["forced"]) / total if total else None,
        "refresh_fraction": counts["forced"] / eligible if eligible else None,
    }


def replan_steps_of(records: Iterable[Record]) -> int | None:
    """The protocol's ``replan_steps`` (actions executed per inference), from the records' ``protocol``; when absent,
    the most common step difference between consecutive inferences."""
    diffs: list[int] = []
    for record in records:
        replan = (record.get("protocol") or {}).get("replan_steps")
        if replan:
            return int(replan)
        steps = [i.get("step") for i in record.get("inferences") or [] if i.get("step") is not None]
        diffs.extend(b - a for a, b in itertools.pairwise(steps) if b > a)
    if not diffs:
        return None
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])


def control_rate_hz(records: Sequence[Record]) -> float | None:
    """Effective control rate in Hz: control steps per second of policy compute,
    ``replan_steps * (number of inferences) / (sum of infer_ms / 1000)`` = ``replan_steps / mean inference time``.

    It is the control frequency the policy alone could sustain if each inference's chunk executed ``replan_steps``
    actions and the robot waited for nothing else (simulation and rendering time are excluded); it makes the latency
    gain of a cache mode comparable with the robot's control period (LIBERO runs at 20 Hz). ``None`` without timed
    inferences or without a known ``replan_steps``."""
    replan = replan_steps_of(records)
    times = [float(i["infer_ms"]) for r in records for i in r.get("inferences") or [] if i.get("infer_ms") is not None]
    total_s = sum(times) / 1000.0
    if replan is None or not times or total_s <= 0:
        return None
    return replan * len(times) / total_s


# --------------------------------------------------------------------------------------------------------------------
# Pixel MAE


def inference_mae(inference: dict[str, Any], views: Sequence[str] | None = None) -> float | None:
    """Max over ``views`` (all recorded views when ``None``) of the controller's ``pixel_mae``; ``None`` when the
    controller did not compute it on this frame (full frames, or views not recorded)."""
    per_view = inference.get("pixel_mae")
    if not per_view:
        return None
    if isinstance(per_view, (int, float)):
        return float(per_view)
    values = [float(v) for view, v in per_view.items() if v is not None and (views is None or view in views)]
    return max(values) if values else None


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, p10/p50/p90/p95/p99 and max of ``values``; ``None`` statistics when empty."""
    arr = np.asarray(values, dtype=float)
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()) if arr.size else None,
        **_percentiles(arr, (10, 50, 90, 95, 99)),
        "max": float(arr.max()) if arr.size else None,
    }


def mae_values(
    records: Iterable[Record], views: Sequence[str] | None = None, kinds: Sequence[str] = ("cached", "forced")
) -> list[float]:
    """The controller's max-over-views pixel MAE on frames of ``kinds``. The default, cached and forced frames, are the
    frames the window allowed to reuse the prefix: their MAE is against the last full frame, i.e. the *checks* an
    adaptive threshold acts on (the controller also records MAE on scheduled full frames, against the previous full
    frame, which no threshold sees)."""
    values = []
    for record in records:
        for inference in record.get("inferences") or []:
            if inference_kind(inference) not in kinds:
                continue
            mae = inference_mae(inference, views)
            if mae is not None:
                values.append(mae)
    return values


def staleness_mae(record: Record, views: Sequence[str] | None = None) -> list[float | None]:
    """Per inference, the MAE between its model inputs and those of the full frame whose prefix it would reuse: 0 for
    a scheduled full frame (fresh prefix), the controller's check (``pixel_mae``) where recorded, else the evaluator's
    ``lag_mae`` at the distance to the last full frame (``cache<N>`` runs do not check), ``None`` when neither
    exists."""
    out: list[float | None] = []
    since_full: int | None = None
    for inference in record.get("inferences") or []:
        kind = inference_kind(inference)
        if kind == "full" or since_full is None:
            out.append(0.0 if kind == "full" else None)
            since_full = 0
            continue
        distance = since_full + 1
        value = inference_mae(inference, views)
        lags = inference.get("lag_mae") or []
        if value is None and len(lags) >= distance and lags[distance - 1] is not None:
            value = float(lags[distance - 1])
        out.append(value)
        since_full = 0 if kind == "forced" else distance
    return out


def lag_mae_values(records: Iterable[Record]) -> dict[int, list[float]]:
    """Lag k -> the evaluator's max-over-views MAE between each inference's model inputs and those k inferences
    earlier (``lag_mae[k-1]``), over all inferences that have it."""
    by_lag: dict[int, list[float]] = defaultdict(list)
    for record in records:
        for inference in record.get("inferences") or []:
            for lag, value in enumerate(inference.get("lag_mae") or [], start=1):
                if value is not None:
                    by_lag[lag].append(float(value))
    return dict(sorted(by_lag.items()))


def fraction_at_least(values: Sequence[float], threshold: float) -> float | None:
    arr = np.asarray(values, dtype=float)
    return float((arr >= threshold).mean()) if arr.size else None


# --------------------------------------------------------------------------------------------------------------------
# Shadow reference


def shadow_episode_metrics(record: Record, thresholds: Sequence[float] = COS_THRESHOLDS) -> dict[str, Any] | None:
    """Per episode, from the cached frames that carry ``shadow_cos`` (executed vs fresh full-frame action chunk):
    ``shadow_frames``, ``cos_min``, ``cos_mean``, ``max_abs_max``, and for each threshold t ``first_below[t]`` (the
    inference index of the first frame with cosine < t, ``None`` if none) and ``frac_below[t]`` (fraction of shadow
    frames with cosine < t). ``None`` when the episode has no shadow frame."""
    cos, max_abs = [], []
    first_below: dict[float, int | None] = dict.fromkeys(thresholds)
    for index, inference in enumerate(record.get("inferences") or []):
        value = inference.get("shadow_cos")
        if value is None:
            continue
        value = float(value)
        cos.append(value)
        if inference.get("shadow_max_abs") is not None:
            max_abs.append(float(inference["shadow_max_abs"]))
        for t in thresholds:
            if value < t and first_below[t] is None:
                first_below[t] = index
    if not cos:
        return None
    arr = np.asarray(cos)
    return {
        "shadow_frames": len(cos),
        "cos_min": float(arr.min()),
        "cos_mean": float(arr.mean()),
        "max_abs_max": max(max_abs) if max_abs else None,
        "first_below": first_below,
        "frac_below": {t: float((arr < t).mean()) for t in thresholds},
    }


def shadow_summary(records: Iterable[Record], thresholds: Sequence[float] = COS_THRESHOLDS) -> dict[str, Any]:
    """Across a group's episodes with shadow frames: how many, median and minimum ``cos_min``, and per threshold the
    fraction of episodes that ever went below it, the median first index below it (among those that did) and the
    fraction of all shadow frames below it."""
    metrics = [m for m in (shadow_episode_metrics(r, thresholds) for r in records) if m is not None]
    frames = sum(m["shadow_frames"] for m in metrics)
    summary: dict[str, Any] = {
        "episodes": len(metrics),
        "frames": frames,
        "cos_min_median": float(np.median([m["cos_min"] for m in metrics])) if metrics else None,
        "cos_min_min": min((m["cos_min"] for m in metrics), default=None),
        "below": {},
    }
    for t in thresholds:
        firsts = [m["first_below"][t] for m in metrics if m["first_below"][t] is not None]
        below_frames = sum(m["frac_below"][t] * m["shadow_frames"] for m in metrics)
        summary["below"][t] = {
            "episode_fraction": len(firsts) / len(metrics) if metrics else None,
            "first_index_median": float(np.median(firsts)) if firsts else None,
            "frame_fraction": below_frames / frames if frames else None,
        }
    return summary


# --------------------------------------------------------------------------------------------------------------------
# Headline numbers of one group


def headline(records: Sequence[Record], baseline: Sequence[Record] | None = None) -> dict[str, Any]:
    """Flat dict of the numbers a person looks at first for one ``(policy, cache_mode)`` group; ``baseline`` (the
    ``full`` records of the same policy) adds the paired comparison. Values are numbers or ``None``."""
    records = dedupe(records)
    counts = success_counts(records)
    latency = latency_by_kind(records)
    refresh = refresh_stats(records)
    mae = distribution(mae_values(records))
    shadow = shadow_summary(records)
    out: dict[str, Any] = {
        "episodes": counts["episodes"],
        "finished": counts["finished"],
        "successes": counts["successes"],
        "errors": counts["errors"],
        "success_rate": counts["success_rate"],
        "success_ci_low": counts["ci_low"],
        "success_ci_high": counts["ci_high"],
        "inferences": refresh["inferences"],
        "latency_p50_ms": latency["all"]["p50"],
        "latency_p95_ms": latency["all"]["p95"],
        "latency_p99_ms": latency["all"]["p99"],
        "latency_mean_ms": latency["all"]["mean"],
        **{f"latency_{kind}_p50_ms": latency[kind]["p50"] for kind in KINDS},
        "full_fraction": refresh["full_fraction"],
        "refresh_fraction": refresh["refresh_fraction"],
        "control_rate_hz": control_rate_hz(records),
        "compute_ms_per_step": mean_compute_per_step_ms(records),
        "compute_ms_per_step_typical": typical_compute_per_step_ms(records),
        "pixel_mae_p50": mae["p50"],
        "pixel_mae_p95": mae["p95"],
        "shadow_cos_min_median": shadow["cos_min_median"],
    }
    if baseline is not None:
        pairing = pair_with_baseline(baseline, records)
        out.update(
            {
                "pairs": pairing.n_pairs,
                "cliff_episodes": len(pairing.cliffs),
                "rescue_episodes": len(pairing.rescues),
                "mcnemar_p": pairing.mcnemar_p,
                "paired_success_delta": pairing.delta,
                "pairs_missing": len(pairing.missing_in_mode) + len(pairing.missing_in_baseline),
                "pairs_error_excluded": pairing.error_excluded,
            }
        )
    return out

"""Statistics of episode records against hand-computed values."""

from __future__ import annotations

import math

import pytest

from sim_eval.analysis.stats import (
    control_rate_hz,
    headline,
    inference_kind,
    latency_by_kind,
    mae_values,
    mcnemar_exact,
    pair_with_baseline,
    per_task_deltas,
    refresh_stats,
    replan_steps_of,
    shadow_episode_metrics,
    shadow_summary,
    staleness_mae,
    success_counts,
    wilson_interval,
)


def rec(key: str, mode: str, success: bool | None, *, error: bool = False, inferences=None, **extra) -> dict:
    suite, task, episode = key.split("/")
    return {
        "key": key,
        "suite": suite,
        "task_id": int(task),
        "episode_index": int(episode),
        "task_language": f"task {task}",
        "policy": "pi05",
        "cache_mode": mode,
        "protocol": {"replan_steps": 5},
        "success": None if error else success,
        "error": {"type": "RuntimeError", "message": "boom", "traceback": ""} if error else None,
        "inferences": inferences or [],
        **extra,
    }


# ---------------------------------------------------------------------------------------------------------- Wilson


def test_wilson_matches_hand_computed_bounds():
    # 8/10: centre (0.8 + z^2/20) / (1 + z^2/10), half-width z*sqrt(0.016 + z^2/400) / (1 + z^2/10)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-5)
    assert high == pytest.approx(0.94332, abs=1e-5)
    # at the edges Wilson stays informative: 0/10 -> [0, z^2/(n+z^2)]
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(1.959963984540054**2 / (10 + 1.959963984540054**2), abs=1e-12)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(1 - 0.27753, abs=1e-5)
    # 50/100 is symmetric about one half
    low, high = wilson_interval(50, 100)
    assert low + high == pytest.approx(1.0) and low == pytest.approx(0.40383, abs=1e-5)


def test_wilson_without_episodes_has_no_interval_and_rejects_bad_counts():
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_wilson_agrees_with_scipy():
    from scipy import stats as scipy_stats

    for successes, n in [(0, 1), (1, 3), (17, 50), (49, 50), (123, 400)]:
        ci = scipy_stats.binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(successes, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


# --------------------------------------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 0, 1.0),  # no discordant pair: nothing against H0
        (1, 5, 2 * (1 + 6) / 2**6),  # 0.21875
        (0, 6, 2 / 2**6),  # 0.03125
        (6, 0, 2 / 2**6),  # symmetric in b and c
        (10, 0, 2 / 2**10),
        (3, 3, 1.0),  # 2 * P(X <= 3) > 1 is capped
        (2, 8, 2 * (1 + 10 + 45) / 2**10),  # 0.109375
    ],
)
def test_exact_mcnemar_on_known_tables(b, c, expected):
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_exact_mcnemar_is_exact_for_many_pairs():
    from scipy import stats as scipy_stats

    for b, c in [(600, 400), (1000, 1100), (3, 40)]:
        assert mcnemar_exact(b, c) == pytest.approx(scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)
    assert 0.0 < mcnemar_exact(1500, 1000) < 1e-20  # no underflow to 0 or overflow from 2**2500


# ---------------------------------------------------------------------------------------------------------- pairing


def paired_fixture():
    s = "libero_spatial"
    baseline = [
        rec(f"{s}/0/0", "full", True),
        rec(f"{s}/0/1", "full", True),
        rec(f"{s}/0/2", "full", False),
        rec(f"{s}/0/3", "full", False),
        rec(f"{s}/1/4", "full", None, error=True),  # baseline crashed -> excluded
        rec(f"{s}/1/5", "full", True),  # never run by the mode -> missing in mode
        rec(f"{s}/1/7", "full", True),
        rec(f"{s}/1/8", "full", True),
    ]
    mode = [
        rec(f"{s}/0/0", "cache3", None, error=True),  # a crash that a resumed run then finished:
        rec(f"{s}/0/0", "cache3", True),  # dedupe keeps the finished record
        rec(f"{s}/0/1", "cache3", False),  # cliff
        rec(f"{s}/0/2", "cache3", True),  # rescue
        rec(f"{s}/0/3", "cache3", False),  # both fail
        rec(f"{s}/1/4", "cache3", True),
        rec(f"{s}/1/6", "cache3", True),  # not in the baseline -> missing in baseline
        rec(f"{s}/1/7", "cache3", None, error=True),  # mode crashed -> excluded
        rec(f"{s}/1/8", "cache3", False),  # cliff
    ]
    return baseline, mode


def test_discordant_pairs_with_missing_and_error_episodes():
    baseline, mode = paired_fixture()
    p = pair_with_baseline(baseline, mode)
    assert p.mode == "cache3" and p.policy == "pi05"
    assert p.both_success == ["libero_spatial/0/0"]
    assert p.cliffs == ["libero_spatial/0/1", "libero_spatial/1/8"]
    assert p.rescues == ["libero_spatial/0/2"]
    assert p.both_fail == ["libero_spatial/0/3"]
    assert p.missing_in_mode == ["libero_spatial/1/5"]
    assert p.missing_in_baseline == ["libero_spatial/1/6"]
    assert p.baseline_errors == ["libero_spatial/1/4"]
    assert p.mode_errors == ["libero_spatial/1/7"]
    assert p.error_excluded == 2
    assert p.n_pairs == 5
    assert p.baseline_rate == pytest.approx(3 / 5) and p.mode_rate == pytest.approx(2 / 5)
    assert p.delta == pytest.approx(-1 / 5)
    assert p.mcnemar_p == pytest.approx(2 * (1 + 3) / 2**3)  # b=2, c=1 -> 1.0
    assert p.category("libero_spatial/0/1") == "cliffs" and p.category("libero_spatial/1/5") is None


def test_pairing_without_any_pair_divides_by_nothing():
    p = pair_with_baseline([rec("s/0/0", "full", None, error=True)], [rec("s/0/1", "cache3", True)])
    assert p.n_pairs == 0 and p.delta is None and p.baseline_rate is None and p.mcnemar_p == 1.0
    empty = pair_with_baseline([], [])
    assert empty.n_pairs == 0 and empty.cliffs == []


def test_per_task_deltas():
    baseline, mode = paired_fixture()
    rows = {row["task_id"]: row for row in per_task_deltas(pair_with_baseline(baseline, mode), baseline)}
    assert rows[0]["pairs"] == 4 and rows[0]["baseline_successes"] == 2 and rows[0]["mode_successes"] == 2
    assert rows[0]["delta"] == 0.0 and rows[0]["cliffs"] == 1 and rows[0]["rescues"] == 1
    assert rows[1]["pairs"] == 1 and rows[1]["delta"] == -1.0 and rows[1]["cliffs"] == 1
    only_errors = [rec("s/3/0", "full", None, error=True)]
    (row,) = per_task_deltas(pair_with_baseline(only_errors, []), only_errors)
    assert row["pairs"] == 0 and row["delta"] is None


def test_success_counts_exclude_errors():
    _, mode = paired_fixture()
    counts = success_counts(mode[1:])  # without the superseded crash
    assert counts["episodes"] == 8 and counts["errors"] == 1 and counts["finished"] == 7
    assert counts["successes"] == 4 and counts["success_rate"] == pytest.approx(4 / 7)
    assert (counts["ci_low"], counts["ci_high"]) == pytest.approx(wilson_interval(4, 7))
    nothing = success_counts([rec("s/0/0", "full", None, error=True)])
    assert nothing["success_rate"] is None and nothing["ci_low"] is None


# ------------------------------------------------------------------------------------------ latency and refresh


def inf(ms, used_full=True, forced=False, **extra):
    return {"step": 0, "infer_ms": ms, "used_full": used_full, "forced_refresh": forced, **extra}


def test_inference_kinds():
    assert inference_kind(inf(1.0)) == "full"
    assert inference_kind(inf(1.0, used_full=False)) == "cached"
    assert inference_kind(inf(1.0, used_full=True, forced=True)) == "forced"
    assert inference_kind({"infer_ms": 3.0}) == "full"  # a policy without a cache controller


def test_latency_percentiles_per_kind_and_refresh_fraction():
    records = [
        rec("s/0/0", "adaptive3", True, inferences=[inf(10.0), inf(1.0, False), inf(2.0, False), inf(20.0)]),
        rec("s/0/1", "adaptive3", False, inferences=[inf(30.0), inf(3.0, False), inf(4.0, False), inf(15.0, 1, 1)]),
    ]
    lat = latency_by_kind(records)
    assert lat["full"]["n"] == 3 and lat["full"]["p50"] == 20.0
    assert lat["full"]["p95"] == pytest.approx(29.0)  # linear interpolation: 20 + 0.9 * (30 - 20)
    assert lat["cached"]["n"] == 4 and lat["cached"]["p50"] == 2.5 and lat["cached"]["mean"] == 2.5
    assert lat["forced"]["n"] == 1 and lat["forced"]["p99"] == 15.0
    assert lat["all"]["n"] == 8 and lat["all"]["mean"] == pytest.approx(85 / 8)
    r = refresh_stats(records)
    assert r["forced_inferences"] == 1 and r["cached_inferences"] == 4 and r["full_inferences"] == 3
    assert r["refresh_fraction"] == pytest.approx(1 / 5)  # forced / (forced + cached)
    assert r["full_fraction"] == pytest.approx(4 / 8)
    # 8 inferences x 5 steps in 85 ms of policy compute
    assert control_rate_hz(records) == pytest.approx(5 * 8 / 0.085)


def test_empty_groups_give_none_not_division_errors():
    assert latency_by_kind([])["all"] == {
        "n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "prefix_ms_mean": None, "denoise_ms_mean": None,
    }  # fmt: skip
    assert refresh_stats([])["refresh_fraction"] is None
    assert refresh_stats([rec("s/0/0", "full", True, inferences=[inf(5.0)])])["refresh_fraction"] is None
    assert control_rate_hz([]) is None
    h = headline([])
    assert h["episodes"] == 0 and h["success_rate"] is None and h["latency_p50_ms"] is None
    h = headline([rec("s/0/0", "cache3", None, error=True)], baseline=[])
    assert h["pairs"] == 0 and h["paired_success_delta"] is None and h["mcnemar_p"] == 1.0


def test_replan_steps_from_protocol_or_step_spacing():
    assert replan_steps_of([rec("s/0/0", "full", True)]) == 5
    bare = {"key": "s/0/0", "inferences": [{"step": s} for s in (0, 8, 16, 24, 30)]}
    assert replan_steps_of([bare]) == 8
    assert replan_steps_of([{"key": "s/0/0", "inferences": []}]) is None


# ------------------------------------------------------------------------------------------------- MAE, shadow


def test_mae_values_only_on_reusable_frames_and_configured_views():
    infs = [
        inf(10.0),
        inf(1.0, False, pixel_mae={"agentview": 2.0, "wrist": 5.0}),
        inf(10.0, True, True, pixel_mae={"agentview": 9.0, "wrist": 1.0}),
        inf(10.0, pixel_mae={"agentview": 30.0, "wrist": 30.0}),  # a scheduled full frame: no threshold sees it
    ]
    records = [rec("s/0/0", "adaptive3", True, inferences=infs)]
    assert mae_values(records) == [5.0, 9.0]
    assert mae_values(records, views=["wrist"]) == [5.0, 1.0]
    assert mae_values(records, kinds=("full",)) == [30.0]


def test_staleness_uses_checks_or_lags_at_the_window_distance():
    infs = [
        inf(10.0, lag_mae=[]),
        inf(1.0, False, lag_mae=[2.0]),
        inf(1.0, False, lag_mae=[1.5, 3.0]),
        inf(10.0, lag_mae=[1.0, 2.0, 4.0]),
        inf(10.0, True, True, pixel_mae={"wrist": 7.5}, lag_mae=[7.0, 8.0, 9.0]),
        inf(1.0, False, lag_mae=[0.5, 7.2, 8.0]),
    ]
    assert staleness_mae({"inferences": infs}) == [0.0, 2.0, 3.0, 0.0, 7.5, 0.5]


def test_shadow_episode_metrics():
    infs = [
        inf(10.0),
        inf(1.0, False, shadow_cos=0.95, shadow_max_abs=0.02),
        inf(1.0, False, shadow_cos=0.85),
        inf(10.0),
        inf(1.0, False, shadow_cos=0.4, shadow_max_abs=0.3),
        inf(1.0, False, shadow_cos=0.7),
    ]
    m = shadow_episode_metrics({"inferences": infs})
    assert m["shadow_frames"] == 4 and m["cos_min"] == 0.4 and m["max_abs_max"] == 0.3
    assert m["cos_mean"] == pytest.approx((0.95 + 0.85 + 0.4 + 0.7) / 4)
    assert m["first_below"] == {0.9: 2, 0.8: 4, 0.5: 4}
    assert m["frac_below"] == {0.9: 0.75, 0.8: 0.5, 0.5: 0.25}
    assert shadow_episode_metrics({"inferences": [inf(10.0)]}) is None
    summary = shadow_summary([{"inferences": infs}, {"inferences": [inf(1.0, False, shadow_cos=0.99)]}])
    assert summary["episodes"] == 2 and summary["frames"] == 5 and summary["cos_min_min"] == 0.4
    assert summary["below"][0.5] == {"episode_fraction": 0.5, "first_index_median": 4.0, "frame_fraction": 0.2}
    assert shadow_summary([])["cos_min_median"] is None


def test_headline_with_baseline_reports_cliffs():
    baseline, mode = paired_fixture()
    h = headline(mode, baseline)
    assert h["cliff_episodes"] == 2 and h["rescue_episodes"] == 1 and h["pairs"] == 5
    assert h["pairs_missing"] == 2 and h["pairs_error_excluded"] == 2
    assert h["errors"] == 1 and h["episodes"] == 8  # the superseded crash is deduplicated away
    assert not any(isinstance(v, float) and math.isnan(v) for v in h.values())

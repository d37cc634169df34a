"""Compute per control step and the opening answer's verdict on the zero-compute arm, both ways; a report over
synthetic records with ``replay2`` says it in its Answer and plots the compute frontier; runs measured at unequal
machine speed are compared at one speed, and the report says so."""

from __future__ import annotations

import json

import pytest

from sim_eval.analysis.compute import (
    Arm,
    at_common_speed,
    compute_per_step_ms,
    mean_compute_per_step_ms,
    speed_spread,
    zero_compute_sentence,
)
from sim_eval.analysis.render import build_report
from sim_eval.analysis.stats import typical_compute_per_step_ms
from sim_eval.analysis.synthetic import make_sweep
from sim_eval.records.episodes import EPISODES_FILE


def _record(ms: list[float], steps: int, error: bool = False) -> dict:
    return {"steps": steps, "inferences": [{"infer_ms": m} for m in ms], "error": {"type": "X"} if error else None}


def test_compute_per_step_is_summed_inference_time_over_steps():
    # replay2-like: full frames of 14 ms, replayed frames of 0 ms, 5 steps each
    assert compute_per_step_ms(_record([14.0, 0.0, 14.0, 0.0], 20)) == pytest.approx(1.4)
    # cache2-like: the cached frames cost their denoise
    assert compute_per_step_ms(_record([14.0, 4.5, 14.0, 4.5], 20)) == pytest.approx(1.85)
    assert compute_per_step_ms(_record([14.0], 5, error=True)) is None  # a crash has no cost per step
    assert compute_per_step_ms(_record([], 0)) is None
    mean = mean_compute_per_step_ms([_record([14.0, 0.0], 10), _record([14.0, 14.0], 10), _record([1.0], 1, True)])
    assert mean == pytest.approx((1.4 + 2.8) / 2)


ZERO = Arm("replay2", "replay", 0.90, 1.40, 200)


def test_answer_says_a_cached_mode_wins_when_it_succeeds_more_at_no_more_compute():
    arms = [ZERO, Arm("cache3", "cache", 0.93, 1.30, 200), Arm("cache2", "cache", 0.95, 1.85, 200)]
    text = zero_compute_sentence(arms)
    assert text.startswith("**A cached mode beats the zero-compute arm**: `cache3` 93.0% at 1.30 ms/step")
    assert "`replay2` 90.0% at 1.40 ms/step" in text and "cache2" not in text  # dearer modes are not winners


def test_answer_says_no_cached_mode_wins_when_each_costs_more_or_succeeds_less():
    arms = [
        ZERO,
        Arm("cache3", "cache", 0.70, 1.30, 200),
        Arm("cache2", "cache", 0.85, 1.85, 200),
        Arm("adaptive3", "adaptive", 0.95, 2.40, 200),
        Arm("full", "full", 0.96, 2.80, 200),  # full is the baseline, never a contender
    ]
    text = zero_compute_sentence(arms)
    assert text.startswith("**No cached mode beats the zero-compute arm at equal or lower compute**: `replay2`")
    assert "at equal or lower compute `cache3` 70.0% at 1.30 ms/step succeed(s) no more" in text
    assert "`cache2` 85.0% at 1.85 ms/step, `adaptive3` 95.0% at 2.40 ms/step cost(s) more compute" in text
    assert "only `adaptive3` buy(s) success with it" in text


def test_equal_success_at_equal_compute_is_not_a_win_and_no_arm_means_unknown():
    assert zero_compute_sentence([ZERO, Arm("cache2", "cache", 0.90, 1.40, 200)]).startswith("**No cached mode")
    assert "no zero-compute arm" in zero_compute_sentence([Arm("cache2", "cache", 0.9, 1.8, 9)])
    assert zero_compute_sentence([ZERO]) is None


def test_report_answers_against_the_zero_compute_arm_and_plots_compute(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", modes=("full", "cache2", "replay2"), tasks=3, episodes=4, errors=False)
    report = build_report([sweep], tmp_path / "out")
    text = report.read_text()
    answer = text.split("## Answer", 1)[1].split("## Headline", 1)[0]
    assert "beats the zero-compute arm" in answer and "`replay2`" in answer
    assert (tmp_path / "out" / "report_plots" / "frontier_compute.png").is_file()
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    replay = data["groups"]["replay2"]
    assert replay["compute_ms_per_step"] < data["groups"]["cache2"]["compute_ms_per_step"]
    assert replay["latency_p50_ms"] > 0  # the median inference of replay2 is a full one; replayed frames cost 0
    assert "## Published real-Pi0.5 numbers" in text and "## Mechanism" in text


def _kinds_record(ms: list[tuple[str, float]], steps: int) -> dict:
    return {
        "steps": steps,
        "error": None,
        "inferences": [{"infer_ms": m, "used_full": kind == "full"} for kind, m in ms],
    }


def test_typical_compute_is_each_kinds_median_and_shrugs_off_a_burst_of_load():
    calm = [_kinds_record([("full", 40.0), ("cached", 20.0)], 10) for _ in range(4)]
    burst = [*calm[:3], _kinds_record([("full", 400.0), ("cached", 20.0)], 10)]
    # 4 full frames at a median of 40 ms and 4 cached at 20 ms over 40 steps
    assert typical_compute_per_step_ms(calm) == pytest.approx((4 * 40.0 + 4 * 20.0) / 40)
    assert typical_compute_per_step_ms(burst) == pytest.approx(typical_compute_per_step_ms(calm))
    assert mean_compute_per_step_ms(burst) > mean_compute_per_step_ms(calm) + 8  # the mean carries the burst
    assert typical_compute_per_step_ms([_record([14.0], 5, error=True)]) is None


def test_runs_of_one_speed_compare_as_measured_and_runs_of_unequal_speed_at_one_speed():
    same = [Arm("full", "full", 0.97, 9.0, 200, 44.0, 8.9), Arm("cache2", "cache", 0.7, 6.6, 200, 43.0, 6.5)]
    assert speed_spread([(a.label, a.full_p50_ms) for a in same]) is None and at_common_speed(same) is None
    # replay2 ran while the machine was busy: twice the milliseconds for the same work
    slow_zero = Arm("replay2", "replay", 0.90, 8.8, 200, full_p50_ms=88.0, typical_ms=8.8)
    cheap = Arm("cache3", "cache", 0.93, 5.5, 200, full_p50_ms=44.0, typical_ms=5.5)
    untimed = Arm("cache4", "cache", 0.5, 4.0, 200)
    arms = [Arm("full", "full", 0.97, 9.0, 200, 44.0, 8.9), slow_zero, cheap, untimed]
    assert zero_compute_sentence(arms).startswith("**A cached mode beats")  # as measured, a wrong verdict
    scaled, note = at_common_speed(arms)
    by_label = {a.label: a for a in scaled}
    assert by_label["replay2"].compute_ms == pytest.approx(4.4) and by_label["cache3"].compute_ms == pytest.approx(5.5)
    assert "cache4" not in by_label and "Left out, without full frames to scale by: `cache4`" in note
    assert "44.0 ms in `full` but 88.0 ms in `replay2`" in note and "at `full`'s speed" in note
    assert zero_compute_sentence(scaled).startswith("**No cached mode beats the zero-compute arm")
    crashed = [Arm("full", "full", 0.0, 0.0, 0, 44.0), Arm("replay2", "replay", 0.0, 0.0, 0, 88.0)]
    assert at_common_speed(crashed) is None  # full frames only in crashed episodes: no typical compute to scale


def test_report_of_runs_at_unequal_speed_says_so_and_compares_compute_at_one_speed(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", modes=("full", "cache2", "replay2"), tasks=3, episodes=4, errors=False)
    path = sweep / "2" / EPISODES_FILE  # the replay2 job: every inference three times as slow
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["cache_mode"] for r in records} == {"replay2"}
    for record in records:
        for inference in record["inferences"]:
            inference["infer_ms"] = inference["infer_ms"] * 3
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    text = build_report([sweep], tmp_path / "out").read_text()
    answer = text.split("## Answer", 1)[1].split("## Headline", 1)[0]
    assert "did not see one machine speed" in answer and "Compute here is at `full`'s speed" in answer
    headline = text.split("## Headline", 1)[1].split("## ", 1)[0]
    assert "**The millisecond columns mix machine speeds**" in headline
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "did not see one machine speed" in data["answer"]["compute_at_common_speed"]
    common, groups = data["compute_ms_per_step_common"], data["groups"]  # the compute frontier's x at one speed
    scale = groups["full"]["latency_full_p50_ms"] / groups["replay2"]["latency_full_p50_ms"]
    assert common["replay2"] == pytest.approx(groups["replay2"]["compute_ms_per_step_typical"] * scale)
    assert common["full"] == pytest.approx(groups["full"]["compute_ms_per_step_typical"])
    plain = make_sweep(tmp_path / "plain", modes=("full", "replay2"), tasks=2, episodes=3)
    assert "mix machine speeds" not in build_report([plain], tmp_path / "p").read_text()

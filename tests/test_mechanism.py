"""Mechanism metrics on constructed episodes: re-play similarity of cached frames, task phases from gripper opening
and end-effector height, and the phase a cliff episode departs in."""

from __future__ import annotations

import pytest

from sim_eval.analysis.mechanism import (
    action_distance,
    departure_phase,
    departure_phases,
    phases,
    replay_frames,
    replay_summary,
)


def _plan(level: float, rows: int = 5) -> list[list[float]]:
    return [[level + r * 0.01] * 6 + [-1.0] for r in range(rows)]


def test_action_distance_is_mean_abs_over_the_rows_both_executed():
    assert action_distance(_plan(0.0), _plan(0.1)) == pytest.approx(0.1 * 6 / 7)
    assert action_distance(_plan(0.0, 2), _plan(0.0)) == 0.0  # a cut-short chunk compares on its rows
    assert action_distance(None, _plan(0.0)) is None


def test_a_cached_frame_that_replays_the_old_plan_is_closer_to_it_than_to_full():
    # full: a fresh plan every replan (levels 0, 1, 2, 3); cache2: each cached frame re-samples the plan its full
    # frame executed (same level, a little noise)
    base = {"inferences": [{"executed": _plan(float(k)), "used_full": True} for k in range(4)]}
    mode_levels = [(0.0, True), (0.02, False), (2.0, True), (2.03, False)]
    mode = {"inferences": [{"executed": _plan(v), "used_full": full} for v, full in mode_levels]}
    frames = replay_frames(base, mode)
    assert [f.index for f in frames] == [1, 3]  # cached frames only
    assert frames[0].to_previous == pytest.approx(0.02 * 6 / 7)
    assert frames[0].to_full == pytest.approx(0.98 * 6 / 7)
    assert all(f.replays for f in frames)
    summary = replay_summary(frames)
    assert summary["frames"] == 2 and summary["replay_fraction"] == 1.0
    assert summary["to_previous_median"] == pytest.approx(0.025 * 6 / 7)


def test_a_cached_frame_that_follows_the_scene_is_not_a_replay():
    base = {"inferences": [{"executed": _plan(float(k)), "used_full": True} for k in range(2)]}
    mode = {"inferences": [{"executed": _plan(0.0), "used_full": True}, {"executed": _plan(0.95), "used_full": False}]}
    (frame,) = replay_frames(base, mode)
    assert not frame.replays and replay_summary([frame])["replay_fraction"] == 0.0
    assert replay_summary([]) == {"frames": 0, "to_previous_median": None, "to_full_median": None,
                                  "replay_fraction": None}  # fmt: skip


# one pick-and-place: open and high, descend, close, lift, carry, descend, release
TRACE = [
    (0.080, 1.10), (0.080, 1.00), (0.080, 0.92),  # approach
    (0.050, 0.91), (0.030, 0.91),  # grasp: closing below 80% of the opening, still low
    (0.030, 0.95), (0.030, 1.05), (0.030, 1.06),  # transport: lifted 2 cm+ above the grasp height
    (0.030, 1.02), (0.060, 1.00),  # place: descended 2 cm below the top, then released
]  # fmt: skip


def _episode(trace, **extra):
    return {"inferences": [{"grip": g, "eef_z": z, "step": 5 * k, **extra} for k, (g, z) in enumerate(trace)]}


def test_phases_from_gripper_opening_and_height():
    assert phases(_episode(TRACE)) == ["approach"] * 3 + ["grasp"] * 2 + ["transport"] * 3 + ["place"] * 2
    assert phases({"inferences": [{"step": 0}]}) == [None]  # records from before grip / eef_z were kept


def test_release_without_descent_also_starts_place():
    trace = [(0.08, 1.0), (0.03, 0.9), (0.03, 0.95), (0.03, 0.95), (0.04, 0.95)]
    assert phases(_episode(trace))[-1] == "place"


def test_a_cliff_departs_in_the_phase_of_the_full_episode_at_its_divergence_point():
    base = _episode(TRACE, lag_mae=[1.0])
    mode = _episode(TRACE, lag_mae=[1.0])
    for k in range(4, len(TRACE)):  # the mode's inputs depart from inference 4 on (during the grasp)
        mode["inferences"][k]["lag_mae"] = [3.0]
    assert departure_phase(base, mode) == "grasp"
    assert departure_phase(base, base) is None  # never departs
    counts = departure_phases([(base, mode), (base, base)])
    assert dict(counts) == {"grasp": 1}


def test_synthetic_records_carry_the_mechanism_fields_and_the_zero_compute_mode(tmp_path):
    from sim_eval.analysis.runs import build_groups, load_runs
    from sim_eval.analysis.stats import inference_kind
    from sim_eval.analysis.synthetic import make_sweep

    sweep = make_sweep(tmp_path, modes=("full", "cache2", "replay2"), tasks=2, episodes=2, errors=False, missing=0)
    groups = {g.mode: {r["key"]: r for r in g.records} for g in build_groups(load_runs([sweep]))}
    record = groups["replay2"]["libero_spatial/0/0"]
    infs = record["inferences"]
    assert [inference_kind(i) for i in infs[:4]] == ["full", "replayed", "full", "replayed"]
    assert infs[1]["infer_ms"] == 0.0 and "pixel_mae" not in infs[1]
    assert phases(record)[0] == "approach" and "grasp" in phases(record)
    full, cached = groups["full"]["libero_spatial/0/0"], groups["cache2"]["libero_spatial/0/0"]
    assert replay_summary(replay_frames(full, cached))["replay_fraction"] > 0.5

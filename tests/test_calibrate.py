"""Threshold calibration: the replayed adaptive rule, the proposal, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim_eval.analysis.calibration import calibrate, propose_from_checks, propose_from_lags, replay_refresh
from sim_eval.analysis.runs import load_runs
from sim_eval.analysis.stats import refresh_stats
from sim_eval.analysis.synthetic import make_sweep
from sim_eval.calibrate import main

# lag_mae per inference of one episode; inference 0 has no earlier inputs
SEQUENCE = [[], [2.0], [1.0, 5.0], [3.0, 6.0, 9.0], [0.5, 4.5, 7.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [9.0, 9.0, 9.0]]


def test_replay_follows_the_adaptive_window_rule():
    # threshold 4: 1 cached (lag1=2), 2 forced (lag2=5), 3 cached (lag1=3), 4 forced (lag2=4.5), 5 and 6 cached,
    # 7 scheduled full
    assert replay_refresh([SEQUENCE], 3, 4.0) == (2, 6)
    # threshold 5: 2 forced; 3 cached; 4 cached (lag2=4.5); 5 scheduled full; 6 cached; 7 forced (lag2=9)
    assert replay_refresh([SEQUENCE], 3, 5.0) == (2, 6)
    # nothing fires: the plain cache3 schedule, full at 0, 3, 6
    assert replay_refresh([SEQUENCE], 3, 10.0) == (0, 5)
    assert replay_refresh([SEQUENCE], 2, 10.0) == (0, 4)  # cache2: full, cached, full, cached...


def test_replay_needs_lags_up_to_the_window():
    with pytest.raises(ValueError, match="needs lag 2"):
        replay_refresh([[[], [1.0], [1.0]]], 4, 10.0)


def _checks_records(values):
    infs = [{"used_full": False, "forced_refresh": False, "pixel_mae": {"wrist": float(v)}} for v in values]
    return [{"key": "s/0/0", "cache_mode": "adaptive3", "inferences": infs}]


def test_proposal_from_checks_hits_the_target_at_the_smallest_threshold():
    values = np.random.default_rng(0).uniform(0, 10, size=1000)
    p = propose_from_checks(_checks_records(values), period=3, target=0.3)
    assert p.achieved <= 0.3 and p.below_threshold_fraction > 0.3
    assert p.achieved == pytest.approx((values >= p.threshold).mean())
    assert p.threshold == pytest.approx(np.quantile(values, 0.7), abs=0.05)
    assert p.checks == 1000 and p.source == "adaptive pixel_mae"
    none = propose_from_checks(_checks_records(values), period=3, target=0.0)
    assert none.achieved == 0.0 and none.threshold > values.max()
    everything = propose_from_checks(_checks_records(values), period=3, target=1.0)
    assert everything.achieved == 1.0 and everything.threshold == values.min()


def test_replay_proposal_reproduces_in_a_run_with_that_threshold(tmp_path):
    """Calibrate on full-run lag MAE, then generate an adaptive3 run with the proposed threshold from the same scene
    motion: its forced-refresh fraction lands on the target (episode lengths differ by outcome, hence the tolerance)."""
    full = load_runs([make_sweep(tmp_path / "full", modes=("full",), tasks=4, episodes=6, errors=False)])[0].records
    proposal = propose_from_lags(full, period=3, target=0.3)
    assert proposal.source == "lag_mae replay" and proposal.episodes == 24
    assert abs(proposal.achieved - 0.3) < 0.02
    adaptive = make_sweep(tmp_path / "ad", modes=("adaptive3",), tasks=4, episodes=6, threshold=proposal.threshold,
                          errors=False, missing=0)  # fmt: skip
    measured = refresh_stats(load_runs([adaptive])[0].records)["refresh_fraction"]
    assert measured == pytest.approx(0.3, abs=0.05)


def test_calibrate_without_enough_lags_still_uses_adaptive_checks(tmp_path):
    sweep = make_sweep(tmp_path, modes=("full", "adaptive5"), tasks=2, episodes=3, lags=3, missing=0)
    records = [r for run in load_runs([sweep]) for r in run.records]
    result = calibrate(records, 0.3)
    assert result["period"] == 5 and result["max_lag"] == 3
    assert result["replay"] is None  # adaptive5 needs lags 1..4
    assert result["checks"] is not None and result["checks"].period == 5
    with pytest.raises(ValueError, match="target"):
        calibrate(records, 1.5)


def test_cli_prints_distribution_and_proposal(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep", tasks=3, episodes=4)
    out = tmp_path / "cal.json"
    assert main([str(sweep), "--target-refresh", "0.3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lag 1" in text and "lag 2" in text and "p95=" in text
    assert "proposal (lag_mae replay, adaptive3" in text and "proposal (adaptive pixel_mae" in text
    payload = json.loads(out.read_text())
    assert payload["replay"]["threshold"] > 0 and payload["replay"]["achieved"] <= 0.3


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path), "--target-refresh", "0.3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("calibrate: error:") and str(tmp_path) in err
    run = tmp_path / "run"
    run.mkdir()
    (run / "episodes.jsonl").write_text(json.dumps({"key": "s/0/0", "cache_mode": "full", "inferences": []}) + "\n")
    assert main([str(run), "--target-refresh", "0.3"]) == 2
    assert "no MAE records" in capsys.readouterr().err

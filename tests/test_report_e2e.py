"""End to end on real LIBERO: a sweep of the tiny fixture Pi0.5 over 2 tasks x 2 episodes x {full, cache3} on CPU,
with the shadow reference and an offline wandb logger, then the report and the calibration over its records.

The random tiny model fails every episode, so this shows the path works, not cliffs (``test_report.py`` covers those
on synthetic records)."""

from __future__ import annotations

import json

import pytest
from conftest import FAST_SIM, FIXTURES, run_cli

from sim_eval.records.episodes import read_records

pytestmark = pytest.mark.sim

SUMMARY_KEYS = ("success_rate", "success_ci_low", "latency_p50_ms", "control_rate_hz")
PAIRED_KEYS = ("cliff_episodes", "mcnemar_p", "paired_success_delta")


def test_sweep_report_and_wandb_on_real_libero(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        f"hydra.sweep.dir={sweep}",
        f"policy.checkpoint={FIXTURES / 'tiny_lerobot'}",
        f"policy.model_sizes={FIXTURES / 'tiny_config.json'}",
        f"policy.tokenizer={FIXTURES / 'tokenizer'}",
        "policy.cache=full,cache3",
        "policy.shadow=true",
        "eval.tasks=[0,1]",
        "eval.episodes_per_task=2",
        "logger.mode=offline",
        # 3 inferences per episode (steps 0, 5, 10): lags 1..2, what the calibration of adaptive3 needs
        *[o for o in FAST_SIM if not o.startswith("eval.max_steps=")],
        "eval.max_steps=11",
    ]
    done = run_cli(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    records = {job: read_records(sweep / job) for job in ("0", "1")}
    assert [len(r) for r in records.values()] == [4, 4]
    assert {r["cache_mode"] for r in records["1"]} == {"cache3"}
    # the paired design: the same episode key draws the same noise seed in both modes
    seeds = {mode: {r["key"]: r["noise_seed"] for r in recs} for mode, recs in records.items()}
    assert seeds["0"] == seeds["1"]

    report = run_cli([str(sweep)], cwd=tmp_path, module="sim_eval.report")
    assert report.returncode == 0, report.stderr
    text = (sweep / "report.md").read_text()
    assert "| `full` | 4 | 4 | 0 |" in text and "| `cache3` | 4 | 4 | 0 |" in text
    assert "**No cliff episodes**" in text
    for plot in ("frontier.png", "tasks_heatmap.png", "latency.png"):
        assert (sweep / "report_plots" / plot).stat().st_size > 0
    numbers = json.loads((sweep / "report.json").read_text())["groups"]
    assert numbers["cache3"]["pairs"] == 4 and numbers["cache3"]["latency_cached_p50_ms"] > 0

    calibrate = run_cli([str(sweep), "--target-refresh", "0.3"], cwd=tmp_path, module="sim_eval.calibrate")
    assert calibrate.returncode == 0, calibrate.stderr
    assert "lag 1" in calibrate.stdout and "threshold =" in calibrate.stdout

    # one offline wandb run per job, in the job's dir; the cache3 job found the full job as its baseline
    for job, keys in (("0", SUMMARY_KEYS), ("1", SUMMARY_KEYS + PAIRED_KEYS)):
        (run_log,) = (sweep / job / "wandb").glob("offline-run-*/run-*.wandb")
        data = run_log.read_bytes()
        for key in keys:
            assert key.encode() in data, (job, key)

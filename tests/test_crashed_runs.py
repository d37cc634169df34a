"""A run whose episodes all crash fails loudly (exit 1, one line naming the first error), in a sweep too; the same
command after the fix runs the crashed episodes again (``eval.retry_errors`` defaults to true)."""

from __future__ import annotations

import json

import pytest
from conftest import FAST_SIM, run_cli

from sim_eval.analysis.summary import write_summary
from sim_eval.callbacks import multirun_summary
from sim_eval.records.episodes import read_records

CMD = ["policy=constant", "suite=libero_object", "eval.tasks=[1]", "eval.episodes_per_task=1", *FAST_SIM]


@pytest.mark.sim
def test_a_broken_renderer_exits_1_and_the_rerun_after_the_fix_replaces_the_crash(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setenv("MUJOCO_GL", "bogus")
    broken = run_cli([*CMD, f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=120)
    assert broken.returncode == 1, broken.stderr[-2000:]
    errors = [line for line in broken.stderr.splitlines() if line.startswith("sim_eval: error:")]
    assert len(errors) == 1 and "every episode crashed (1), none finished" in errors[0]
    assert "MUJOCO_GL" in errors[0] and "run the same command again" in errors[0]
    monkeypatch.setenv("MUJOCO_GL", "egl")
    fixed = run_cli([*CMD, f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=120)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    records = read_records(run_dir / "episodes.jsonl")
    assert [r["error"] is None for r in records] == [False, True]  # the crash stays on disk, superseded
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["overall"]["finished"] == 1 and summary["overall"]["errors"] == 0


def _job(directory, records):
    directory.mkdir(parents=True)
    (directory / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_summary(directory, records)


def test_a_sweep_names_its_jobs_that_finished_nothing(tmp_path):
    crash = {"key": "libero_object/1/0", "suite": "libero_object", "task_id": 1, "policy": "constant",
             "cache_mode": "-", "seed": 0, "success": None,
             "error": {"type": "ValueError", "message": "invalid literal for int() with base 10: ''"}}  # fmt: skip
    _job(tmp_path / "0", [{**crash, "error": None, "success": True}])
    _job(tmp_path / "1", [crash])
    (tmp_path / "2").mkdir()  # a job that ended before its summary
    failed: list[str] = []
    multirun_summary(tmp_path, failed)
    assert len(failed) == 2
    assert failed[0].startswith("job 1: every episode crashed (1), none finished; the first: ValueError: invalid")
    assert failed[1].startswith("job 2: ended before it finished")

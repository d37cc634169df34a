"""The wandb logger: an offline run whose files hold the summary and the episode table, and the warn-once fallback."""

from __future__ import annotations

import itertools
import json
import logging
import shutil

import pytest

from sim_eval.analysis.summary import summarize
from sim_eval.analysis.synthetic import make_sweep
from sim_eval.records.episodes import read_records
from sim_eval.runtime.loggers import TABLE_COLUMNS, NullLogger, WandbLogger, build_logger

SUMMARY_KEYS = ("success_rate", "success_ci_low", "success_ci_high", "latency_p50_ms", "refresh_fraction",
                "control_rate_hz", "cliff_episodes", "mcnemar_p", "paired_success_delta")  # fmt: skip


def test_build_logger_modes():
    assert isinstance(build_logger("disabled"), NullLogger)
    assert isinstance(build_logger("offline", "p", None, None), WandbLogger)
    with pytest.raises(ValueError, match="logger.mode='onlin'"):
        build_logger("onlin")


def test_offline_run_files_hold_summary_table_and_cliff_videos(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = make_sweep(tmp_path / "sweep", modes=("full", "cache3"), tasks=3, episodes=4, videos=True, missing=0)
    run_dir = sweep / "1"
    records = read_records(run_dir)
    logger = build_logger("offline", "sim_eval_test", None, str(tmp_path / "wb"))
    logger.start({"policy": {"cache": "cache3"}}, "policy.cache=cache3", str(sweep), str(run_dir))
    for record in records:
        logger.log_episode(record)
    logger.finish(summarize(records), records)
    assert not logger._broken
    import wandb

    wandb.teardown()  # stop wandb's service process: it flushes the run's transaction log to disk

    (run,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    log_bytes = next(run.glob("run-*.wandb")).read_bytes()
    for key in SUMMARY_KEYS:  # the summary record of the run's transaction log
        assert key.encode() in log_bytes, key
    assert b"policy.cache=cache3" in log_bytes and str(sweep).encode() in log_bytes  # name and group
    (table_file,) = run.glob("files/media/table/episodes_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == TABLE_COLUMNS and len(table["data"]) == len(records)
    outcomes = {row[0]: row[TABLE_COLUMNS.index("paired_outcome")] for row in table["data"]}
    cliffs = [key for key, outcome in outcomes.items() if outcome == "cliffs"]
    assert cliffs, "the synthetic sweep should contain a cliff episode"
    videos = list(run.glob("files/media/videos/cliff_videos/**/*.mp4"))
    assert len(videos) == len(cliffs)  # the mode's failure video of each cliff (the baseline succeeded: no video)


def test_wandb_failure_warns_once_and_goes_inert(tmp_path, monkeypatch, caplog):
    import wandb

    def broken_init(**kwargs):
        raise RuntimeError("wandb backend unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    logger = build_logger("online", "p", None, str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="sim_eval.runtime.loggers"):
        logger.start({}, "name", str(tmp_path), str(tmp_path))
        logger.log_episode({"key": "s/0/0", "success": True, "error": None, "inferences": []})
        logger.finish({}, [])
    assert len(caplog.records) == 1
    assert "wandb backend unreachable" in caplog.text and "continues without wandb" in caplog.text


def test_failure_mid_run_warns_once(tmp_path, caplog):
    class FlakyRun:
        def __init__(self):
            self.calls = 0

        def log(self, *args, **kwargs):
            self.calls += 1
            raise OSError("disk full")

    logger = WandbLogger("offline", "p")
    logger._run = FlakyRun()
    logger._group = logger._run_dir = str(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sim_eval.runtime.loggers"):
        for k in range(3):
            logger.log_episode({"key": f"s/0/{k}", "success": False, "error": None, "inferences": []})
        logger.finish({}, [])
    assert len(caplog.records) == 1 and "disk full" in caplog.text
    assert logger._run.calls == 1  # inert after the first failure


class FakeRun:
    """What ``wandb.init`` returns, keeping the summary a test reads."""

    def __init__(self, name: str):
        self.name, self.summary = name, {}

    def log(self, *args, **kwargs):
        pass

    def finish(self):
        pass


@pytest.mark.parametrize("order", list(itertools.permutations(("0", "1", "2"))))
def test_paired_numbers_are_the_reports_whatever_the_job_order(tmp_path, monkeypatch, order):
    """A sweep of full, cache3 and the control arm (full at seed 1): each job pairs with what its baseline has
    recorded when it ends, and the sweep-end run logs the report's cliffs, rescues and excess cliffs in any order
    (the logger once paired cache3 with whichever full run it found first, the control arm's included)."""
    import wandb

    from sim_eval.report import main as report_main
    from sim_eval.runtime.loggers import log_sweep

    made = make_sweep(tmp_path / "made", modes=("full", "cache3"), tasks=3, episodes=6, control_seed=1, missing=0)
    runs: list[FakeRun] = []
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(FakeRun(kw["name"])) or runs[-1])
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for job in order:  # a job's dir appears when it starts; it ends before the next one starts
        shutil.copytree(made / job, sweep / job)
        records = read_records(sweep / job)
        logger = build_logger("offline", "p", None, str(tmp_path / "wb"))
        logger.start({}, f"job{job}", str(sweep), str(sweep / job))
        logger.finish(summarize(records), records)
    by_job = dict(zip(order, runs, strict=True))
    logged = log_sweep({"mode": "offline", "dir": str(tmp_path / "wb")}, sweep)
    assert runs[-1].name == "sweep" and runs[-1].summary == logged

    assert report_main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())["groups"]
    for label, group in report.items():
        for name, value in group["paired"].items():
            assert logged[f"{label}/{name}"] == value, (label, name)
    assert logged["cache3/cliff_episodes"] == report["cache3"]["cliff_episodes"] > 0
    assert logged["cache3/rescue_episodes"] == report["cache3"]["rescue_episodes"]
    assert logged["full@seed1/cliff_episodes"] == report["full@seed1"]["cliff_episodes"]
    assert "cache3/excess/full@seed1/excess_cliffs" in logged
    # a job that ended after its baseline logged the same numbers; one that ended before it had none to log
    cache3 = by_job["1"].summary
    if order.index("1") > order.index("0"):
        assert cache3["cliff_episodes"] == report["cache3"]["cliff_episodes"]
    else:
        assert "cliff_episodes" not in cache3

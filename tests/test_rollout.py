"""Rollouts on the real simulator: records, crashes, resume after kill -9, workers, shards via submitit, merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_SIM, REPO, compose, overrides, run_cli

from sim_eval.config import validate
from sim_eval.policies.simple import ConstantPolicy
from sim_eval.records.episodes import read_records
from sim_eval.runtime.job import evaluate
from sim_eval.runtime.loggers import build_logger

pytestmark = pytest.mark.sim

BASE = ["policy=constant", "suite=libero_object", "eval.tasks=[1]", *FAST_SIM]


class RaisingPolicy(ConstantPolicy):
    """Raises on the second inference of the chosen episodes; behaves like ConstantPolicy otherwise."""

    def __init__(self, crash_episodes: set[int]):
        super().__init__(chunk=4)
        self.crash_episodes = crash_episodes

    def reset(self, task):
        super().reset(task)
        self._episode = task.episode_index

    def infer(self, obs):
        if self._episode in self.crash_episodes and self._calls == 1:
            raise RuntimeError(f"policy exploded in episode {self._episode}")
        return super().infer(obs)


def _keys(run_dir: Path) -> list[str]:
    return [r["key"] for r in read_records(run_dir / "episodes.jsonl")]


def test_rollout_record_is_well_formed(tmp_path):
    result = run_cli([*BASE, "eval.episodes_per_task=2", "eval.video=all", f"hydra.run.dir={tmp_path}"], cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_records(tmp_path / "episodes.jsonl")
    assert [r["key"] for r in records] == ["libero_object/1/0", "libero_object/1/1"]
    record = records[0]
    assert record["task_language"] == "pick up the cream cheese and place it in the basket"
    assert (record["init_state_index"], record["env_seed"]) == (0, 7)
    assert isinstance(record["noise_seed"], int)
    assert (record["policy"], record["cache_mode"]) == ("constant", "-")
    assert record["protocol"]["name"] == "openpi" and record["protocol"]["max_steps"] == 8
    assert record["protocol"]["replan_steps"] == 5 and record["protocol"]["num_wait_steps"] == 2
    assert record["success"] is False and record["error"] is None and record["steps"] == 8
    # Chunks of 10 executed 5 at a time: inferences at control steps 0 and 5, each with its timing.
    assert [inf["step"] for inf in record["inferences"]] == [0, 5]
    assert all(inf["infer_ms"] >= 0 for inf in record["inferences"])
    assert record["inferences"][0]["lag_mae"] == [] and len(record["inferences"][1]["lag_mae"]) == 1
    assert record["wall_s"] > 0
    video = tmp_path / record["video"]
    assert video.is_file() and video.name == "libero_object_task01_ep000_failure.mp4"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["overall"]["finished"] == 2 and summary["overall"]["success_rate"] == 0.0
    assert (tmp_path / ".hydra" / "config.yaml").is_file()


def test_policy_crash_is_an_error_record_and_the_run_goes_on(tmp_path):
    run = validate(compose([*BASE, "eval.episodes_per_task=3"]))
    logger = build_logger(mode="disabled", project="sim_eval", entity=None, dir=None)
    summary = evaluate(run, None, tmp_path, logger, policy=RaisingPolicy(crash_episodes={1}))
    records = {r["key"]: r for r in read_records(tmp_path / "episodes.jsonl")}
    assert list(records) == ["libero_object/1/0", "libero_object/1/1", "libero_object/1/2"]
    crashed = records["libero_object/1/1"]
    assert crashed["success"] is None
    assert crashed["error"]["type"] == "RuntimeError"
    assert "policy exploded in episode 1" in crashed["error"]["message"]
    assert "Traceback" in crashed["error"]["traceback"] and "infer" in crashed["error"]["traceback"]
    assert records["libero_object/1/2"]["error"] is None
    assert summary["overall"]["errors"] == 1 and summary["overall"]["finished"] == 2


def test_resume_after_kill_9_finishes_exactly_the_plan(tmp_path):
    args = [*BASE, "eval.episodes_per_task=4", f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim_eval", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    episodes = tmp_path / "episodes.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and len(_keys(tmp_path)) < 1:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = _keys(tmp_path)
    assert 1 <= len(interrupted) < 4, "the kill must land mid-run"
    result = run_cli(args, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    keys = _keys(tmp_path)
    assert sorted(keys) == [f"libero_object/1/{i}" for i in range(4)] and len(keys) == len(set(keys))
    assert keys[: len(interrupted)] == interrupted  # kept, not rerun
    assert episodes.read_bytes().endswith(b"\n")
    # A third run finds nothing left to do.
    again = run_cli(args, cwd=REPO)
    assert again.returncode == 0 and _keys(tmp_path) == keys


def test_spawned_workers_record_every_episode(tmp_path):
    result = run_cli(
        [
            "policy=constant",
            "suite=libero_object",
            "eval.tasks=[1,2]",
            "eval.episodes_per_task=2",
            "eval.num_workers=2",
            *FAST_SIM,
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    keys = sorted(_keys(tmp_path))
    assert keys == ["libero_object/1/0", "libero_object/1/1", "libero_object/2/0", "libero_object/2/1"]
    records = read_records(tmp_path / "episodes.jsonl")
    assert all(r["error"] is None for r in records)
    # each record says where its worker ran: this machine has no GPU, so nothing was pinned, and who rendered
    for r in records:
        device = dict(r["device"])
        renderer, cpu = device.pop("renderer"), device.pop("cpu")
        assert device == {"policy": "-", "gpu": None, "egl_device": None, "gpu_name": None}
        assert cpu["torch_capability"] is not None
        assert renderer is not None and " / " in renderer  # e.g. "Mesa / llvmpipe (LLVM 15...) / 4.5 ..."


def test_dead_worker_becomes_an_error_record_and_a_replacement_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM_EVAL_TEST_EXIT_EPISODE", "1")
    result = run_cli(
        [
            *BASE,
            "policy._target_=tests.exiting_policy.ExitingPolicy",
            "eval.episodes_per_task=3",
            "eval.num_workers=1",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = {r["key"]: r for r in read_records(tmp_path / "episodes.jsonl")}
    assert sorted(records) == ["libero_object/1/0", "libero_object/1/1", "libero_object/1/2"]
    died = records["libero_object/1/1"]
    assert died["success"] is None and died["error"]["type"] == "WorkerDied"
    assert "exited with code 3" in died["error"]["message"] and died["cache_mode"] == "-"
    assert records["libero_object/1/0"]["error"] is None and records["libero_object/1/2"]["error"] is None


def test_submitit_shards_then_merge_cover_the_plan_once(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        overrides(
            "-m",
            "hydra/launcher=local",
            "eval.shard.index=0,1,2",
            "eval.shard.count=3",
            *BASE,
            "eval.tasks=[1,2]",
            "eval.episodes_per_task=2",
            "eval.max_steps=3",
            f"hydra.sweep.dir={sweep}",
        ),
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # 14: the sweep ends with a line per job and the report command
    assert f"multirun: 3 jobs in {sweep}" in result.stdout and "  job 2 (eval.shard.index=2 " in result.stdout
    assert f"  report: python -m sim_eval.report {sweep}" in result.stdout
    shards = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(shards) == 3
    per_shard = [set(_keys(shard)) for shard in shards]
    assert all(per_shard) and sum(len(s) for s in per_shard) == 4
    # every episode finished: submitit's CUDA_VISIBLE_DEVICES="" once crashed each one in robosuite's EGL set-up
    for shard in shards:
        for record in read_records(shard / "episodes.jsonl"):
            assert record["error"] is None and record["steps"] == 3 and record["success"] is False, record["error"]
    merged = run_cli(
        [*map(str, shards), shards[0].as_posix(), "--out", str(tmp_path / "merged")], cwd=REPO, module="sim_eval.merge"
    )
    assert merged.returncode == 0, merged.stderr
    keys = _keys(tmp_path / "merged")
    assert sorted(keys) == sorted(set().union(*per_shard)) and len(keys) == 4
    summary = json.loads((tmp_path / "merged" / "summary.json").read_text())
    assert summary["overall"]["episodes"] == 4


def test_lag_mae_measures_image_change():
    from sim_eval.runtime.rollout import LagMAE

    lag = LagMAE(depth=2)
    black, grey = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 10, np.uint8)
    assert lag({"agentview": black, "wrist": black}) == []
    assert lag({"agentview": grey, "wrist": black}) == [10.0]
    assert lag({"agentview": grey, "wrist": grey}) == [10.0, 10.0]


class ImageKeepingPolicy(ConstantPolicy):
    """ConstantPolicy that keeps a copy of every image it is given (and fails if one is missing)."""

    def __init__(self):
        super().__init__(chunk=10)
        self.seen: list[dict[str, np.ndarray]] = []

    def infer(self, obs):
        self.seen.append({view: image.copy() for view, image in obs["images"].items()})
        return super().infer(obs)


def test_rendering_only_the_policys_frames_gives_it_the_same_pixels():
    """``render_policy_frames_only`` skips the renders nobody reads (wait steps, steps between replans): the policy
    gets, pixel for pixel, the images of an env that renders every step, from a fifth of the renders."""
    from sim_eval.envs.libero_env import LiberoEnv
    from sim_eval.runtime.rollout import run_episode

    env = LiberoEnv("libero_object", 1, max_steps=12, render_size=64, model_image_size=64, num_wait_steps=3)
    try:
        runs = {}
        for gated in (False, True):
            policy = ImageKeepingPolicy()
            record = run_episode(
                env,
                policy,
                suite="libero_object",
                task_id=1,
                episode_index=2,
                replan_steps=5,
                render_policy_frames_only=gated,
            )
            assert record["error"] is None and record["steps"] == 12
            runs[gated] = (policy.seen, record["time_s"]["render_s"])
        assert env._rendering  # handed back as it was given
    finally:
        env.close()
    (always, always_s), (gated, gated_s) = runs[False], runs[True]
    assert len(always) == len(gated) == 3  # inferences at steps 0, 5, 10
    for full_frame, gated_frame in zip(always, gated, strict=True):
        for view in ("agentview", "wrist"):
            np.testing.assert_array_equal(gated_frame[view], full_frame[view])
    assert gated_s < always_s / 2  # 2 of the 12 control renders instead of 12

"""Demonstration files and the recorder: the format round-trips without a simulator, and a recorded episode's actions
replayed open-loop from the same init state reproduce LIBERO's success."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sim_eval.demos import MANIFEST, DemoWriter, iter_demos, load_demo, load_manifest

SCRIPTED = {"_target_": "policies.scripted.ScriptedExpert", "name": "scripted"}


def _smooth_frame(t: int, size: int = 128) -> np.ndarray:
    """A rendered-scene-like image (smooth gradients and a few flat shapes), not incompressible noise."""
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([(x + t) % 256, (y * 2) % 256, ((x + y) // 2) % 256], axis=-1).astype(np.uint8)
    image[30:60, 40 + t % 20 : 70 + t % 20] = (200, 30, 30)
    return image


def test_demo_round_trip_without_simulator(tmp_path):
    writer = DemoWriter(image_size=128, jpeg_quality=65)
    states = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    actions = np.random.default_rng(1).uniform(-1, 1, size=(5, 7)).astype(np.float32)
    for t in range(5):
        obs = {"images": {"agentview": _smooth_frame(t), "wrist": _smooth_frame(t + 3)}, "state": states[t]}
        writer.add(obs, actions[t])
    meta = {
        "instruction": "put it there",
        "suite": "libero_object",
        "task_id": 3,
        "init_state_index": 7,
        "success": True,
    }
    path = writer.save(tmp_path / "demo.npz", meta)
    assert not list(tmp_path.glob("*.tmp"))
    demo = load_demo(path)
    assert len(demo) == 5 and demo.instruction == "put it there"
    assert (demo.meta["task_id"], demo.meta["init_state_index"], demo.meta["success"]) == (3, 7, True)
    np.testing.assert_array_equal(demo.state, states)
    np.testing.assert_array_equal(demo.actions, actions)
    for view, shift in (("agentview", 0), ("wrist", 3)):
        images = demo.images(view)
        assert images.shape == (5, 128, 128, 3) and images.dtype == np.uint8
        # JPEG is lossy; the frames must still be the same pictures
        assert np.abs(images[2].astype(int) - _smooth_frame(2 + shift).astype(int)).mean() < 4.0
        assert max(len(b) for b in demo.frames[view]) < 3000  # the per-view, per-frame budget


def test_writer_rejects_images_of_the_wrong_size(tmp_path):
    writer = DemoWriter(image_size=128)
    with pytest.raises(ValueError, match="image_size is 128"):
        writer.add(
            {
                "images": {"agentview": np.zeros((64, 64, 3), np.uint8), "wrist": np.zeros((64, 64, 3), np.uint8)},
                "state": np.zeros(8),
            },
            np.zeros(7),
        )


def test_cli_options_are_split_from_config_overrides():
    from sim_eval.record import split_argv

    options, overrides = split_argv(
        [
            "policy=scripted",
            "out=/tmp/x",
            "record.image_size=96",
            "suite=libero_10",
            "record.num_workers=3",
            "eval.tasks=[0,1]",
        ]
    )
    assert options == {"out": "/tmp/x", "image_size": 96, "num_workers": 3}
    assert overrides == ["policy=scripted", "suite=libero_10", "eval.tasks=[0,1]"]


def _job(out, max_steps: int = 280):
    from sim_eval.record import EpisodeJob

    return EpisodeJob(
        suite="libero_object",
        policy=SCRIPTED,
        policy_name="scripted",
        # The recorder's default pipeline: protocol renders (256 px) resized to the 128 px demo size.
        env_kwargs={"max_steps": max_steps, "render_size": 256, "model_image_size": 128, "privileged": True},
        replan_steps=5,
        out=str(out),
        image_size=128,
        jpeg_quality=65,
    )


@pytest.mark.sim
def test_recorded_demo_loads_without_simulator_and_replays_to_success(tmp_path):
    from sim_eval.record import record_demos

    manifest = record_demos(_job(tmp_path), [(0, 0)], num_workers=0)
    assert manifest["successes"] == 1 and manifest["failures"] == 0 and not manifest["errors"]
    assert load_manifest(tmp_path) == json.loads((tmp_path / MANIFEST).read_text())
    [demo] = list(iter_demos(tmp_path))
    assert demo.meta["suite"] == "libero_object" and demo.meta["task_id"] == 0
    assert demo.meta["init_state_index"] == 0 and demo.meta["success"] is True
    assert demo.instruction.startswith("pick up the alphabet soup")
    steps = len(demo)
    assert demo.state.shape == (steps, 8) and demo.actions.shape == (steps, 7)
    for view in ("agentview", "wrist"):
        assert demo.images(view).shape == (steps, 128, 128, 3)
        assert np.mean([len(b) for b in demo.frames[view]]) < 3000

    # Open-loop replay in a fresh simulator (no cameras, no policy): the same actions must succeed again.
    from sim_eval.envs.libero_env import LiberoEnv

    env = LiberoEnv("libero_object", 0, max_steps=280, cameras=False)
    try:
        obs, _ = env.reset(options={"init_state_index": demo.meta["init_state_index"]})
        np.testing.assert_allclose(obs["state"], demo.state[0], atol=1e-5)
        success = False
        for action in demo.actions:
            obs, _, success, truncated, _ = env.step(action)
            if success or truncated:
                break
        assert success and env.sim._check_success()
    finally:
        env.close()


@pytest.mark.sim
def test_failed_episodes_are_counted_not_recorded_and_rerun_skips_done_work(tmp_path):
    from sim_eval.record import record_demos

    # 30 steps are too few to finish the task: the episode fails and must leave no demo file.
    manifest = record_demos(_job(tmp_path, max_steps=30), [(0, 1)], num_workers=1)
    assert manifest["successes"] == 0 and manifest["failures"] == 1
    assert manifest["failed"] == ["libero_object/0/1"] and not list(tmp_path.glob("*.npz"))
    again = record_demos(_job(tmp_path, max_steps=30), [(0, 1)], num_workers=1)
    assert again["episodes_run"] == 1 and again["failures"] == 1  # not run twice


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["policy=scripted", "suite=libero_object"], "out=DIR is required"),
        (["policy=scripted", "suite=libero_objekt", "out=/tmp/x"], "unknown suite 'libero_objekt'"),
        (["policy=scripted", "record.image_size=8", "out=/tmp/x"], "record.image_size=8: must be >= 16"),
    ],
)
def test_bad_recorder_input_fails_with_one_line_before_any_simulator(argv, message, capsys):
    from sim_eval.record import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unbuildable_policy_in_a_worker_fails_instead_of_hanging(tmp_path):
    from sim_eval.record import record_demos

    job = dataclasses.replace(_job(tmp_path), policy={**SCRIPTED, "speed": 5.0})  # outside ScriptedExpert's range
    with pytest.raises(RuntimeError, match="could not build the policy"):
        record_demos(job, [(0, 0), (0, 1)], num_workers=1)


@pytest.mark.sim
def test_dead_worker_leaves_an_error_outcome_and_a_replacement_finishes(tmp_path, monkeypatch):
    """A recorder worker that dies mid-episode (os._exit, as a segfault would) must not hang the recorder or lose
    the episode: it is an error outcome (retried by a rerun), and a replacement worker records the rest."""
    from sim_eval.record import record_demos

    monkeypatch.setenv("SIM_EVAL_TEST_EXIT_EPISODE", "1")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))  # spawned workers import tests.*
    job = dataclasses.replace(
        _job(tmp_path, max_steps=20), policy={"_target_": "tests.exiting_policy.ExitingPolicy"}, policy_name="exiting"
    )
    manifest = record_demos(job, [(0, 0), (0, 1), (0, 2)], num_workers=1)
    assert manifest["episodes_run"] == 3 and manifest["failures"] == 2 and manifest["successes"] == 0
    [error] = manifest["errors"]
    assert error["key"] == "libero_object/0/1" and "exited with code 3" in error["error"]
    assert error["error"].startswith("WorkerDied")

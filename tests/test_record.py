"""Demonstration files and the recorder: the format round-trips without a simulator, and a recorded episode's actions
replayed open-loop from the same init state reproduce LIBERO's success."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sim_eval.demos.files import MANIFEST, DemoWriter, iter_demos, load_demo, load_manifest

SCRIPTED = {"_target_": "sim_eval.policies.scripted.ScriptedExpert", "name": "scripted"}


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
    labels = actions + 0.1
    for t in range(5):
        obs = {"state": states[t]}
        if t % 2 == 0:  # a frame stride of 2: only even steps carry images
            obs["images"] = {"agentview": _smooth_frame(t), "wrist": _smooth_frame(t + 3)}
        writer.add(obs, actions[t], labels[t] if t != 4 else None, perturbed=t in (1, 3))
    meta = {"instruction": "put it there", "suite": "libero_object", "task_id": 3, "placement_seed": 7, "success": True}
    path = writer.save(tmp_path / "demo.npz", meta)
    assert not list(tmp_path.glob("*.tmp"))
    demo = load_demo(path)
    assert len(demo) == 5 and demo.instruction == "put it there"
    assert (demo.meta["task_id"], demo.meta["placement_seed"], demo.meta["success"]) == (3, 7, True)
    np.testing.assert_array_equal(demo.state, states)
    np.testing.assert_array_equal(demo.actions, actions)
    np.testing.assert_array_equal(demo.labels[:4], labels[:4])
    np.testing.assert_array_equal(demo.labels[4], actions[4])  # no label given: the executed action was the expert's
    np.testing.assert_array_equal(demo.perturbed, [False, True, False, True, False])
    np.testing.assert_array_equal(demo.frame_steps, [0, 2, 4])
    for view, shift in (("agentview", 0), ("wrist", 3)):
        images = demo.images(view)
        assert images.shape == (3, 128, 128, 3) and images.dtype == np.uint8
        # JPEG is lossy; the frames must still be the same pictures
        assert np.abs(images[1].astype(int) - _smooth_frame(2 + shift).astype(int)).mean() < 4.0
        assert max(len(b) for b in demo.frames[view]) < 3000


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
    from sim_eval.record import split_record_options

    options, overrides = split_record_options(
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


def _job(out, max_steps: int = 280, **kwargs):
    from sim_eval.demos.recorder import EpisodeJob

    return EpisodeJob(
        suite="libero_object",
        policy=SCRIPTED,
        policy_name="scripted",
        # The protocol's pipeline (256 px renders, upright, resized-with-pad to 224), then the engine's own resize
        # to the 128 px model input.
        env_kwargs={"max_steps": max_steps, "render_size": 256, "model_image_size": 224, "privileged": True},
        replan_steps=5,
        out=str(out),
        image_size=128,
        jpeg_quality=65,
        **kwargs,
    )


@pytest.mark.sim
def test_recorded_demo_loads_without_simulator_and_replays_to_success(tmp_path):
    """A demo recorded from a fresh placement with DART noise and a frame stride: labels are the expert's clean
    actions, frames are the model's input pixels of every 3rd step, and the executed actions replayed open-loop from
    the same placement succeed again."""
    from sim_eval.demos.recorder import record_demos

    job = _job(tmp_path, dart_prob=0.3, dart_sigma=0.3, frame_stride=3)
    manifest = record_demos(job, [(0, 100001)], num_workers=0)
    assert manifest["successes"] == 1 and manifest["failures"] == 0 and not manifest["errors"]
    assert load_manifest(tmp_path) == json.loads((tmp_path / MANIFEST).read_text())
    [demo] = list(iter_demos(tmp_path))
    assert demo.meta["suite"] == "libero_object" and demo.meta["task_id"] == 0
    assert demo.meta["placement_seed"] == 100001 and demo.meta["success"] is True
    assert demo.meta["held_out"]["held_out"] and demo.meta["held_out"]["distance_m"] > 0.001
    assert demo.instruction.startswith("pick up the alphabet soup")
    steps = len(demo)
    assert demo.state.shape == (steps, 8) and demo.actions.shape == demo.labels.shape == (steps, 7)
    # DART: about 30% of the steps executed a perturbed arm action; the gripper and the unperturbed steps are clean
    assert 0.15 < demo.perturbed.mean() < 0.45
    assert np.all(demo.actions[:, 6] == demo.labels[:, 6])
    np.testing.assert_array_equal(demo.actions[~demo.perturbed], demo.labels[~demo.perturbed])
    assert np.all(np.abs(demo.actions[demo.perturbed] - demo.labels[demo.perturbed]).max(axis=1) > 0)
    assert manifest["dart"]["perturbed_steps"] == int(demo.perturbed.sum())
    np.testing.assert_array_equal(demo.frame_steps, np.arange(0, steps, 3))
    for view in ("agentview", "wrist"):
        assert demo.images(view).shape == (len(demo.frame_steps), 128, 128, 3)

    from sim_eval.envs.libero_env import LiberoEnv

    # Open-loop replay in a fresh simulator (no cameras, no policy): the same actions must succeed again.
    env = LiberoEnv("libero_object", 0, max_steps=280, cameras=False)
    try:
        obs, _ = env.reset(options={"placement_seed": 100001})
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
def test_frames_of_a_strided_recording_are_the_pixels_of_an_always_rendering_env():
    """``EveryNthFrame`` skips the renders of the other steps without moving robosuite's camera sampling: the kept
    frames equal, pixel for pixel, those of an env that renders every step (same placement, same actions)."""
    from sim_eval.envs.libero_env import EveryNthFrame, LiberoEnv

    rng = np.random.default_rng(0)
    actions = [np.concatenate([rng.uniform(-0.7, 0.7, 6), [rng.choice([-1.0, 1.0])]]) for _ in range(9)]
    env = LiberoEnv("libero_object", 0, max_steps=50, render_size=64, model_image_size=64, num_wait_steps=2)
    try:
        frames = []
        for wrapped in (env, EveryNthFrame(env, 3)):
            obs, _ = wrapped.reset(options={"placement_seed": 100003})
            seen = {0: obs["images"]}
            for t, action in enumerate(actions, start=1):
                obs, *_ = wrapped.step(action)
                if "images" in obs:
                    seen[t] = obs["images"]
            frames.append(seen)
    finally:
        env.close()
    full, strided = frames
    assert sorted(strided) == [0, 3, 6, 9] and len(full) == 10
    for t, images in strided.items():
        for view in ("agentview", "wrist"):
            np.testing.assert_array_equal(images[view], full[t][view])


@pytest.mark.sim
def test_held_out_check_rejects_a_start_from_an_evaluation_init_state(tmp_path):
    from sim_eval.demos.recorder import record_demos
    from sim_eval.envs.layouts import HeldOutViolation, check_held_out, free_joint_qpos_addresses
    from sim_eval.envs.libero_env import LiberoEnv

    env = LiberoEnv("libero_object", 2, max_steps=10, cameras=False, num_wait_steps=0)
    try:
        addresses = free_joint_qpos_addresses(env.sim.sim.model._model)
        assert len(addresses) >= 2  # the task's objects
        env.reset(options={"init_state_index": 3})  # what the evaluator starts episode 3 from
        check = check_held_out(env.start_state, env.init_states, addresses)
        assert not check.held_out and check.nearest_init_state == 3 and check.distance_m < 1e-9
        env.reset(options={"placement_seed": 100000, "held_out_tolerance": 0.001})
        assert env.held_out.held_out and env.held_out.distance_m > 0.001
        with pytest.raises(HeldOutViolation, match="placement seed 100000"):  # a tolerance every layout falls in
            env.reset(options={"placement_seed": 100000, "held_out_tolerance": 1.0})
    finally:
        env.close()
    manifest = record_demos(_job(tmp_path, held_out_tolerance=1.0), [(2, 100000)], num_workers=0)
    assert manifest["successes"] == 0 and manifest["rejected"][0]["key"] == "libero_object/2/100000"
    assert not list(tmp_path.glob("*.npz"))


def test_placement_plan_covers_every_task_in_rounds():
    from sim_eval.demos.recorder import placement_plan

    plan = placement_plan([0, 1], first_seed=100, per_task=12, block=5)
    assert len(plan) == len(set(plan)) == 24
    assert plan[:10] == [(0, s) for s in range(100, 105)] + [(1, s) for s in range(100, 105)]
    assert plan[-4:] == [(0, 110), (0, 111), (1, 110), (1, 111)]


@pytest.mark.sim
def test_failed_episodes_are_counted_not_recorded_and_rerun_skips_done_work(tmp_path):
    from sim_eval.demos.recorder import record_demos

    # 30 steps are too few to finish the task: the episode fails and must leave no demo file.
    manifest = record_demos(_job(tmp_path, max_steps=30), [(0, 100001)], num_workers=1)
    assert manifest["successes"] == 0 and manifest["failures"] == 1
    assert manifest["failed"] == ["libero_object/0/100001"] and not list(tmp_path.glob("*.npz"))
    again = record_demos(_job(tmp_path, max_steps=30), [(0, 100001)], num_workers=1)
    assert again["episodes_run"] == 1 and again["failures"] == 1  # not run twice


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["policy=scripted", "suite=libero_object"], "out=DIR is required"),
        (["policy=scripted", "suite=libero_objekt", "out=/tmp/x"], "unknown suite 'libero_objekt'"),
        (["policy=scripted", "record.image_size=8", "out=/tmp/x"], "record.image_size=8: must be >= 16"),
        (["policy=scripted", "record.dart_prob=1.5", "out=/tmp/x"], "record.dart_prob=1.5: allowed are 0..1"),
        (["policy=scripted", "record.frame_stride=0", "out=/tmp/x"], "record.frame_stride=0: must be >= 1"),
        (["policy=scripted", "record.placements=0", "out=/tmp/x"], "record.placements=0: must be >= 1"),
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
    from sim_eval.demos.recorder import record_demos
    from sim_eval.runtime.workers import WorkerStartError

    job = dataclasses.replace(_job(tmp_path), policy={**SCRIPTED, "speed": 5.0})  # outside ScriptedExpert's range
    with pytest.raises(WorkerStartError, match=r"ValueError: ScriptedExpert speed=5.0: must be in"):
        record_demos(job, [(0, 0), (0, 1)], num_workers=1)


@pytest.mark.sim
def test_dead_worker_leaves_an_error_outcome_and_a_replacement_finishes(tmp_path, monkeypatch):
    """A recorder worker that dies mid-episode (os._exit, as a segfault would) must not hang the recorder or lose
    the episode: it is an error outcome (retried by a rerun), and a replacement worker records the rest."""
    from sim_eval.demos.recorder import record_demos

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

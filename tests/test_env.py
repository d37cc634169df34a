"""The LIBERO environment against gymnasium's checker and the protocol's conventions (real simulator)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from sim_eval.envs.libero_env import LiberoEnv
from sim_eval.envs.protocol import quat_to_axis_angle, resize_with_pad

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def env():
    env = LiberoEnv("libero_object", 0, max_steps=6, render_size=64, model_image_size=64, num_wait_steps=2)
    yield env
    env.close()


def test_passes_gymnasium_env_checker(env):
    check_env(env, skip_render_check=True, skip_close_check=True)


def test_observation_follows_protocol(env):
    obs, info = env.reset(options={"init_state_index": 4})
    assert info["init_state_index"] == 4 and env.init_state_index == 4
    assert set(obs["images"]) == {"agentview", "wrist"}
    assert obs["images"]["agentview"].shape == (64, 64, 3) and obs["images"]["agentview"].dtype == np.uint8
    assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
    assert obs["instruction"] == env.language == "pick up the alphabet soup and place it in the basket"
    # Upright: the policy's image is LIBERO's render rotated by 180 degrees.
    raw = env._raw["agentview_image"]
    np.testing.assert_array_equal(obs["images"]["agentview"], raw[::-1, ::-1])
    # State: eef position, axis-angle of the eef quaternion, both finger joints.
    np.testing.assert_allclose(obs["state"][:3], env._raw["robot0_eef_pos"], rtol=1e-6)
    np.testing.assert_allclose(obs["state"][3:6], quat_to_axis_angle(env._raw["robot0_eef_quat"]), rtol=1e-5)
    np.testing.assert_allclose(obs["state"][6:], env._raw["robot0_gripper_qpos"], rtol=1e-6)


def test_same_init_state_gives_same_start(env):
    first, _ = env.reset(options={"init_state_index": 2})
    env.step(np.array([0.5, 0, 0, 0, 0, 0, 1.0]))
    second, _ = env.reset(options={"init_state_index": 2})
    np.testing.assert_array_equal(first["images"]["wrist"], second["images"]["wrist"])
    np.testing.assert_array_equal(first["state"], second["state"])


def test_step_limit_truncates_without_success(env):
    env.reset(options={"init_state_index": 0})
    for step in range(1, 7):
        _, reward, terminated, truncated, info = env.step(np.zeros(7))
        assert not terminated and reward == 0.0 and info["steps"] == step
    assert truncated


def test_bad_init_state_index_is_rejected(env):
    with pytest.raises(ValueError, match="init_state_index=50: allowed are 0..49"):
        env.reset(options={"init_state_index": 50})


def test_axis_angle_of_known_rotations():
    np.testing.assert_allclose(quat_to_axis_angle([0, 0, 0, 1]), [0, 0, 0])
    half = np.sqrt(0.5)
    np.testing.assert_allclose(quat_to_axis_angle([0, 0, half, half]), [0, 0, np.pi / 2], atol=1e-12)
    np.testing.assert_allclose(quat_to_axis_angle([1, 0, 0, 0]), [np.pi, 0, 0], atol=1e-12)


def test_resize_with_pad_keeps_aspect_and_centres():
    image = np.full((100, 200, 3), 255, np.uint8)
    out = resize_with_pad(image, 50)
    assert out.shape == (50, 50, 3)
    assert out[:12].max() == 0 and out[-12:].max() == 0  # 25 rows of image, padded 12/13 above and below
    assert out[13:37].min() == 255

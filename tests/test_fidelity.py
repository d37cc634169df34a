"""LIBERO as the reference has it: what the pinned simulator renders and settles against the training data of real
Pi0.5 and against what MuJoCo 3.2.3 (openpi's pin) does. Slow: real simulator, 40 scenes rendered once."""

from __future__ import annotations

import numpy as np
import pytest

from sim_eval.envs import fidelity
from sim_eval.envs.libero_env import LiberoEnv
from sim_eval.envs.simulator import mujoco_version, supports_colorspace, version_tuple

pytestmark = pytest.mark.sim

# Largest per-channel gap (0-1) between the mean colour of the 40 tasks' first frames and the training data's mean.
# Measured with scripts/check_fidelity.py (docs/benchmarks.md, Fidelity), agentview / wrist: textures as stored
# (MuJoCo 3.2.3, or 3.17 with sim.texture_colorspace=linear) 0.016 / 0.007; MuJoCo 3.17's own choice (PNG
# metadata: the floor decoded as sRGB) 0.024 / 0.034; every texture as sRGB 0.072 / 0.084.
MEAN_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def first_frames():
    return fidelity.first_frame_means()


def test_first_frames_of_the_four_suites_match_the_training_data(first_frames):
    gaps = fidelity.mean_gap(first_frames)
    assert set(gaps) == {"agentview", "wrist"}
    for view, gap in gaps.items():
        assert gap < MEAN_TOLERANCE, (view, np.round(first_frames[view] * 255, 1), gap)


@pytest.mark.skipif(
    version_tuple(mujoco_version()) >= (3, 4, 0),
    reason="MuJoCo >= 3.4 settles this bowl elsewhere (the pin moves to the reference 3.2.3 with the retrained model)",
)
def test_spatial_task5_bowl_settles_as_under_the_reference():
    """MuJoCo >= 3.4 settles this bowl elsewhere at reset (12.0 deg tilt at x -0.259 m under 3.17)."""
    import mujoco

    env = LiberoEnv("libero_spatial", 5, max_steps=1, cameras=False)
    try:
        env.reset(options={"init_state_index": 0})
        model, data = env.sim.sim.model._model, env.sim.sim.data._data
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "akita_black_bowl_1_main")
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, data.xquat[body])
        tilt = float(np.degrees(np.arccos(np.clip(rot[8], -1.0, 1.0))))
        x, _, z = data.xpos[body]
    finally:
        env.close()
    assert abs(z - 0.9344) < 1e-3 and abs(x - -0.2114) < 5e-3 and abs(tilt - 15.95) < 1.0, (x, z, tilt)


def test_colour_space_setting_reaches_the_renderer():
    """On the pinned MuJoCo every texture is sampled as stored, whatever the setting (srgb is refused at config
    time); where MuJoCo can decode sRGB, linear must give the reference look and srgb a darker floor."""
    frames = {}
    for mode in ("linear", "auto") + (("srgb",) if supports_colorspace() else ()):
        env = LiberoEnv("libero_object", 0, max_steps=1, model_image_size=128, texture_colorspace=mode)
        try:
            frames[mode] = env.reset(options={"init_state_index": 0})[0]["images"]["agentview"].astype(float)
        finally:
            env.close()
    if supports_colorspace():
        assert frames["srgb"].mean() < frames["linear"].mean() - 20, mujoco_version()
    else:
        assert np.array_equal(frames["linear"], frames["auto"])

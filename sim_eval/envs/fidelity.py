"""Is this LIBERO the one real Pi0.5 checkpoints were trained in? Frame statistics against the training data's.

The LeRobot dataset ``physical-intelligence/libero`` (openpi's LIBERO training set: 1,693 demonstrations, 273,465
frames, the 40 tasks of libero_spatial / object / goal / 10, 256 px, upright) publishes per-channel image
statistics in its ``meta/stats.json``. The mean colour of the first frames of every task, rendered here, must be
close to them: a simulator that samples LIBERO's sRGB-tagged textures as sRGB (MuJoCo >= 3.3.3 by default) renders
the floor ~36 levels darker and misses by several times the tolerance the reference simulator meets.
"""

from __future__ import annotations

import numpy as np

# meta/stats.json of physical-intelligence/libero (mean, 0-1, R G B), as vendored with that dataset's meta/info.json
# (codebase v2.0, 1693 episodes, 273465 frames, 40 tasks) in public repositories (docs/benchmarks.md, Fidelity).
TRAINING_MEAN = {
    "agentview": (0.48068472743034363, 0.4485854208469391, 0.4106878638267517),
    "wrist": (0.5057708024978638, 0.46449801325798035, 0.42354270815849304),
}
FOUR_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")


def first_frames(suite: str, tasks, init_state: int = 0, image_size: int = 128, texture_colorspace: str = "linear"):
    """Yield ``(task, images)``: each task's model-input images at init state ``init_state`` after the protocol's
    wait steps (upright, as the training data), one fresh env per task (what fidelity and render agreement compare)."""
    from sim_eval.envs.libero_env import LiberoEnv

    for task in tasks:
        env = LiberoEnv(suite, task, max_steps=1, model_image_size=image_size, texture_colorspace=texture_colorspace)
        try:
            obs, _ = env.reset(options={"init_state_index": init_state})
        finally:
            env.close()
        yield task, obs["images"]


def first_frame_means(
    suites=FOUR_SUITES, init_state: int = 0, image_size: int = 128, texture_colorspace: str = "linear"
) -> dict[str, np.ndarray]:
    """Per view, the mean colour (0-1, R G B) over the first frames of every task of ``suites``, each task weighted
    alike."""
    from sim_eval.envs import benchmarks

    sums: dict[str, list[np.ndarray]] = {}
    for suite in suites:
        for _, images in first_frames(suite, range(benchmarks.get(suite).n_tasks), init_state, image_size,
                                      texture_colorspace):  # fmt: skip
            for view, image in images.items():
                sums.setdefault(view, []).append(image.reshape(-1, 3).mean(axis=0) / 255.0)
    return {view: np.mean(means, axis=0) for view, means in sums.items()}


def mean_gap(means: dict[str, np.ndarray]) -> dict[str, float]:
    """Per view, the largest |difference| over the channels between ``means`` and the training data's mean."""
    return {view: float(np.max(np.abs(means[view] - np.asarray(TRAINING_MEAN[view])))) for view in means}

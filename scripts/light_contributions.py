"""How much each light adds to the model-input images under this machine's OpenGL: libero_object task 0, init
state 0, mean image level (128 px, 0-255) with every light on, then with each of the two scene lights or the
headlight switched off in turn. Run on two renderers (Mesa here, NVIDIA EGL on a GPU node) to see where their
images part (docs/benchmarks.md, GPU node).

    python scripts/light_contributions.py
"""

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from sim_eval.envs.libero_env import LiberoEnv  # noqa: E402


def main() -> None:
    env = LiberoEnv("libero_object", 0, max_steps=10, model_image_size=128)
    env.reset(options={"init_state_index": 0})
    print(env.gl_renderer())
    model = env._env.env.sim.model._model  # robosuite's MjSim wraps MuJoCo's MjModel

    def show(label: str) -> None:
        obs, *_ = env.step(np.zeros(7))  # a held pose: the next render sees the changed lights
        print(label, {view: round(float(image.mean()), 1) for view, image in obs["images"].items()}, flush=True)

    show("all lights")
    model.light_active[0] = 0
    show("light 0 off")
    model.light_active[0], model.light_active[1] = 1, 0
    show("light 1 off")
    model.light_active[:] = 0
    show("both scene lights off (headlight only)")
    model.light_active[:] = 1
    model.vis.headlight.active = 0
    show("headlight off (scene lights only)")
    env.close()


if __name__ == "__main__":
    main()

"""The model-input images of every task's first frames, rendered by this machine's MuJoCo backend, saved or compared.

Run it where rendering is to be checked (EGL on a GPU node) with ``--save FILE``, and where the reference was made
(Mesa on a CPU) with ``--compare FILE``: it prints, per view, the mean and max |difference| in uint8 levels of the
images a policy would see (protocol pipeline: upright, resize-with-pad to ``--size``) at init state ``--init``, after
the wait steps, for each task of the suite.

    python scripts/render_agreement.py --save $OUT/egl.npz        # on the GPU node
    python scripts/render_agreement.py --compare egl.npz          # here
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from sim_eval.envs.fidelity import first_frames  # noqa: E402


def render_all(suite: str, tasks: int, init: int, size: int) -> dict[str, np.ndarray]:
    return {
        f"{task}/{view}": image
        for task, images in first_frames(suite, range(tasks), init, size)
        for view, image in images.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--init", type=int, default=0)
    p.add_argument("--size", type=int, default=128)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--save", type=Path)
    g.add_argument("--compare", type=Path)
    args = p.parse_args()
    frames = render_all(args.suite, args.tasks, args.init, args.size)
    if args.save:
        np.savez_compressed(args.save, **frames)
        print(f"saved {len(frames)} images to {args.save}")
        return
    other = np.load(args.compare)
    for view in ("agentview", "wrist"):
        diffs = [np.abs(frames[k].astype(np.int16) - other[k].astype(np.int16)) for k in frames if k.endswith(view)]
        means = [float(d.mean()) for d in diffs]
        worst = max(int(d.max()) for d in diffs)
        print(f"{view}: mean |diff| per task {np.round(means, 3).tolist()}; max |diff| {worst}")


if __name__ == "__main__":
    main()

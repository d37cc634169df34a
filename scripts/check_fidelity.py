"""Frame statistics of this machine's LIBERO against the data real Pi0.5 was trained on (sim_eval.envs.fidelity).

    python scripts/check_fidelity.py [--colorspace linear|srgb|auto] [--init 0] [--suites libero_object ...]

Prints, per view, the mean colour of every task's first frame (0-255, R G B) beside the training data's, and the
largest per-channel gap in levels."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from sim_eval.envs.fidelity import FOUR_SUITES, TRAINING_MEAN, first_frame_means, mean_gap  # noqa: E402
from sim_eval.envs.simulator import effective_colorspace, mujoco_version  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--colorspace", default="linear", choices=("linear", "srgb", "auto"))
    p.add_argument("--init", type=int, default=0)
    p.add_argument("--suites", nargs="+", default=list(FOUR_SUITES))
    args = p.parse_args()
    means = first_frame_means(args.suites, args.init, texture_colorspace=args.colorspace)
    gaps = mean_gap(means)
    textures = effective_colorspace(args.colorspace)
    print(f"MuJoCo {mujoco_version()}, textures {textures}, init state {args.init}, suites {' '.join(args.suites)}")
    for view, mean in means.items():
        ours = " ".join(f"{255 * c:6.1f}" for c in mean)
        ref = " ".join(f"{255 * c:6.1f}" for c in TRAINING_MEAN[view])
        gap = gaps[view]
        print(f"{view:9s} here {ours} | training data {ref} | max gap {255 * gap:5.1f} levels ({gap:.4f})")


if __name__ == "__main__":
    main()

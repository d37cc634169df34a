"""Object layouts of simulator states, and the held-out check for demonstrations.

The evaluator starts every episode from one of LIBERO's fixed init states; demonstrations must start from other
layouts. A layout is the position of every free-floating object (the free joints' xyz in ``qpos``; the robot has none).
Two layouts are the same when every object is within ``tolerance`` metres of its place in the other, so a
demonstration is held out when its start layout is farther than that from every evaluation init state of its task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# LIBERO's placement regions are small: on libero_object the 50 init states of a task lie 2.5-6 mm from their nearest
# neighbour (max over objects), and fresh draws of the sampler 3-10 mm from the nearest init state. Half the closest
# init-state spacing is where "the same layout" ends.
DEFAULT_TOLERANCE_M = 0.001
_FREE_JOINT = 0  # mujoco.mjtJoint.mjJNT_FREE


def free_joint_qpos_addresses(model) -> list[int]:
    """``qpos`` index of the x coordinate of every free joint of a (raw) ``mujoco.MjModel``."""
    return [int(model.jnt_qposadr[j]) for j in range(model.njnt) if int(model.jnt_type[j]) == _FREE_JOINT]


def layout_from_state(flat_state: np.ndarray, addresses: list[int]) -> np.ndarray:
    """(objects, 3) positions from a flattened robosuite state ``[time, qpos..., qvel...]``."""
    qpos = np.asarray(flat_state, dtype=np.float64)[1:]
    return np.stack([qpos[a : a + 3] for a in addresses]) if addresses else np.zeros((0, 3))


class HeldOutViolation(ValueError):
    """A demonstration would start from (or within tolerance of) an evaluation init state."""


@dataclass(frozen=True)
class HeldOutCheck:
    nearest_init_state: int
    distance_m: float  # max over objects of the distance to that init state's layout
    tolerance_m: float

    @property
    def held_out(self) -> bool:
        return self.distance_m > self.tolerance_m

    def to_dict(self) -> dict:
        return {
            "nearest_init_state": self.nearest_init_state,
            "distance_m": round(self.distance_m, 5),
            "tolerance_m": self.tolerance_m,
            "held_out": self.held_out,
        }


def check_held_out(
    start_state: np.ndarray, init_states: np.ndarray, addresses: list[int], tolerance_m: float = DEFAULT_TOLERANCE_M
) -> HeldOutCheck:
    """How far the layout of ``start_state`` is from the nearest of ``init_states`` (all flattened states)."""
    if not addresses:
        raise ValueError("the scene has no free-floating object: there is no layout to compare")
    mine = layout_from_state(start_state, addresses)
    distances = [float(np.linalg.norm(layout_from_state(s, addresses) - mine, axis=1).max()) for s in init_states]
    nearest = int(np.argmin(distances))
    return HeldOutCheck(nearest, distances[nearest], float(tolerance_m))

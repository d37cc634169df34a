"""Privileged simulator state for scripted experts and checks, as plain numpy / str values.

``privileged_observation(robosuite_env)`` reads the LIBERO (robosuite) environment behind ``LiberoEnv.sim`` and returns
what a scripted expert needs to plan from the task's BDDL goal: the end effector and gripper, every object and fixture
with its pose and collision geometry, the joints of articulated fixtures (drawers, doors, knobs) with their world axis,
the BDDL regions (sites) and the goal predicates. Nothing here steps or changes the simulation.

Geometry is reported as axis-aligned boxes in the world frame (``aabb``: rows min, max) over an entity's collision
geoms, plus the box of the same geoms in the entity's own body frame (``local_center``, ``local_half``), which gives
an object's extent along its own axes whatever its yaw. Moving parts of fixtures (a drawer, a knob) get per-geom boxes
so an expert can find a handle as the geom that sticks out furthest along the opening direction.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

# Corners of the unit box, used to push each geom's local AABB through its world pose.
_SIGNS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)


class _ModelIndex:
    """Static lookups of one compiled model (which geoms belong to which entity/body), computed once per model."""

    def __init__(self, env):
        model = env.sim.model._model
        self.model = model
        parent = model.body_parentid
        collide = (model.geom_contype != 0) | (model.geom_conaffinity != 0)
        self.entity_geoms: dict[str, np.ndarray] = {}
        self.entity_root: dict[str, int] = {}
        self.part_bodies: dict[str, list[int]] = {}
        for name in list(env.objects_dict) + list(env.fixtures_dict):
            root = model.body(env.get_object(name).root_body).id
            bodies = {root}
            # Bodies are ordered parents-first, so one pass collects the whole subtree.
            for b in range(root + 1, model.nbody):
                if parent[b] in bodies:
                    bodies.add(b)
            geoms = np.array([g for g in range(model.ngeom) if model.geom_bodyid[g] in bodies and collide[g]], int)
            self.entity_geoms[name] = geoms
            self.entity_root[name] = root
            self.part_bodies[name] = sorted(b for b in bodies if model.body_jntnum[b] > 0 and b != root)
        self.body_geoms = {
            b: np.array([g for g in range(model.ngeom) if model.geom_bodyid[g] == b and collide[g]], int)
            for bodies in self.part_bodies.values()
            for b in bodies
        }


def _index(env) -> _ModelIndex:
    # Cached on the env itself, never in a module-level table: robosuite rebuilds the model on every hard reset, and a
    # table keyed by model would keep each episode's (large) compiled model alive.
    model = env.sim.model._model
    index = getattr(env, "_sim_eval_privileged_index", None)
    if index is None or index.model is not model:
        index = _ModelIndex(env)
        env._sim_eval_privileged_index = index
    return index


def _geom_corners(model, data, geoms: np.ndarray) -> np.ndarray:
    """World coordinates of the 8 corners of each geom's local bounding box, shape (n, 8, 3)."""
    aabb = model.geom_aabb[geoms]  # (n, 6): local center, local half-size
    local = aabb[:, None, :3] + _SIGNS[None] * aabb[:, None, 3:]
    mats = data.geom_xmat[geoms].reshape(-1, 3, 3)
    return np.einsum("nij,nkj->nki", mats, local) + data.geom_xpos[geoms][:, None, :]


def _box(points: np.ndarray) -> np.ndarray:
    return np.stack([points.min(axis=0), points.max(axis=0)])


def _joint(model, data, joint: int) -> dict[str, Any]:
    kind = {mujoco.mjtJoint.mjJNT_SLIDE: "slide", mujoco.mjtJoint.mjJNT_HINGE: "hinge"}.get(
        int(model.jnt_type[joint]), "other"
    )
    return {
        "type": kind,
        "qpos": float(data.qpos[model.jnt_qposadr[joint]]),
        "axis": data.xaxis[joint].copy(),
        "anchor": data.xanchor[joint].copy(),
        "range": model.jnt_range[joint].copy(),
    }


def privileged_observation(env) -> dict[str, Any]:
    """Snapshot of the privileged state of a LIBERO robosuite env (``LiberoEnv.sim``)."""
    index = _index(env)
    model, data = index.model, env.sim.data._data
    robot = env.robots[0]
    entities: dict[str, dict[str, Any]] = {}
    for name, geoms in index.entity_geoms.items():
        root = index.entity_root[name]
        pos, mat = data.xpos[root].copy(), data.xmat[root].reshape(3, 3).copy()
        corners = _geom_corners(model, data, geoms).reshape(-1, 3) if len(geoms) else pos[None]
        local = (corners - pos) @ mat  # world -> body frame
        per_geom = corners.reshape(-1, 8, 3) if len(geoms) else corners[None]
        entity: dict[str, Any] = {
            "pos": pos,
            "mat": mat,
            "aabb": _box(corners),
            "geom_min": per_geom.min(axis=1),  # world box of each collision geom (handles, lids, rims)
            "geom_max": per_geom.max(axis=1),
            "local_center": (local.min(axis=0) + local.max(axis=0)) / 2,
            "local_half": (local.max(axis=0) - local.min(axis=0)) / 2,
            "category": str(getattr(env.get_object(name), "category_name", "")),
            "fixture": name in env.fixtures_dict,
            "joints": {},
            "parts": {},
        }
        for body in index.part_bodies[name]:
            for j in range(model.body_jntadr[body], model.body_jntadr[body] + model.body_jntnum[body]):
                entity["joints"][model.joint(j).name] = _joint(model, data, j)
            geoms_b = index.body_geoms[body]
            if len(geoms_b):
                part_corners = _geom_corners(model, data, geoms_b)
                entity["parts"][model.body(body).name] = {
                    "joints": [
                        model.joint(j).name
                        for j in range(model.body_jntadr[body], model.body_jntadr[body] + model.body_jntnum[body])
                    ],
                    "aabb": _box(part_corners.reshape(-1, 3)),
                    "geom_min": part_corners.min(axis=1),
                    "geom_max": part_corners.max(axis=1),
                }
        entities[name] = entity
    sites: dict[str, dict[str, Any]] = {}
    for name, site in env.object_sites_dict.items():
        sid = model.site(name).id
        sites[name] = {
            "pos": data.site_xpos[sid].copy(),
            "mat": data.site_xmat[sid].reshape(3, 3).copy(),
            "size": np.asarray(site.size, dtype=np.float64),
            "parent": str(getattr(site, "parent_name", "") or ""),
            "joints": [str(j) for j in getattr(site, "joints", []) or []],
        }
    goal = env.parsed_problem["goal_state"]
    finger_qpos = np.asarray(data.qpos[robot._ref_gripper_joint_pos_indexes], dtype=np.float64)
    return {
        "eef_pos": data.site_xpos[robot.eef_site_id].copy(),
        "eef_mat": data.site_xmat[robot.eef_site_id].reshape(3, 3).copy(),
        "gripper_qpos": finger_qpos,
        "objects": entities,
        "sites": sites,
        "goal": [tuple(str(t).lower() for t in state) for state in goal],
        # LIBERO's own verdict per goal predicate, so an expert can skip what holds and verify what it did.
        "goal_status": np.array([bool(env._eval_predicate(state)) for state in goal], dtype=bool),
        "obj_of_interest": [str(n) for n in env.parsed_problem.get("obj_of_interest", [])],
    }

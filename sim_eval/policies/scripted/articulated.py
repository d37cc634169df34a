"""Skills on articulated fixtures: drawers (slide joints), doors and knobs (hinge joints).

A BDDL name for something articulated is either a region site that lists its joints (``wooden_cabinet_1_top_region``
-> the top drawer's slide) or a fixture whose joints are all it has (``microwave_1``, ``flat_stove_1``). The opening
direction comes from the joint range: the end nearer zero is "closed", the far end "open" (LIBERO's drawers open
towards -0.16 m, its microwave door towards -2.09 rad, its stove knob turns on towards +2.1 rad).
"""

from __future__ import annotations

import numpy as np

from sim_eval.policies.scripted import skills, world
from sim_eval.policies.scripted.motion import (
    CLOSED,
    OPEN,
    gripper_facing,
    nearest_down,
    rot_z,
    rotation_angle,
    tilted_down,
    yaw_for_axis,
)

CLOSE_LEAN_DEG = 40.0  # how far the hand leans back to push a low drawer shut


def joints_of(p, name: str) -> tuple[str, list[str]]:
    """(owning entity, joint names) behind a BDDL name."""
    if name in p["sites"]:
        site = p["sites"][name]
        return site["parent"], list(site["joints"])
    return name, list(p["objects"][name]["joints"])


def _joint(p, entity: str, joint: str) -> dict:
    return p["objects"][entity]["joints"][joint]


def open_fraction(p, entity: str, joint: str) -> float:
    """0 at the closed end of the joint's range, 1 at the open end."""
    j = _joint(p, entity, joint)
    lo, hi = j["range"]
    closed, opened = (lo, hi) if abs(lo) < abs(hi) else (hi, lo)
    return float((j["qpos"] - closed) / (opened - closed))


def is_open(p, name: str, upto: float = 1.0) -> bool:
    """Open (to the fraction ``upto`` of its range, the whole of it by default)."""
    entity, joints = joints_of(p, name)
    slack = 0.1 if upto >= 1.0 else 0.04
    return bool(joints) and all(open_fraction(p, entity, j) > upto - slack for j in joints)


def fit_fraction(p, region: str, held: str) -> float:
    """How far (fraction of its range) to open the drawer holding ``region`` for ``held`` to go in: just enough for
    its widest horizontal extent (``world.drawer_travel_to_fit``). libero_goal task 3's bowl stands in front of the
    top drawer; opened all the way the drawer hangs over the bowl's middle and no grasp from above gets past it.
    1.0 (all the way) for anything that is no drawer."""
    entity, joints = joints_of(p, region)
    extent = p["objects"][held]["aabb"][1, :2] - p["objects"][held]["aabb"][0, :2]
    travel = world.drawer_travel_to_fit(p, region, float(np.max(extent)))
    if travel is None or len(joints) != 1:
        return 1.0
    span = abs(float(np.diff(_joint(p, entity, joints[0])["range"])[0]))
    return min(open_fraction(p, entity, joints[0]) + travel / span, 1.0)


def is_closed_region(p, name: str) -> bool:
    """A region inside something articulated that is not open (a closed drawer), so nothing can be put in it."""
    if name not in p["sites"] or not p["sites"][name]["joints"]:
        return False
    return not is_open(p, name)


def _part(p, entity: str, joint: str) -> dict:
    for part in p["objects"][entity]["parts"].values():
        if joint in part["joints"]:
            return part
    raise KeyError(f"no moving part of {entity} carries joint {joint}")


def _open_direction(j: dict) -> float:
    """+1 if opening increases qpos, -1 if it decreases it."""
    lo, hi = j["range"]
    return 1.0 if abs(lo) < abs(hi) else -1.0


def slide_or_swing(ctx: skills.Context, name: str, opening: bool, done, upto: float = 1.0):
    """Open or close a drawer or door named in the goal; ``done(p)`` is the goal's verdict. A drawer is opened to
    the fraction ``upto`` of its range."""
    entity, joints = joints_of(ctx.p, name)
    for joint in joints:
        j = _joint(ctx.p, entity, joint)
        if j["type"] == "slide":
            yield from _slide(ctx, entity, joint, opening, upto)
        else:
            yield from rotate_hinge(ctx, entity, joint, (_open_direction(j) > 0) == opening, done)
    return True


def _slide(ctx: skills.Context, entity: str, joint: str, opening: bool, upto: float = 1.0):
    """A drawer. Opening: face the handle with the fingers horizontal, close them on the bar and pull (the gap
    behind a LIBERO drawer handle is narrower than a Panda finger, so hooking from above cannot work). Closing: push
    the front with closed fingers pointing down."""
    ctx.phase = f"{'open' if opening else 'close'}:{joint}"
    j = _joint(ctx.p, entity, joint)
    out = j["axis"] * _open_direction(j)  # world direction the drawer moves when it opens
    out[2] = 0.0
    out = out / np.linalg.norm(out)

    def bar(p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        part = _part(p, entity, joint)
        # The bar that sticks out furthest along the opening direction (the furthest corner of each geom's box).
        reach = np.maximum(part["geom_min"] * out, part["geom_max"] * out).sum(axis=1)
        handle = int(np.argmax(reach))
        lo, hi = part["geom_min"][handle], part["geom_max"][handle]
        return (lo + hi) / 2, lo, hi

    center, lo, hi = bar(ctx.p)
    depth = float((hi - lo) @ np.abs(out))
    if opening:
        # Fingers closing vertically; of the two such orientations, the one the wrist reaches with least travel.
        ctx.orient = min(
            (gripper_facing(-out, np.array([0.0, 0.0, sign])) for sign in (1.0, -1.0)),
            key=lambda r: rotation_angle(r, ctx.p["eef_mat"]),
        )
        if world.finger_width(ctx.p) < 0.07:
            yield from skills.actuate(ctx, OPEN)
        yield from skills.transit(ctx, center + out * 0.08, OPEN)
        yield from skills.move(ctx, lambda p: bar(p)[0] + out * 0.08, OPEN, tol=0.012, max_steps=30, speed=0.6)
        yield from skills.move(
            ctx, lambda p: bar(p)[0] + out * (depth * 0.2), OPEN, tol=0.006, max_steps=40, speed=0.7, stall_steps=6
        )
        yield from skills.actuate(ctx, CLOSED)
        grip = CLOSED
    else:
        ctx.orient = None
        ctx.yaw = yaw_for_axis(np.cross([0.0, 0.0, 1.0], out))  # fingers side by side along the front
        if ctx.p["objects"][entity]["aabb"][1, 2] > hi[2] + 0.05:
            # A low drawer: the cabinet's face goes on above its front, and an upright palm meets that face while the
            # drawer still stands out a few cm. The hand leans back so the fingertips reach in ahead of the palm.
            lean = np.radians(CLOSE_LEAN_DEG)
            ctx.orient = tilted_down(ctx.yaw, np.array([out[0] * np.sin(lean), out[1] * np.sin(lean), np.cos(lean)]))
        if world.finger_width(ctx.p) > 0.01:
            yield from skills.actuate(ctx, CLOSED)
        push = center + out * (depth / 2 + 0.025)
        push[2] = (lo[2] + hi[2]) / 2 + world.TIP_BELOW_SITE
        yield from skills.transit(ctx, push + np.array([0.0, 0.0, 0.04]), CLOSED)
        yield from skills.move(ctx, push, CLOSED, tol=0.008, max_steps=40, speed=0.5, stall_steps=6)
        grip = CLOSED
    for _ in range(3):
        frac = open_fraction(ctx.p, entity, joint)
        if (opening and frac > upto - (0.05 if upto >= 1.0 else 0.02)) or (not opening and frac < -0.02):
            break
        span = abs(float(np.diff(j["range"])[0]))
        # All the way: aim past the end stop so the pull stays firm. Part way: aim at the fraction itself.
        over = 0.03 if upto >= 1.0 else 0.0
        goal = ctx.p["eef_pos"] + out * ((upto - frac) * span + over if opening else -(frac * span + 0.04))
        yield from skills.move(ctx, goal, grip, tol=0.008, max_steps=60, speed=0.8, stall_steps=8)
    if opening:
        yield from skills.actuate(ctx, OPEN, max_steps=8)
        # Back off the handle and turn the fingers down again in one motion.
        ctx.yaw, ctx.orient = nearest_down(ctx.p["eef_mat"]), None
    back = ctx.p["eef_pos"] + out * 0.06 + np.array([0.0, 0.0, 0.04])
    yield from skills.move(ctx, back, OPEN if opening else CLOSED, tol=0.025, max_steps=25, speed=0.8)
    return True


def turn_knob(ctx: skills.Context, name: str, on: bool, done):
    """Turn a knob (a hinge fixture such as a stove's) towards its on (far) or off (closed) end until ``done(p)``."""
    entity, joints = joints_of(ctx.p, name)
    for joint in joints:
        j = _joint(ctx.p, entity, joint)
        yield from rotate_hinge(ctx, entity, joint, (_open_direction(j) > 0) == on, done)
    return True


def rotate_hinge(ctx: skills.Context, entity: str, joint: str, increase: bool, done):
    """Turn a vertical hinge by pushing its lever (a door's free edge, a knob's ridge) along the arc with closed
    fingers, from behind, in steps of a few degrees, re-aiming at the lever's current position each step."""
    ctx.phase = f"rotate:{joint}:{'+' if increase else '-'}"
    ctx.orient = None
    j = _joint(ctx.p, entity, joint)
    axis = j["axis"] / np.linalg.norm(j["axis"])
    if abs(axis[2]) < 0.9:
        return False  # only vertical hinges (every LIBERO door and knob the suites use)
    sign = (1.0 if increase else -1.0) * np.sign(axis[2])  # rotation about world +z

    def lever(p):
        jj = _joint(p, entity, joint)
        part = _part(p, entity, joint)
        tops = part["geom_max"][:, 2]
        tall = tops >= tops.max() - 0.02  # what the fingers can reach from above
        corners = np.concatenate([part["geom_min"][tall], part["geom_max"][tall]])
        rel = corners[:, :2] - jj["anchor"][:2]
        far = rel[int(np.argmax(np.linalg.norm(rel, axis=1)))]
        radius = np.linalg.norm(far)
        r_hat = far / max(radius, 1e-9)
        # Push just above whatever lower parts surround the lever (a knob's base disc), below the lever's top.
        below = float(tops[~tall].max()) if np.any(~tall) else float(part["geom_min"][tall][:, 2].min())
        z_hi = float(tops.max())
        return jj["anchor"][:2], r_hat, radius, below, z_hi

    def push_point(p, behind: float, ahead_rad: float = 0.0):
        anchor, r_hat, radius, z_lo, z_hi = lever(p)
        r_hat = (rot_z(sign * ahead_rad) @ np.array([r_hat[0], r_hat[1], 0.0]))[:2]
        tangent = sign * np.array([-r_hat[1], r_hat[0]])
        lever_r = max(radius - 0.025, 0.6 * radius)
        xy = anchor + r_hat * lever_r - tangent * behind
        z = min(z_lo + 0.006, z_hi - 0.015) + world.TIP_BELOW_SITE
        return np.array([xy[0], xy[1], z]), tangent

    if world.finger_width(ctx.p) > 0.01:
        yield from skills.actuate(ctx, CLOSED)
    start, tangent = push_point(ctx.p, behind=0.045)
    # Fingers side by side across the push, so both press on the lever with their rigid sides (pushing along the
    # closing axis would just shove one finger open).
    ctx.yaw = yaw_for_axis(np.array([-tangent[1], tangent[0], 0.0]))
    yield from skills.transit(ctx, start + np.array([0.0, 0.0, 0.05]), CLOSED)
    yield from skills.move(ctx, start, CLOSED, tol=0.008, max_steps=40, speed=0.5, stall_steps=6)
    for _ in range(60):
        if done(ctx.p):
            break
        goal, _ = push_point(ctx.p, behind=0.01, ahead_rad=0.25)
        yield from skills.move(ctx, goal, CLOSED, tol=0.01, max_steps=4, speed=0.6)
    up = ctx.p["eef_pos"] + np.array([0.0, 0.0, 0.06])
    yield from skills.move(ctx, up, CLOSED, tol=0.02, max_steps=20, speed=0.6)
    return True

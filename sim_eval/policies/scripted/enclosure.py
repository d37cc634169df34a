"""Putting an object into a container that is open on one side only (LIBERO's microwave).

Everywhere else the expert places from above; a microwave has a roof, so an object placed from above lands on it. The
object goes in through the opening instead: held by its handle from above (a mug's handle then faces the opening and
the hand stays outside it), carried to in front of the opening at the height of the container's floor, slid in and
released, and then pushed the last few cm by the handle, with the fingertips of a hand leaning back, until the handle
too is inside (the door would otherwise close on it). Closing the door is the ordinary ``close`` step that follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim_eval.policies.scripted import skills, world
from sim_eval.policies.scripted.motion import CLOSED, OPEN, tilted_down, yaw_for_axis

INSIDE_MARGIN = 0.006  # how far inside the front face (and off the back wall) the whole object ends up
HANDLE_THIN = 0.025  # a handle's geoms are thinner than this across, horizontally
PUSH_LEAN_DEG = 40.0  # the hand leans back this far to push the object in by its handle: fingertips ahead of the palm
LIFT_OVER_FLOOR = 0.012  # the carried object's bottom slides in this far above the container's floor


@dataclass
class Opening:
    out: np.ndarray  # unit horizontal direction from the inside out through the opening (world)
    floor: float  # top of the container's floor
    ceiling: float  # underside of its roof
    mouth: float  # coordinate along ``out`` of the front face (the plane of the opening)
    back: float  # coordinate along ``out`` of the back wall's inner face
    across: np.ndarray  # unit horizontal direction across ``out``
    sides: tuple[float, float]  # the free interval between the side walls, coordinates along ``across``


def static_boxes(p, entity: str) -> tuple[np.ndarray, np.ndarray]:
    """World boxes of an entity's collision geoms that do not move (a microwave without its door)."""
    e = p["objects"][entity]
    lo, hi = e["geom_min"], e["geom_max"]
    keep = np.ones(len(lo), bool)
    for part in e["parts"].values():
        for plo, phi in zip(part["geom_min"], part["geom_max"], strict=True):
            keep &= ~(np.all(np.isclose(lo, plo, atol=1e-6), axis=1) & np.all(np.isclose(hi, phi, atol=1e-6), axis=1))
    return lo[keep], hi[keep]


def _inside(lo: np.ndarray, hi: np.ndarray, point: np.ndarray) -> bool:
    return bool(np.any(np.all((lo <= point) & (point <= hi), axis=1)))


def opening(p, region: str) -> Opening | None:
    """The one open side of a region inside a fixture that has a floor and a roof over it, or None (a region open at
    the top, such as a basket's or a drawer's, or a region on a table)."""
    site = p["sites"].get(region)
    # A region that moves with a joint is a drawer's: open at the top once the drawer is out.
    if site is None or site["parent"] not in p["objects"] or site["joints"]:
        return None
    lo, hi = static_boxes(p, site["parent"])
    c, half = site["pos"], np.abs(site["mat"] @ site["size"])
    covers = np.all(lo[:, :2] <= c[:2], axis=1) & np.all(hi[:, :2] >= c[:2], axis=1)
    above, below = covers & (lo[:, 2] > c[2]), covers & (hi[:, 2] < c[2])
    if not (np.any(above) and np.any(below)):
        return None
    floor, ceiling = float(hi[below, 2].max()), float(lo[above, 2].min())
    mid = np.array([c[0], c[1], (floor + ceiling) / 2])
    walls, open_sides = {}, []
    for axis in (0, 1):
        for sign in (-1.0, 1.0):
            d = np.zeros(3)
            d[axis] = sign
            # Walk out of the region's middle; the first static geom met is that side's wall.
            steps = np.linspace(0.0, half[axis] + 0.1, 60)
            hit = next((t for t in steps if _inside(lo, hi, mid + d * t)), None)
            if hit is None:
                open_sides.append(d)
            else:
                walls[(axis, sign)] = float(mid[axis] + sign * hit)
    if len(open_sides) != 1:
        return None
    out = open_sides[0]
    axis, sign = int(np.argmax(np.abs(out))), float(out[np.argmax(np.abs(out))])
    other = 1 - axis
    across = np.zeros(3)
    across[other] = 1.0
    sides = (walls.get((other, -1.0), c[other] - half[other]), walls.get((other, 1.0), c[other] + half[other]))
    back = sign * walls[(axis, -sign)]
    # The front face: the outermost extent of the walls that frame the opening (geoms well to the side of it, such
    # as a control panel standing proud of the face, do not count).
    frame = (hi[:, other] >= sides[0] - 0.02) & (lo[:, other] <= sides[1] + 0.02)
    mouth = float(np.max(np.where(sign > 0, hi[frame, axis], -lo[frame, axis])))
    return Opening(out, floor, ceiling, mouth, back, across, (float(sides[0]), float(sides[1])))


@dataclass
class Handle:
    grasp: world.Grasp  # a top-down pinch across the handle
    direction: np.ndarray  # unit horizontal direction from the body's middle out to the handle
    reach: float  # how far the handle's outer face stands from the body's middle
    back: float  # how far the body reaches the other way
    body_xy: np.ndarray  # the body's middle (world xy)


def handle(e: dict) -> Handle | None:
    """A handle sticking out of an open-top body (a mug's): the thin geoms standing out beyond the body's radius.
    Taken from above across its thin side, high enough that the palm clears the rim beside it."""
    lo, hi = e["geom_min"][:, :2], e["geom_max"][:, :2]
    thin = (hi - lo).min(axis=1) < HANDLE_THIN
    if not np.any(thin) or len(lo) < 3:
        return None

    def extents(body: np.ndarray, direction: np.ndarray) -> np.ndarray:
        corners = np.stack([lo, hi, np.stack([lo[:, 0], hi[:, 1]], 1), np.stack([hi[:, 0], lo[:, 1]], 1)])
        return ((corners - body) @ direction).max(axis=0)  # how far each geom reaches along ``direction``

    # First guess of the body's middle: the median geom (most geoms make up the wall and the bottom); the handle
    # is the thin geoms standing out furthest from it. Then the body's middle again, without the handle.
    body = np.median((lo + hi) / 2, axis=0)
    rel = (lo + hi) / 2 - body
    k = int(np.argmax(np.where(thin, np.linalg.norm(rel, axis=1), -np.inf)))
    direction = rel[k] / max(float(np.linalg.norm(rel[k])), 1e-9)
    back = float(extents(body, -direction).max())
    group = thin & (rel @ direction > 0.9 * back)
    rest = ~group
    if not np.any(group) or not np.any(rest):
        return None
    body = (lo[rest].min(axis=0) + hi[rest].max(axis=0)) / 2
    direction = (lo[group].min(axis=0) + hi[group].max(axis=0)) / 2 - body
    direction /= max(float(np.linalg.norm(direction)), 1e-9)
    reach, back = float(extents(body, direction)[group].max()), float(extents(body, -direction)[rest].max())
    if reach < 1.2 * back:
        return None  # nothing stands out beyond the body: no handle
    glo, ghi = e["geom_min"][group].min(axis=0), e["geom_max"][group].max(axis=0)
    across = np.array([-direction[1], direction[0], 0.0])
    z = max(ghi[2] - 0.02, e["aabb"][1, 2] - world.PALM_ABOVE_SITE + 0.004)
    grasp = world.Grasp(np.array([*(glo[:2] + ghi[:2]) / 2, z]), yaw_for_axis(across), "handle")
    return Handle(grasp, direction, reach, back, body)


def put_inside(ctx: skills.Context, name: str, target: str, way: Opening):
    """Pick ``name`` by its handle and put it into ``target`` through ``way`` (see the module's description)."""
    h = handle(ctx.p["objects"][name])
    if h is None:
        return False
    if not (yield from skills.pick(ctx, name, h.grasp)):
        yield from skills.actuate(ctx, OPEN)
        return False
    ctx.phase = f"insert:{name}->{target}"
    o = ctx.p["objects"][name]
    # Where the hand holds the object: the body's middle and bottom relative to the grip site, as it hangs now.
    body_off = np.array([*(h.body_xy - ctx.p["objects"][name]["pos"][:2]), 0.0])
    hang = ctx.p["eef_pos"] - (o["pos"] + body_off)
    hang[2] = ctx.p["eef_pos"][2] - o["aabb"][0, 2]
    out, across = way.out, way.across
    lateral = (way.sides[0] + way.sides[1]) / 2
    # Stage one: slid in as deep as the hand can follow while staying outside the front face.
    hand_out = way.mouth + world.HAND_HALF_WIDTH + INSIDE_MARGIN
    grip_out = float(hang[:2] @ out[:2])  # how far the grip stands out from the body's middle along ``out``
    first = hand_out - grip_out
    # Stage two (the push): the whole object inside, handle included, off the back wall.
    final = min(way.mouth - INSIDE_MARGIN - h.reach, way.back + h.back + INSIDE_MARGIN + 0.01)
    final = max(final, way.back + h.back + INSIDE_MARGIN)

    def hand_at(u: float, bottom: float) -> np.ndarray:
        body = across * lateral + out * u
        return np.array([*(body[:2] + hang[:2]), bottom + hang[2]])

    bottom = way.floor + LIFT_OVER_FLOOR
    start_u = way.mouth + h.back + 0.03
    yield from skills.transit(ctx, hand_at(start_u, bottom), CLOSED, exclude=[], held=name)
    yield from skills.move(ctx, hand_at(start_u, bottom), CLOSED, tol=0.01, max_steps=40, speed=0.5)
    yield from skills.move(ctx, hand_at(first, bottom), CLOSED, tol=0.008, max_steps=60, speed=0.4, stall_steps=8)
    yield from skills.move(
        ctx, hand_at(first, way.floor + 0.004), CLOSED, tol=0.006, max_steps=20, speed=0.3, stall_steps=5
    )
    yield from skills.actuate(ctx, OPEN, max_steps=10)
    yield from skills.move(ctx, ctx.p["eef_pos"] + np.array([0.0, 0.0, 0.05]), OPEN, tol=0.015, max_steps=20)
    yield from push_in(ctx, name, h, way, final)
    return True


def push_in(ctx: skills.Context, name: str, h: Handle, way: Opening, final: float):
    """Push the object in by its handle until its body's middle is at ``final`` along ``way.out``: closed fingers
    side by side across the push, leaning back so their tips reach in under the roof ahead of the palm."""
    ctx.phase = f"push_in:{name}"
    out = way.out
    ctx.yaw = yaw_for_axis(way.across)
    lean = np.radians(PUSH_LEAN_DEG)
    ctx.orient = tilted_down(ctx.yaw, np.array([out[0] * np.sin(lean), out[1] * np.sin(lean), np.cos(lean)]))
    yield from skills.actuate(ctx, CLOSED)

    def body_u(p) -> float:
        e = p["objects"][name]
        lo, hi = e["geom_min"], e["geom_max"]
        return float(np.median((lo[:, :2] + hi[:, :2]) / 2, axis=0) @ out[:2])

    def behind(p, extra: float) -> np.ndarray:
        e = p["objects"][name]
        u = body_u(p) + h.reach + 0.012 + extra  # the fingertips just outside the handle's outer face
        point = p["eef_pos"].copy()
        point[:2] += out[:2] * (u - float(p["eef_pos"][:2] @ out[:2]))
        point[2] = e["aabb"][0, 2] + 0.035 + world.TIP_BELOW_SITE
        return point

    start = behind(ctx.p, 0.0)
    yield from skills.move(ctx, start + np.array([0.0, 0.0, 0.05]) + out * 0.02, CLOSED, tol=0.015, max_steps=40)
    yield from skills.move(ctx, behind(ctx.p, 0.0), CLOSED, tol=0.008, max_steps=30, speed=0.5, stall_steps=6)
    for _ in range(3):
        gap = body_u(ctx.p) - final
        if gap < 0.004:
            break
        goal = ctx.p["eef_pos"] - out * (gap + 0.01)
        yield from skills.move(ctx, goal, CLOSED, tol=0.006, max_steps=40, speed=0.4, stall_steps=6)
    # Out and up, straightening the hand on the way: turned upright all at once next to a door, it swung the arm
    # into the door and opened it further.
    back = ctx.p["eef_pos"] + out * 0.06 + np.array([0.0, 0.0, 0.04])
    yield from skills.move(ctx, back, CLOSED, tol=0.02, max_steps=25, speed=0.6)
    ctx.orient = None
    up = ctx.p["eef_pos"] + np.array([0.0, 0.0, 0.04])
    yield from skills.move(ctx, up, CLOSED, tol=0.02, max_steps=20, speed=0.5)
    return True

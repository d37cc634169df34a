"""Geometric queries on a privileged observation (see ``sim_eval.envs.privileged``): grasps, clearances, targets.

Everything here is a pure function of one observation, so the skills can re-plan every step from fresh state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim_eval.policies.scripted.motion import yaw_for_axis

GRIPPER_SPAN = 0.075  # widest object the Panda fingers close around with some margin (max opening ~0.08 m)
TIP_BELOW_SITE = 0.012  # fingertips hang this far below the grip site
PALM_ABOVE_SITE = 0.03  # the palm's underside is this far above the grip site
FINGER_OFFSET = 0.05  # fingers (open) reach this far from the centre line along the closing axis
HAND_HALF_LENGTH = 0.105  # the palm's half length along the closing axis
HAND_HALF_WIDTH = 0.035  # the palm's half width across it
RIM_DIRECTIONS = 12  # candidate approach directions for a rim grasp
SHARE_SPREAD = 0.55  # objects sharing a region go this fraction of its half size either side of its middle
RIM_DEPTH = 0.02  # how far below the rim the grip site goes (deeper and the palm lands on the rim)
DISH_DEPTH = 0.008  # a flat object whose floor lies this far below its top is a dish (dragged from inside)
REGION_MARGIN = 0.015  # how far inside a region's edge an object pushed into it is aimed
FIT_MARGIN = 0.0  # room either side of an object put into a drawer opened only as far as it needs
TILT_GRASP_DEG = 6.0  # a rim grasp follows the object's tilt beyond this many degrees


@dataclass
class Grasp:
    pos: np.ndarray  # grip-site target (world)
    yaw: float  # gripper yaw (see motion.R_HOME)
    kind: str  # "top" (across the narrow side), "rim" (one finger inside a bowl/mug wall) or "handle"
    axis: np.ndarray | None = None  # a rim grasp's object up axis (world) when the object is tilted, else None


def obj(p, name: str) -> dict:
    return p["objects"][name]


def center(entity: dict) -> np.ndarray:
    """World position of the centre of an entity's collision geometry."""
    return entity["pos"] + entity["mat"] @ entity["local_center"]


def support_z(p) -> float:
    """Height of the surface the movable objects rest on (table top or floor)."""
    bottoms = [e["aabb"][0, 2] for e in p["objects"].values() if not e["fixture"]]
    return float(np.min(bottoms)) if bottoms else 0.0


def _segment_points(a: np.ndarray, b: np.ndarray, n: int = 24) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return a[None, :2] * (1 - t) + b[None, :2] * t


def clearance_top(p, a, b, exclude=(), pad: float = 0.05) -> float:
    """Highest top of any entity whose footprint (grown by ``pad``) meets the straight xy path a -> b."""
    pts = _segment_points(np.asarray(a, float), np.asarray(b, float))
    lo, hi = obstacle_boxes(p, exclude)
    inside = (pts[None] >= lo[:, None, :2] - pad) & (pts[None] <= hi[:, None, :2] + pad)
    hit = np.any(np.all(inside, axis=2), axis=1)
    return max(support_z(p), float(np.max(hi[hit, 2]))) if np.any(hit) else support_z(p)


def overhead_boxes(p, name: str) -> list[np.ndarray]:
    """Boxes of moving fixture parts (an opened drawer) that hang over ``name``: lifting it straight up would hit
    them."""
    e = obj(p, name)
    lo, hi = e["aabb"]
    boxes = []
    for other, f in p["objects"].items():
        if other == name:
            continue
        for part in f["parts"].values():
            box = part["aabb"]
            overlap = np.all(box[0, :2] < hi[:2]) and np.all(box[1, :2] > lo[:2])
            if overlap and box[0, 2] > hi[2] - 0.005:
                boxes.append(box)
    return boxes


def escape_direction(p, name: str, toward: np.ndarray) -> np.ndarray | None:
    """Horizontal offset that takes ``name`` out from under any overhang, preferring the way to ``toward``."""
    boxes = overhead_boxes(p, name)
    if not boxes:
        return None
    e = obj(p, name)
    lo, hi = e["aabb"][0, :2], e["aabb"][1, :2]
    best = None
    for box in boxes:
        # The four ways out of this box's footprint, with the distance each needs (plus a margin).
        for axis in (0, 1):
            for sign in (-1.0, 1.0):
                dist = (box[1, axis] - lo[axis]) if sign > 0 else (hi[axis] - box[0, axis])
                offset = np.zeros(2)
                offset[axis] = sign * (dist + 0.02)
                cost = np.linalg.norm(offset) - 0.5 * float(offset @ (toward[:2] - e["pos"][:2])) / max(
                    np.linalg.norm(toward[:2] - e["pos"][:2]), 1e-9
                )
                if best is None or cost < best[0]:
                    best = (cost, offset)
    return best[1]


def footprint_distance(p, point_xy: np.ndarray, exclude=()) -> float:
    """Distance in xy from a point to the nearest footprint of any other entity (0 inside one)."""
    best = np.inf
    for name, e in p["objects"].items():
        if name in exclude:
            continue
        lo, hi = e["aabb"][0, :2], e["aabb"][1, :2]
        d = np.maximum(np.maximum(lo - point_xy, point_xy - hi), 0.0)
        best = min(best, float(np.linalg.norm(d)))
    return best


def horizontal_axes(e: dict) -> list[tuple[np.ndarray, float]]:
    """The object's two own axes that lie closest to horizontal, as (unit world direction, full extent)."""
    mat, half = e["mat"], e["local_half"]
    up = int(np.argmax(np.abs(mat[2, :])))
    axes = []
    for i in range(3):
        if i == up:
            continue
        d = mat[:, i].copy()
        d[2] = 0.0
        d /= max(np.linalg.norm(d), 1e-9)
        axes.append((d, 2.0 * float(half[i])))
    return axes


def hand_clearance(p, center_xy: np.ndarray, axis: np.ndarray, z_site: float, exclude=()) -> float:
    """Free space (metres; negative = collision) around a top-down hand at grip-site height ``z_site`` whose fingers
    close along ``axis``. The fingers reach down to the tips near the centre line; the palm, about 20 cm long along
    the closing axis, starts ``PALM_ABOVE_SITE`` above the grip site, so a tall neighbour well to the side still hits
    it."""
    lo, hi = obstacle_boxes(p, exclude)
    best = np.inf
    for offset in np.linspace(-HAND_HALF_LENGTH, HAND_HALF_LENGTH, 15):
        point = center_xy + axis[:2] * offset
        low = z_site - TIP_BELOW_SITE if abs(offset) <= FINGER_OFFSET else z_site + PALM_ABOVE_SITE
        above = hi[:, 2] > low
        if np.any(above):
            d = np.maximum(np.maximum(lo[above, :2] - point, point - hi[above, :2]), 0.0)
            best = min(best, float(np.min(np.linalg.norm(d, axis=1))) - HAND_HALF_WIDTH)
    return best


def clear_yaw(p, path_xy: np.ndarray, z_site: float, exclude=(), prefer: np.ndarray | None = None) -> float:
    """Yaw of a top-down hand that travels through the points ``path_xy`` (k, 2) whose palm keeps the most free
    space on the way (``hand_clearance``, worst point, counted up to 2 cm); ties go to fingers that close across
    ``prefer`` (so both press with their rigid sides)."""
    best, best_score = 0.0, -np.inf
    for deg in range(0, 180, 15):
        axis = rotate_xy(np.array([1.0, 0.0, 0.0]), np.radians(deg))
        score = min(min(hand_clearance(p, xy, axis, z_site, exclude=exclude) for xy in path_xy), 0.02)
        if prefer is not None:
            score -= 0.005 * abs(float(axis[:2] @ prefer[:2])) / max(float(np.linalg.norm(prefer[:2])), 1e-9)
        if score > best_score:
            best, best_score = yaw_for_axis(axis), score
    return best


def obstacle_boxes(p, exclude=()) -> tuple[np.ndarray, np.ndarray]:
    """World boxes (mins, maxs) of what a hand can hit: one per movable object, one per collision geom of a fixture.
    A fixture's overall box would also cover the air under an opened drawer (and the bowl standing there)."""
    lo, hi = [], []
    for name, e in p["objects"].items():
        if name in exclude:
            continue
        if e["fixture"] and len(e["geom_min"]):
            lo.append(e["geom_min"])
            hi.append(e["geom_max"])
        else:
            lo.append(e["aabb"][:1])
            hi.append(e["aabb"][1:])
    if not lo:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.concatenate(lo), np.concatenate(hi)


def rotate_xy(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], 0.0])


def plan_grasp(p, name: str) -> Grasp:
    """Grasp by geometry: objects narrow enough for the fingers are taken from above across their narrow side
    (turned by up to 45 degrees if that keeps the hand off a neighbour); wider ones (bowls, mugs, ramekins) by the
    rim, one finger inside the wall, from the side where the hand has most free space."""
    e = obj(p, name)
    lo, hi = e["aabb"]
    c = center(e)
    axes = sorted(horizontal_axes(e), key=lambda a: a[1])
    (narrow_dir, narrow), (_, wide) = axes
    if narrow <= GRIPPER_SPAN:
        z = max(lo[2] + TIP_BELOW_SITE + 0.004, hi[2] - PALM_ABOVE_SITE + 0.002)
        best, best_score = None, -np.inf
        for deg in (0, 15, -15, 30, -30, 45, -45):
            turn = np.radians(deg)
            chord = min(narrow / max(np.cos(turn), 1e-9), wide / max(abs(np.sin(turn)), 1e-9))
            if chord > GRIPPER_SPAN:
                continue
            axis = rotate_xy(narrow_dir, turn)
            score = min(hand_clearance(p, c[:2], axis, z, exclude=[name]), 0.02) - 0.0002 * abs(deg)
            if score > best_score:
                best, best_score = axis, score
        return Grasp(np.array([c[0], c[1], z]), yaw_for_axis(best), "top")
    handle = _handle_grasp(p, name)
    if handle is not None:
        return handle
    # Rim grasp, planned in the object's own frame so a tilted bowl (one resting on a ramekin) is taken at its rim's
    # real height on the chosen side.
    mat, half, local_c = e["mat"], e["local_half"], e["local_center"]
    up = int(np.argmax(np.abs(mat[2, :])))
    i, j = [k for k in range(3) if k != up]
    up_sign = float(np.sign(mat[2, up]))
    radius = narrow / 2.0
    best, best_score = None, -np.inf
    for k in range(RIM_DIRECTIONS):
        ang = 2 * np.pi * k / RIM_DIRECTIONS
        local_dir = np.zeros(3)
        local_dir[i], local_dir[j] = np.cos(ang), np.sin(ang)
        local_point = local_c + local_dir * (radius - 0.012)
        local_point[up] += up_sign * (half[up] - RIM_DEPTH)
        point = e["pos"] + mat @ local_point
        radial = mat @ local_dir
        radial[2] = 0.0
        radial /= max(np.linalg.norm(radial), 1e-9)
        point[2] = max(point[2], lo[2] + TIP_BELOW_SITE + 0.01)
        score = min(hand_clearance(p, point[:2], radial, point[2], exclude=[name]), 0.03)
        # Prefer the side facing the robot (negative x): the arm then does not reach over the object.
        score += 0.005 * (-radial[0])
        if score > best_score:
            best, best_score = (point, radial), score
    point, radial = best
    up_world = mat[:, up] * up_sign
    # A bowl resting tilted (on a ramekin) is taken with the hand tilted the same way: the fingers then straddle the
    # wall as on a level bowl; straight-down fingers on a sloped wall squeeze it out downwards.
    tilted = up_world[2] < np.cos(np.radians(TILT_GRASP_DEG))
    return Grasp(point, yaw_for_axis(radial), "rim", up_world.copy() if tilted else None)


def _open_top(e: dict) -> bool:
    """Whether the object is open at the top (a bowl or mug): no collision geom covers its centre near the top."""
    c = center(e)
    top = e["aabb"][1, 2]
    covers = (
        np.all(e["geom_min"][:, :2] <= c[:2] + 0.005, axis=1)
        & np.all(e["geom_max"][:, :2] >= c[:2] - 0.005, axis=1)
        & (e["geom_max"][:, 2] > top - 0.03)
    )
    return not bool(np.any(covers))


def dish_floor(e: dict) -> float:
    """Height of the floor under an object's centre (a plate's, a bowl's bottom): the lowest top among the collision
    geoms whose world boxes cover the centre. Not the highest: the world box of a rim geom turned 45 degrees about
    the vertical reaches over the centre too, at the rim's height."""
    c = center(e)
    lo, hi = e["geom_min"], e["geom_max"]
    covers = np.all(lo[:, :2] <= c[:2] + 0.005, axis=1) & np.all(hi[:, :2] >= c[:2] - 0.005, axis=1)
    return float(hi[covers, 2].min()) if np.any(covers) else float(e["aabb"][0, 2])


def is_dish(e: dict) -> bool:
    """Flat with a raised rim: the floor under the centre lies well below the object's top (a LIBERO plate's by
    about 1.2 cm), so closed fingertips standing on it are held in by the rim whichever way they move."""
    return bool(e["aabb"][1, 2] - dish_floor(e) > DISH_DEPTH)


def _handle_grasp(p, name: str) -> Grasp | None:
    """A closed-top object too wide for the fingers (a moka pot) is taken by its handle: the thin collision geom
    that sticks out furthest from the body, pinched across its thin side."""
    e = obj(p, name)
    if _open_top(e):
        return None
    c = e["pos"]  # the body origin sits in the pot itself; the box centre is pulled towards the handle
    mins, maxs = e["geom_min"], e["geom_max"]
    centers = (mins + maxs) / 2
    widths = (maxs - mins)[:, :2]
    thin = widths.min(axis=1) < 0.025
    reach = np.linalg.norm(centers[:, :2] - c[:2], axis=1)
    if not np.any(thin):
        return None
    k = int(np.argmax(np.where(thin, reach, -np.inf)))
    if reach[k] < 0.04:
        return None
    axis = np.zeros(3)
    axis[int(np.argmin(widths[k]))] = 1.0
    z = min(centers[k][2], maxs[k][2] - 0.008)
    return Grasp(np.array([centers[k][0], centers[k][1], z]), yaw_for_axis(axis), "handle")


def finger_width(p) -> float:
    q = p["gripper_qpos"]
    return float(q[0] - q[1])


@dataclass
class Destination:
    xy: np.ndarray  # where the held object's body origin should end up
    surface: float  # height the object's bottom should be released just above
    inside: bool  # True for containers (release lower, inside the region)


def destination(p, pred: str, target: str, held: str | None = None, slot: tuple[int, int] = (0, 1)) -> Destination:
    """Where to put ``held`` for ``(pred, held, target)`` with pred in {"on", "in"}, target an object or a site.

    ``slot`` = (k, n): ``held`` is the k-th of n objects the goal puts on the same region (two moka pots on one
    stove); they get spots spread along the region's longer side. Otherwise, on a region that already holds
    something, the free spot furthest from it."""
    if target in p["sites"]:
        s = p["sites"][target]
        half = np.abs(s["mat"] @ s["size"])
        if pred == "in":
            # Things dropped into a container may pile up; aim at its middle: of a drawer, at the middle of the part
            # that stands out of the cabinet (a drawer opened only as far as the object needs is partly inside).
            span = drawer_span(p, target)
            xy = s["pos"][:2].copy() if span is None else span[0][:2] * (span[1] + span[2]) / 2 + span[3]
            return Destination(xy, float(s["pos"][2] - half[2]), True)
        k, n = slot
        if n > 1:
            axis = int(np.argmax(half[:2]))
            xy = s["pos"][:2].copy()
            xy[axis] += half[axis] * np.linspace(-SHARE_SPREAD, SHARE_SPREAD, n)[k]
        else:
            xy = _free_spot(p, s["pos"][:2], half[:2], exclude={held, s["parent"]})
        return Destination(xy, float(s["pos"][2] + s["size"][2]), False)
    e = obj(p, target)
    return Destination(e["pos"][:2].copy(), float(e["aabb"][1, 2]), pred == "in")


def drawer_span(p, region: str) -> tuple[np.ndarray, float, float, np.ndarray] | None:
    """For a region inside a drawer (a site that lists slide joints): (out, lo, hi, rest) with ``out`` the horizontal
    direction the drawer opens in, [lo, hi] the stretch of the region along ``out`` that stands out of the cabinet
    (beyond its fixed front), ``rest`` the region centre's xy across ``out``. None for any other region."""
    s = p["sites"].get(region)
    if s is None or not s["joints"]:
        return None
    e = obj(p, s["parent"])
    joint = e["joints"].get(s["joints"][0])
    if joint is None or joint["type"] != "slide":
        return None
    lo_q, hi_q = joint["range"]
    out = joint["axis"] * (1.0 if abs(lo_q) < abs(hi_q) else -1.0)
    out[2] = 0.0
    out /= np.linalg.norm(out)
    # The cabinet's fixed front: the furthest reach along ``out`` of its geoms that do not move with a drawer.
    moving = [np.concatenate([part["geom_min"], part["geom_max"]], axis=1) for part in e["parts"].values()]
    moving = np.concatenate(moving) if moving else np.zeros((0, 6))
    boxes = np.concatenate([e["geom_min"], e["geom_max"]], axis=1)
    fixed = ~np.any(np.all(np.isclose(boxes[:, None, :], moving[None, :, :]), axis=2), axis=1)
    front = float(np.max(np.maximum(boxes[fixed, :3] * out, boxes[fixed, 3:] * out).sum(axis=1)))
    half = np.abs(s["mat"] @ s["size"])
    c = float(s["pos"] @ out)
    reach = float(half @ np.abs(out))
    rest = s["pos"][:2] - out[:2] * c
    return out, max(c - reach, front), c + reach, rest


def drawer_travel_to_fit(p, region: str, width: float, margin: float = FIT_MARGIN) -> float | None:
    """How much further (metres) the drawer holding ``region`` must open for an object ``width`` wide to go in with
    ``margin`` either side (0 if it already fits; None if ``region`` is in no drawer). Pulling it out further only
    costs steps and brings its front over whatever stands in front of the cabinet (the bowl of libero_goal task 3)."""
    span = drawer_span(p, region)
    if span is None:
        return None
    _, lo, hi, _ = span
    return max(width + 2 * margin - (hi - lo), 0.0)


def nearest_in_region(p, target: str, xy: np.ndarray, margin: float = REGION_MARGIN) -> np.ndarray | None:
    """The point of region site ``target`` (shrunk by ``margin``) nearest to ``xy``; None if ``target`` is no site.
    LIBERO's On for a region checks only that the object's origin lies within the site's box in x and y."""
    if target not in p["sites"]:
        return None
    s = p["sites"][target]
    half = np.maximum(np.abs(s["mat"] @ s["size"])[:2] - margin, 0.0)
    return np.clip(np.asarray(xy, float)[:2], s["pos"][:2] - half, s["pos"][:2] + half)


def _free_spot(p, center_xy: np.ndarray, half: np.ndarray, exclude: set) -> np.ndarray:
    occupants = [
        e["pos"][:2]
        for name, e in p["objects"].items()
        if name not in exclude and not e["fixture"] and np.all(np.abs(e["pos"][:2] - center_xy) < half + 0.03)
    ]
    if not occupants:
        return center_xy.copy()
    best, best_score = center_xy.copy(), -np.inf
    for fx in np.linspace(-0.6, 0.6, 7):
        for fy in np.linspace(-0.6, 0.6, 7):
            spot = center_xy + half * np.array([fx, fy])
            room = min(float(np.linalg.norm(spot - o)) for o in occupants)
            score = min(room, 0.09) - 0.1 * float(np.linalg.norm(spot - center_xy))
            if score > best_score:
                best, best_score = spot, score
    return best

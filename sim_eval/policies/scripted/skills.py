"""Skills of the scripted expert, written as generators that yield one 7-D action per control step.

Between two yields the expert refreshes ``ctx.p`` (the privileged observation of the new state), so every skill is
closed-loop: targets that depend on objects (a grasp point, a plate that moved, the offset of an object in the hand)
are recomputed each step. A skill returns True when it believes it succeeded; the expert then checks LIBERO's own
verdict on the goal predicate and retries or moves on.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from sim_eval.policies.scripted import world
from sim_eval.policies.scripted.motion import (
    CLOSED,
    OPEN,
    Servo,
    gripper_down,
    nearest_down,
    rotvec,
    tilted_down,
    yaw_for_axis,
)

Action = np.ndarray
Skill = Generator[Action, None, bool]
Target = np.ndarray | Callable[[dict], np.ndarray]

CARRY_MARGIN = 0.035  # clearance between a carried object's bottom and whatever it passes over
TRANSIT_MARGIN = 0.05  # clearance between the empty fingertips and whatever they pass over
CARRY_SPEED = 0.7  # speed cap (fraction of the controller's full step) while carrying
# The fingertips are aimed this far below a dragged dish's floor: the controller's stiffness then presses them onto it
# (aimed at the floor they hover ~7 mm above it, over the rim's low inner edge) and friction carries the dish along.
DISH_PRESS = 0.02
DISH_PUSH = 0.03  # the hand is aimed this far beyond where a dragged dish must go (keeps the push firm to the end)
DISH_TOL = 0.01  # a dragged dish this close to its goal is there
DISH_SLIP = 0.05  # a dragged dish this far from where it sat under the fingers has been left behind


@dataclass
class Context:
    """What the skills share: the servo, the latest privileged observation and the commanded wrist orientation."""

    servo: Servo
    p: dict = field(default_factory=dict)
    yaw: float = 0.0
    orient: np.ndarray | None = None  # overrides the straight-down gripper turned by ``yaw`` (e.g. facing a handle)
    phase: str = "idle"
    retries: int = 0
    slots: dict = field(default_factory=dict)  # (object, region) -> (k, n) when n goal objects share one region


def target_rot(ctx: Context) -> np.ndarray:
    return ctx.orient if ctx.orient is not None else gripper_down(ctx.yaw)


def _rot_error(ctx: Context) -> float:
    return float(np.linalg.norm(rotvec(target_rot(ctx) @ ctx.p["eef_mat"].T)))


def move(
    ctx: Context,
    target: Target,
    grip: float,
    tol: float = 0.01,
    max_steps: int = 80,
    speed: float | None = None,
    stall_steps: int = 0,
) -> Skill:
    """Servo the grip site to ``target``; True once within ``tol`` (and the wrist within 0.1 rad of its yaw).
    With ``stall_steps`` it also stops (False) when the hand has stopped moving for that long: it is blocked."""
    history: list[np.ndarray] = []
    rot_errors: list[float] = []
    for _ in range(max_steps):
        goal = np.asarray(target(ctx.p) if callable(target) else target)
        rot_errors.append(_rot_error(ctx))
        # A wrist that stopped turning (at a joint limit) must not hold the arm hostage once the hand is in place.
        rot_stuck = len(rot_errors) > 8 and rot_errors[-9] - rot_errors[-1] < 0.01
        if np.linalg.norm(goal - ctx.p["eef_pos"]) < tol and (rot_errors[-1] < 0.1 or rot_stuck):
            return True
        history.append(ctx.p["eef_pos"].copy())
        if stall_steps and len(history) > stall_steps:
            if np.linalg.norm(history[-1] - history[-1 - stall_steps]) < 0.003:
                return False
        yield ctx.servo(ctx.p, goal, target_rot(ctx), grip, speed)
    return False


def guarded(ctx: Context, skill: Skill, ok: Callable[[dict], bool]) -> Skill:
    """Run ``skill`` while ``ok(p)`` holds; stop it (False) the first step it does not."""
    while True:
        if not ok(ctx.p):
            return False
        try:
            action = next(skill)
        except StopIteration as stop:
            return stop.value
        yield action


def actuate(ctx: Context, grip: float, max_steps: int = 14) -> Skill:
    """Open or close the fingers while holding the hand where it is; done when the fingers stop moving."""
    hold = ctx.p["eef_pos"].copy()
    previous = None
    for i in range(max_steps):
        q = ctx.p["gripper_qpos"].copy()
        if i >= 4 and previous is not None and np.max(np.abs(q - previous)) < 3e-4:
            return True
        previous = q
        yield ctx.servo(ctx.p, hold, target_rot(ctx), grip)
    return True


def transit(ctx: Context, goal: np.ndarray, grip: float, exclude=(), held: str | None = None) -> Skill:
    """Move over the scene to ``goal`` (approaching it from above): up to a height that clears everything on the
    way, across, then down. With ``held`` the carried object's bottom is what must clear the obstacles."""
    if held:
        # Slide out from under an overhang (the drawer just opened above the bowl) before going up.
        escape = world.escape_direction(ctx.p, held, goal)
        if escape is not None:
            here = ctx.p["eef_pos"].copy()
            out = here + np.array([escape[0], escape[1], 0.0])
            yield from move(ctx, out, grip, tol=0.015, max_steps=40, speed=CARRY_SPEED)
    p = ctx.p
    start = p["eef_pos"].copy()
    skip = set(exclude) | ({held} if held else set())
    top = world.clearance_top(p, start, goal, exclude=skip)
    if held:
        hang = p["eef_pos"][2] - p["objects"][held]["aabb"][0, 2]
        safe = top + hang + CARRY_MARGIN
    else:
        safe = top + world.TIP_BELOW_SITE + TRANSIT_MARGIN
    safe = max(safe, goal[2])
    # A carried object is only held by friction (a bowl by its rim): move it gently.
    speed = CARRY_SPEED if held else None
    if start[2] < safe - 0.02:
        yield from move(ctx, np.array([start[0], start[1], safe]), grip, tol=0.02, max_steps=60, speed=speed)
    yield from move(ctx, np.array([goal[0], goal[1], max(safe, goal[2])]), grip, tol=0.015, max_steps=120, speed=speed)
    return True


def pick(ctx: Context, name: str, grasp: world.Grasp | None = None) -> Skill:
    """Grasp ``name`` (by ``grasp``, or as ``world.plan_grasp`` chooses) and lift it; True when it is in the hand
    (fingers not shut on air, object rose with the hand)."""
    ctx.phase = f"pick:{name}"
    ctx.orient = None
    grasp = grasp or world.plan_grasp(ctx.p, name)
    ctx.yaw = grasp.yaw
    approach = np.array([0.0, 0.0, 1.0])
    if grasp.axis is not None:
        ctx.orient = tilted_down(ctx.yaw, grasp.axis)
        approach = grasp.axis
    if world.finger_width(ctx.p) < 0.07:
        yield from actuate(ctx, OPEN)
    above = grasp.pos + approach * 0.06
    yield from transit(ctx, above, OPEN)

    def grasp_point(p):
        # Follow the object if it was nudged while we approached.
        return world.plan_grasp(p, name).pos if grasp.kind == "top" else grasp.pos

    yield from move(ctx, grasp_point, OPEN, tol=0.006, max_steps=50, speed=0.6, stall_steps=6)
    yield from actuate(ctx, CLOSED, max_steps=16)
    if world.finger_width(ctx.p) < 0.004:  # closed on nothing
        return False
    bottom0 = ctx.p["objects"][name]["aabb"][0, 2]
    lift = ctx.p["eef_pos"] + np.array([0.0, 0.0, 0.08])
    yield from move(ctx, lift, CLOSED, tol=0.015, max_steps=40, speed=0.5)
    if ctx.orient is not None:  # level the hand again (and with it the tilted bowl) for carrying
        ctx.yaw, ctx.orient = nearest_down(ctx.p["eef_mat"]), None
    # That the object rose with the hand is the proof; the finger gap is not: a bowl's rim pinched during the lift
    # squeezes the fingers down to the "closed on nothing" width and still holds.
    return bool(ctx.p["objects"][name]["aabb"][0, 2] - bottom0 > 0.03)


def place(ctx: Context, name: str, pred: str, target: str) -> Skill:
    """Carry the held ``name`` over ``target`` (object or region) and release it there."""
    ctx.phase = f"place:{name}->{target}"
    slot = ctx.slots.get((name, target), (0, 1))

    def eef_for(p, bottom_z: float) -> np.ndarray:
        # The object hangs from the hand at whatever offset the grasp gave; aim the object, not the hand.
        dest = world.destination(p, pred, target, name, slot)
        o, e = p["objects"][name], p["eef_pos"]
        return np.array(
            [dest.xy[0] - (o["pos"][0] - e[0]), dest.xy[1] - (o["pos"][1] - e[1]), bottom_z + (e[2] - o["aabb"][0, 2])]
        )

    offset = ctx.p["objects"][name]["pos"] - ctx.p["eef_pos"]

    def held(p) -> bool:
        # The object still moves with the hand; if it slipped out, carrying on would only wave an empty gripper.
        return bool(np.linalg.norm(p["objects"][name]["pos"] - p["eef_pos"] - offset) < 0.04)

    dest = world.destination(ctx.p, pred, target, name, slot)
    release_bottom = dest.surface + (0.005 if dest.inside else 0.012)
    above = eef_for(ctx.p, release_bottom + 0.05)
    if not (yield from guarded(ctx, transit(ctx, above, CLOSED, exclude=[target], held=name), held)):
        return False
    # Line up precisely above the destination before going down (the On check wants the centres within 3 cm).
    hover = world.destination(ctx.p, pred, target, name, slot)
    line_up = move(
        ctx, lambda p: eef_for(p, max(hover.surface, release_bottom) + 0.04), CLOSED, tol=0.008, max_steps=40, speed=0.6
    )
    if not (yield from guarded(ctx, line_up, held)):
        return False
    yield from move(
        ctx, lambda p: eef_for(p, release_bottom), CLOSED, tol=0.006, max_steps=50, speed=0.4, stall_steps=5
    )
    yield from actuate(ctx, OPEN, max_steps=10)
    up = ctx.p["eef_pos"] + np.array([0.0, 0.0, 0.07])
    yield from move(ctx, up, OPEN, tol=0.02, max_steps=30, speed=0.7)
    return True


def is_pushable(p, name: str) -> bool:
    """Flat and too wide for the fingers (a plate): slide it instead of lifting it."""
    e = p["objects"][name]
    height = e["aabb"][1, 2] - e["aabb"][0, 2]
    return bool(min(a[1] for a in world.horizontal_axes(e)) > world.GRIPPER_SPAN and height < 0.03)


def push(ctx: Context, name: str, pred: str, target: str) -> Skill:
    """Slide a plate-like ``name`` to its destination with the closed fingers, side by side, against its edge. The
    contact point is the one on the far side from the destination, or up to 60 degrees round from it when something
    (a cabinet) leaves no room for the hand there; each stroke moves it along that contact's normal by the share of
    the remaining gap, and the next stroke re-aims."""
    ctx.phase = f"push:{name}->{target}"
    ctx.orient = None
    slot = ctx.slots.get((name, target), (0, 1))
    for _ in range(4):
        e = ctx.p["objects"][name]
        dest = world.destination(ctx.p, pred, target, name, slot).xy
        gap = dest - e["pos"][:2]
        if np.linalg.norm(gap) < 0.012:
            return True
        d = np.array([*(gap / np.linalg.norm(gap)), 0.0])
        radius = min(a[1] for a in world.horizontal_axes(e)) / 2
        z = e["aabb"][0, 2] + 0.006 + world.TIP_BELOW_SITE
        best, best_score = None, -np.inf
        for deg in (0, 20, -20, 40, -40, 60, -60):
            n = world.rotate_xy(d, np.radians(deg))
            start_xy = e["pos"][:2] - n[:2] * (radius + 0.025)
            # Room for the closed fingers and the palm right above them (they stand low, beside the object).
            room = world.footprint_distance(ctx.p, start_xy, exclude=[name]) - 0.045
            score = min(room, 0.01) - 0.0002 * abs(deg)
            if score > best_score:
                best, best_score = (n, start_xy), score
        n, start_xy = best
        ctx.yaw = yaw_for_axis(np.array([-n[1], n[0], 0.0]))
        if world.finger_width(ctx.p) > 0.01:
            yield from actuate(ctx, CLOSED)
        start = np.array([start_xy[0], start_xy[1], z])
        yield from transit(ctx, start + np.array([0.0, 0.0, 0.05]), CLOSED)
        yield from move(ctx, start, CLOSED, tol=0.008, max_steps=40, speed=0.5, stall_steps=6)
        stroke = start + n * (0.025 + max(float(gap @ n[:2]), 0.0))
        yield from guarded(
            ctx, move(ctx, stroke, CLOSED, tol=0.008, max_steps=90, speed=0.5, stall_steps=10), _ahead(name, n[:2])
        )
        yield from move(ctx, ctx.p["eef_pos"] + np.array([0.0, 0.0, 0.05]), CLOSED, tol=0.02, max_steps=20)
    return True


def drag(ctx: Context, name: str, pred: str, target: str) -> Skill:
    """Move a dish (a plate: a flat floor inside a raised rim) with the closed fingertips standing on its floor: the
    rim is then pushed from inside whichever way the hand goes, so no room is needed beside the dish (a plate hemmed
    in by a cabinet and a bowl has none on the side a push from outside would need)."""
    ctx.phase = f"drag:{name}->{target}"
    ctx.orient = None
    slot = ctx.slots.get((name, target), (0, 1))
    if world.finger_width(ctx.p) > 0.01:
        yield from actuate(ctx, CLOSED)
    e = ctx.p["objects"][name]
    # On a region the dish only has to get inside it: its nearest point (a margin in) is less travel than its middle,
    # and less of whatever stands beyond gets shoved ahead of the rim (cream cheese wedged under it stopped a plate).
    goal = world.nearest_in_region(ctx.p, target, e["pos"][:2]) if pred == "on" else None
    gap = (world.destination(ctx.p, pred, target, name, slot).xy if goal is None else goal) - e["pos"][:2]
    floor = world.dish_floor(e) + world.TIP_BELOW_SITE - DISH_PRESS
    # The palm, 20 cm long along the closing axis, comes down to about a bowl's height: turn it so that it clears
    # the neighbours all the way (a bowl beside the plate held the hand up, and the fingertips slid over the floor).
    path = world.center(e)[:2] + np.linspace(0.0, 1.0, 5)[:, None] * gap
    ctx.yaw = world.clear_yaw(ctx.p, path, floor, exclude=[name], prefer=gap)
    yield from transit(ctx, np.array([*world.center(e)[:2], floor + 0.05]), CLOSED)

    def into(p):
        return np.array([*world.center(p["objects"][name])[:2], floor])

    # Down from the transit height fast, the last few cm slowly; done when the fingertips stand on the floor.
    yield from move(ctx, lambda p: into(p) + np.array([0.0, 0.0, 0.04]), CLOSED, tol=0.01, max_steps=40)
    yield from move(ctx, into, CLOSED, tol=0.004, max_steps=30, speed=0.5, stall_steps=6)
    offset = ctx.p["objects"][name]["pos"][:2] - ctx.p["eef_pos"][:2]

    def gap_now(p) -> np.ndarray:
        dest = world.destination(p, pred, target, name, slot).xy if goal is None else goal
        return dest - p["objects"][name]["pos"][:2]

    def along(p) -> np.ndarray:
        # Aim the dish, not the hand: the hand goes the dish's remaining gap (it lags the hand by a few cm of slip)
        # and DISH_PUSH beyond, so the controller still pushes hard when the gap is small and the dish shoves a
        # neighbour ahead of it (a gap-proportional command left a plate stuck 2 cm short behind cream cheese).
        gap = gap_now(p)
        ahead = gap + DISH_PUSH * gap / max(float(np.linalg.norm(gap)), 1e-9)
        return np.array([*(p["eef_pos"][:2] + ahead), floor])

    def going(p) -> bool:
        # Not there yet, and the fingers are still inside the dish (they did not ride over its rim and leave it).
        slip = np.linalg.norm(p["objects"][name]["pos"][:2] - p["eef_pos"][:2] - offset)
        return bool(np.linalg.norm(gap_now(p)) > DISH_TOL and slip < DISH_SLIP)

    yield from guarded(ctx, move(ctx, along, CLOSED, tol=0.0, max_steps=90, speed=0.6, stall_steps=10), going)
    yield from move(ctx, ctx.p["eef_pos"] + np.array([0.0, 0.0, 0.06]), CLOSED, tol=0.02, max_steps=20, speed=0.6)
    return True


def _ahead(name: str, n: np.ndarray):
    normal = np.array([-n[1], n[0]])

    def ok(p) -> bool:
        # The object stays just ahead of the hand: otherwise the fingers slid along its edge or over it.
        rel = p["objects"][name]["pos"][:2] - p["eef_pos"][:2]
        return bool(abs(rel @ normal) < 0.05 and rel @ n > 0.0)

    return ok


def hold(ctx: Context, grip: float = OPEN) -> Skill:
    """Stay put (all goals done or given up; a give-up stays visible in the phase the records keep)."""
    if not ctx.phase.startswith("gave_up"):
        ctx.phase = "hold"
    here = ctx.p["eef_pos"].copy()
    while True:
        yield ctx.servo(ctx.p, here, target_rot(ctx), grip)

"""The scripted expert: its motion math, its goal planning, and real LIBERO success judged by LIBERO's own check."""

from __future__ import annotations

import numpy as np
import pytest

from sim_eval.policies.base import TaskContext
from sim_eval.policies.scripted import ScriptedExpert
from sim_eval.policies.scripted.expert import MissingPrivilegedState, plan
from sim_eval.policies.scripted.motion import (
    R_HOME,
    WRIST_CENTER_YAW,
    Servo,
    closing_axis,
    current_yaw,
    rot_z,
    rotvec,
    yaw_for_axis,
)


def test_rotvec_recovers_rotations_up_to_a_half_turn():
    rng = np.random.default_rng(0)
    for _ in range(50):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = rng.uniform(0, np.pi - 1e-3)
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        mat = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k  # Rodrigues
        np.testing.assert_allclose(rotvec(mat), axis * angle, atol=1e-9)


def test_yaw_for_axis_closes_the_fingers_along_the_requested_direction_within_the_wrist_range():
    for angle in np.linspace(-3.0, 3.0, 13):
        direction = np.array([np.cos(angle), np.sin(angle), 0.0])
        yaw = yaw_for_axis(direction)
        # the gripper is symmetric: never more than a quarter turn from the middle of the wrist joint's range
        assert abs(yaw - WRIST_CENTER_YAW) <= np.pi / 2 + 1e-9
        assert abs(abs(closing_axis(yaw) @ direction) - 1.0) < 1e-9
    assert abs(current_yaw(rot_z(0.4) @ R_HOME) - 0.4) < 1e-12


def test_servo_bounds_speed_and_jerk_and_aims_at_the_target():
    servo = Servo(speed=1.0, slew=0.35)
    p = {"eef_pos": np.zeros(3), "eef_mat": R_HOME.copy()}
    first = servo(p, np.array([1.0, 0.0, 0.0]), R_HOME, -1.0)
    assert np.isclose(np.linalg.norm(first[:3]), 0.35)  # slew-limited from rest
    for _ in range(10):
        action = servo(p, np.array([1.0, 0.0, 0.0]), R_HOME, -1.0)
    assert np.isclose(np.linalg.norm(action[:3]), 1.0) and action[0] > 0  # then capped at full speed, towards it
    np.testing.assert_allclose(action[3:6], 0.0, atol=1e-12)  # already at the target orientation
    assert action[6] == -1.0
    turned = Servo()(p, np.zeros(3), rot_z(0.3) @ R_HOME, 1.0)
    assert turned[5] > 0 and np.all(np.abs(turned[:6]) <= 1.0)  # a positive yaw error asks for +z rotation


def _fake_obs(drawer_qpos: float) -> dict:
    joint = {"type": "slide", "qpos": drawer_qpos, "range": np.array([-0.16, 0.01])}
    return {
        "sites": {
            "cab_bottom_region": {
                "parent": "cab",
                "joints": ["cab_bottom"],
                "pos": np.zeros(3),
                "mat": np.eye(3),
                "size": np.ones(3) * 0.05,
            },
        },
        "objects": {"cab": {"joints": {"cab_bottom": joint}}},
    }


def test_plan_opens_before_putting_in_and_closes_last():
    goal = [("close", "cab_bottom_region"), ("in", "bowl", "cab_bottom_region"), ("turnon", "stove")]
    steps = plan(goal, _fake_obs(drawer_qpos=0.0))  # drawer shut: it must be opened first
    assert [s for _, s in steps] == [
        ("open", "cab_bottom_region", "bowl"),
        ("in", "bowl", "cab_bottom_region"),
        ("turnon", "stove"),
        ("close", "cab_bottom_region"),
    ]
    assert [i for i, _ in steps] == [-1, 1, 2, 0]
    open_drawer = plan(goal, _fake_obs(drawer_qpos=-0.15))
    assert [s[0] for _, s in open_drawer] == ["in", "turnon", "close"]


def test_expert_refuses_observations_without_privileged_state():
    expert = ScriptedExpert()
    expert.reset(TaskContext("libero_object", 0, "x", 0, 0))
    with pytest.raises(MissingPrivilegedState, match="privileged"):
        expert.infer({"state": np.zeros(8), "instruction": "x"})
    with pytest.raises(ValueError, match="speed"):
        ScriptedExpert(speed=2.0)


@pytest.mark.sim
def test_controller_scaling_is_what_the_expert_assumes():
    from sim_eval.envs.libero_env import LiberoEnv
    from sim_eval.policies.scripted.motion import POS_SCALE, ROT_SCALE

    env = LiberoEnv("libero_object", 0, max_steps=10, cameras=False)
    try:
        controller = env.sim.robots[0].controller
        assert type(controller).__name__ == "OperationalSpaceController"
        np.testing.assert_allclose(controller.output_max, [POS_SCALE] * 3 + [ROT_SCALE] * 3)
        np.testing.assert_allclose(controller.input_max, 1.0)
    finally:
        env.close()


@pytest.mark.sim
def test_expert_solves_a_real_libero_object_task_by_libero_check():
    from sim_eval.envs.libero_env import LiberoEnv
    from sim_eval.runtime.rollout import run_episode

    env = LiberoEnv("libero_object", 0, max_steps=280, cameras=False, privileged=True)
    try:
        record = run_episode(env, ScriptedExpert(), suite="libero_object", task_id=0, episode_index=0, replan_steps=5)
        assert record["error"] is None
        assert record["success"] is True and record["steps"] < 280
        # terminated came from LIBERO's check on the final state, not from the expert's own belief
        assert env.sim._check_success()
        phases = {inf["phase"].split(":")[0] for inf in record["inferences"]}
        assert {"pick", "place"} <= phases
    finally:
        env.close()


def _entity(center, half, geoms=None, yaw=0.0, fixture=False):
    """A privileged-observation entity: an upright box (or the union of ``geoms`` boxes) turned by ``yaw``."""
    center, half = np.asarray(center, float), np.asarray(half, float)
    if geoms is None:
        geoms = [(center - half, center + half)]
    mins = np.array([g[0] for g in geoms], float)
    maxs = np.array([g[1] for g in geoms], float)
    aabb = np.stack([mins.min(axis=0), maxs.max(axis=0)])
    return {
        "pos": center.copy(),
        "mat": rot_z(yaw),
        "aabb": aabb,
        "local_center": np.zeros(3),
        "local_half": half,
        "geom_min": mins,
        "geom_max": maxs,
        "fixture": fixture,
        "joints": {},
        "parts": {},
    }


def test_grasp_choice_follows_object_geometry():
    from sim_eval.policies.scripted import world

    box = _entity([0.0, 0.0, 0.05], [0.04, 0.02, 0.05], yaw=0.3)  # 4 cm deep, turned: close across the 4 cm side
    p = {"objects": {"box": box}}
    grasp = world.plan_grasp(p, "box")
    assert grasp.kind == "top"
    narrow_side = rot_z(0.3) @ np.array([0.0, 1.0, 0.0])
    assert abs(abs(closing_axis(grasp.yaw) @ narrow_side) - 1.0) < 1e-6
    assert box["aabb"][0, 2] < grasp.pos[2] < box["aabb"][1, 2]  # between the bottom and the top, not above it

    # A wide bowl: open top (nothing covers its middle near the top) -> one finger inside the wall, closing radially.
    wall = [
        ([-0.06, -0.06, 0.0], [-0.05, 0.06, 0.05]),
        ([0.05, -0.06, 0.0], [0.06, 0.06, 0.05]),
        ([-0.06, -0.06, 0.0], [0.06, -0.05, 0.05]),
        ([-0.06, 0.05, 0.0], [0.06, 0.06, 0.05]),
        ([-0.05, -0.05, 0.0], [0.05, 0.05, 0.01]),
    ]
    bowl = _entity([0.0, 0.0, 0.025], [0.06, 0.06, 0.025], geoms=wall)
    grasp = world.plan_grasp({"objects": {"bowl": bowl}}, "bowl")
    radial = np.array([*grasp.pos[:2], 0.0]) / np.linalg.norm(grasp.pos[:2])
    assert grasp.kind == "rim" and 0.03 < np.linalg.norm(grasp.pos[:2]) < 0.06
    assert abs(abs(closing_axis(grasp.yaw) @ radial) - 1.0) < 1e-6

    # A wide pot with a lid and a thin handle sticking out along -y -> pinch the handle across its thin (x) side.
    pot = [([-0.04, -0.04, 0.0], [0.04, 0.04, 0.12]), ([-0.006, -0.10, 0.04], [0.006, -0.04, 0.1])]
    moka = _entity([0.0, 0.0, 0.06], [0.04, 0.07, 0.06], geoms=pot)
    grasp = world.plan_grasp({"objects": {"moka": moka}}, "moka")
    assert grasp.kind == "handle" and grasp.pos[1] < -0.05
    assert abs(abs(closing_axis(grasp.yaw)[0]) - 1.0) < 1e-6


def _cook_region(half_x: float, half_y: float) -> dict:
    """A stove's flat cooking region at the origin, 0.9 m up, as ``envs/privileged.py`` describes sites."""
    return {
        "pos": np.array([0.0, 0.0, 0.9]),
        "mat": np.eye(3),
        "size": np.array([half_x, half_y, 0.0025]),
        "parent": "stove",
        "joints": [],
    }


def test_second_object_on_a_region_goes_to_a_free_spot():
    from sim_eval.policies.scripted import world

    site = _cook_region(half_x=0.075, half_y=0.075)
    p = {
        "sites": {"cook_region": site},
        "objects": {
            "stove": _entity([0.0, 0.0, 0.89], [0.15, 0.1, 0.01], fixture=True),
            "pot_1": _entity([0.0, 0.0, 0.95], [0.04, 0.04, 0.05]),
            "pot_2": _entity([0.3, 0.3, 0.95], [0.04, 0.04, 0.05]),
        },
    }
    first = world.destination(p, "on", "cook_region", "pot_2")
    assert np.linalg.norm(first.xy - p["objects"]["pot_1"]["pos"][:2]) > 0.05  # not on top of the first pot
    assert np.all(np.abs(first.xy) < site["size"][:2])  # still inside the region
    p["objects"]["pot_1"]["pos"] = np.array([0.5, 0.5, 0.95])  # region empty again: aim at its middle
    np.testing.assert_allclose(world.destination(p, "on", "cook_region", "pot_2").xy, [0.0, 0.0])


def test_objects_sharing_a_region_get_separate_spots():
    from sim_eval.policies.scripted import world
    from sim_eval.policies.scripted.expert import shared_slots

    goal = [("on", "pot_1", "cook_region"), ("on", "pot_2", "cook_region"), ("turnon", "stove"), ("on", "cup", "plate")]
    slots = shared_slots(goal)
    assert slots[("pot_1", "cook_region")] == (0, 2) and slots[("pot_2", "cook_region")] == (1, 2)
    assert slots[("cup", "plate")] == (0, 1)
    site = _cook_region(half_x=0.075, half_y=0.05)
    p = {"sites": {"cook_region": site}, "objects": {}}
    a = world.destination(p, "on", "cook_region", "pot_1", slots[("pot_1", "cook_region")]).xy
    b = world.destination(p, "on", "cook_region", "pot_2", slots[("pot_2", "cook_region")]).xy
    assert np.linalg.norm(a - b) > 0.08  # two 8 cm pots fit side by side
    assert np.all(np.abs(np.stack([a, b])) < site["size"][:2])  # both inside the region (LIBERO's On check)


def test_tilted_down_points_the_fingers_along_the_objects_down_axis():
    from sim_eval.policies.scripted.motion import gripper_down, tilted_down

    up = np.array([np.sin(0.3), 0.0, np.cos(0.3)])
    rot = tilted_down(0.7, up)
    np.testing.assert_allclose(rot[:, 2], -up, atol=1e-12)  # the gripper's z axis is the fingers' direction
    np.testing.assert_allclose(tilted_down(0.7, np.array([0.0, 0.0, 1.0])), gripper_down(0.7), atol=1e-12)


def test_a_fixture_blocks_the_hand_only_where_its_geoms_are():
    from sim_eval.policies.scripted import world

    # A cabinet body at x > 0.1 and its opened drawer hanging out over x in [0, 0.1], y < 0, at 0.15-0.2 m: the room
    # next to the drawer (x < 0.1, y > 0) is inside the cabinet's overall box but holds no geom.
    cabinet = _entity(
        [0.1, 0.0, 0.1],
        [0.1, 0.1, 0.1],
        geoms=[([0.1, -0.1, 0.0], [0.3, 0.1, 0.2]), ([0.0, -0.1, 0.15], [0.1, 0.0, 0.2])],
        fixture=True,
    )
    p = {"objects": {"cabinet": cabinet}}
    # A path into that room needs no climb; one under the drawer climbs over it.
    assert world.clearance_top(p, [-0.2, 0.08, 0.0], [0.0, 0.08, 0.0]) == world.support_z(p)
    assert world.clearance_top(p, [-0.2, -0.05, 0.0], [0.05, -0.05, 0.0]) == pytest.approx(0.2)
    # A hand low in that room, palm along x, clears the drawer; the same hand under the drawer does not.
    along_x = np.array([1.0, 0.0, 0.0])
    assert world.hand_clearance(p, np.array([-0.05, 0.09]), along_x, 0.05) > 0
    assert world.hand_clearance(p, np.array([-0.05, -0.05]), along_x, 0.05) < 0


def test_a_plate_with_a_raised_rim_is_a_dish_and_a_flat_box_is_not():
    from sim_eval.policies.scripted import world

    # A LIBERO plate: a 4 mm floor slab and a rim 1.9 cm high. A rim geom turned 45 degrees about z has a world box
    # that reaches over the centre too: the floor is the lowest top among the boxes covering the centre.
    floor = ([-0.03, -0.03, 0.0], [0.03, 0.03, 0.009])
    diagonal_rim = ([-0.015, -0.015, 0.0], [0.07, 0.07, 0.019])
    rim = [([-0.07, -0.07, 0.0], [-0.04, 0.07, 0.019]), ([0.04, -0.07, 0.0], [0.07, 0.07, 0.019])]
    plate = _entity([0.0, 0.0, 0.0095], [0.07, 0.07, 0.0095], geoms=[floor, diagonal_rim, *rim])
    assert world.dish_floor(plate) == pytest.approx(0.009)
    assert world.is_dish(plate)
    tray = _entity([0.0, 0.0, 0.0095], [0.07, 0.07, 0.0095])  # as flat and wide, but solid
    assert not world.is_dish(tray)


def test_a_dish_is_aimed_at_the_nearest_point_inside_the_region():
    from sim_eval.policies.scripted import world

    p = {
        "sites": {
            "front": {"pos": np.array([-0.05, 0.21, 0.9]), "mat": np.eye(3), "size": np.array([0.04, 0.04, 0.007])}
        }
    }
    goal = world.nearest_in_region(p, "front", np.array([0.05, -0.03]))
    # the region's nearest corner, a margin in: LIBERO's On only needs the origin inside the site's box
    np.testing.assert_allclose(goal, [-0.01 - world.REGION_MARGIN, 0.17 + world.REGION_MARGIN])
    inside = np.array([-0.04, 0.2])
    np.testing.assert_allclose(world.nearest_in_region(p, "front", inside), inside)
    assert world.nearest_in_region(p, "plate_1", inside) is None  # an object, not a region


def test_clear_yaw_turns_the_palm_away_from_a_tall_neighbour():
    from sim_eval.policies.scripted import world

    # a bowl 8 cm to the -x side of the hand, taller than the palm's underside: the palm must not lie along x
    p = {"objects": {"bowl": _entity([-0.08, 0.0, 0.025], [0.03, 0.03, 0.025])}}
    yaw = world.clear_yaw(p, np.array([[0.0, 0.0]]), z_site=0.01)
    assert abs(closing_axis(yaw)[0]) < 0.5


def _microwave() -> dict:
    """A box open towards -y: floor, roof, side walls and back wall, plus a door (a moving part) standing open."""
    walls = [
        ([-0.16, 0.25, 0.92], [-0.135, 0.45, 1.1]),  # left
        ([0.07, 0.25, 0.92], [0.18, 0.45, 1.1]),  # right
        ([-0.135, 0.42, 0.92], [0.07, 0.45, 1.1]),  # back
        ([-0.135, 0.25, 1.09], [0.07, 0.42, 1.1]),  # roof
        ([-0.135, 0.25, 0.92], [0.07, 0.42, 0.944]),  # floor
        ([0.095, 0.23, 0.92], [0.18, 0.25, 1.1]),  # a control panel standing proud of the front face
    ]
    door = ([-0.23, 0.0, 0.92], [-0.165, 0.25, 1.1])
    mw = _entity([0.0, 0.35, 1.0], [0.2, 0.2, 0.09], geoms=[*walls, door], fixture=True)
    mw["parts"] = {
        "door": {
            "joints": ["hinge"],
            "aabb": np.array(door),
            "geom_min": np.array([door[0]]),
            "geom_max": np.array([door[1]]),
        }
    }
    return mw


def _region(pos, half, parent, joints=()) -> dict:
    return {
        "pos": np.array(pos, float),
        "mat": np.eye(3),
        "size": np.array(half, float),
        "parent": parent,
        "joints": list(joints),
    }


def test_a_region_under_a_roof_is_entered_through_its_one_open_side():
    from sim_eval.policies.scripted import enclosure

    p = {"objects": {"mw": _microwave()}, "sites": {"heat": _region([0.0, 0.35, 1.016], [0.12, 0.084, 0.08], "mw")}}
    way = enclosure.opening(p, "heat")
    assert way is not None
    np.testing.assert_allclose(way.out, [0.0, -1.0, 0.0])  # the door is a moving part: it does not close the side
    assert way.floor == pytest.approx(0.944) and way.ceiling == pytest.approx(1.09)
    assert way.mouth == pytest.approx(-0.25)  # the front face, not the panel standing out beside the opening
    assert way.back == pytest.approx(-0.42, abs=0.01)
    assert way.sides[0] == pytest.approx(-0.135, abs=0.01) and way.sides[1] == pytest.approx(0.07, abs=0.01)
    # a drawer's region (it moves with a joint) and a region on a table are filled from above
    p["sites"]["drawer"] = _region([0.0, 0.35, 1.016], [0.12, 0.084, 0.08], "mw", joints=["slide"])
    p["sites"]["table"] = _region([0.5, 0.0, 0.9], [0.05, 0.05, 0.01], "")
    assert enclosure.opening(p, "drawer") is None and enclosure.opening(p, "table") is None


def test_a_mugs_handle_is_found_and_pinched_across_its_thin_side_above_the_rim():
    from sim_eval.policies.scripted import enclosure

    # a ring of 16 wall boxes (radius 5 cm, 10 cm tall) and a handle loop sticking out 3.5 cm towards -y
    ring = []
    for a in np.linspace(0, 2 * np.pi, 16, endpoint=False):
        c = 0.045 * np.array([np.cos(a), np.sin(a)])
        ring.append(([c[0] - 0.01, c[1] - 0.01, 0.0], [c[0] + 0.01, c[1] + 0.01, 0.1]))
    loop = [([-0.008, -0.088, 0.03], [0.008, -0.079, 0.085]), ([-0.008, -0.088, 0.073], [0.008, -0.045, 0.086])]
    mug = _entity([0.0, 0.0, 0.05], [0.055, 0.07, 0.05], geoms=[*ring, *loop])
    h = enclosure.handle(mug)
    assert h is not None
    np.testing.assert_allclose(h.direction, [0.0, -1.0], atol=1e-6)
    assert h.reach == pytest.approx(0.088) and h.back == pytest.approx(0.055, abs=0.002)
    assert abs(abs(closing_axis(h.grasp.yaw)[0]) - 1.0) < 1e-6  # closes along x, across the 1.6 cm wide loop
    assert h.grasp.pos[1] < -0.05 and h.grasp.pos[2] >= 0.1 - world_palm() + 0.004
    # a plain cup without a handle has none
    assert enclosure.handle(_entity([0.0, 0.0, 0.05], [0.055, 0.055, 0.05], geoms=ring)) is None


def world_palm() -> float:
    from sim_eval.policies.scripted import world

    return world.PALM_ABOVE_SITE


def _cabinet_with_drawer(q: float) -> dict:
    """libero_goal task 3's cabinet, reduced: a fixed side wall whose front is at y = -0.16 and a top drawer (opening
    towards +y, by -q) whose region spans y -0.326..-0.174 when shut."""
    cab = _entity([0.02, -0.25, 1.0], [0.11, 0.09, 0.12], geoms=[([-0.1, -0.35, 0.91], [-0.09, -0.16, 1.12])])
    drawer = ([-0.088, -0.333 - q, 1.054], [0.131, -0.161 - q, 1.122])
    cab["geom_min"] = np.vstack([cab["geom_min"], drawer[0]])
    cab["geom_max"] = np.vstack([cab["geom_max"], drawer[1]])
    cab["joints"] = {
        "top": {
            "type": "slide",
            "qpos": q,
            "axis": np.array([0.0, -1.0, 0.0]),
            "range": np.array([-0.16, 0.01]),
            "anchor": np.zeros(3),
        }
    }
    cab["parts"] = {
        "top_drawer": {
            "joints": ["top"],
            "geom_min": np.array([drawer[0]], float),
            "geom_max": np.array([drawer[1]], float),
            "aabb": np.array(drawer, float),
        }
    }
    bowl = _entity([-0.09, 0.0, 0.925], [0.0535, 0.0535, 0.025])
    site = _region([0.021, -0.25 - q, 1.091], [0.102, 0.076, 0.03], "cab", joints=["top"])
    return {"objects": {"cab": cab, "bowl": bowl}, "sites": {"top_region": site}}


def test_a_drawer_is_opened_only_as_far_as_the_object_needs_and_the_object_aims_at_its_open_part():
    from sim_eval.policies.scripted import articulated, world

    shut = _cabinet_with_drawer(0.0)
    # Shut, the region ends 1.4 cm behind the cabinet's front: the 10.7 cm bowl needs 12.1 cm of travel.
    assert world.drawer_travel_to_fit(shut, "top_region", 0.107, margin=0.0) == pytest.approx(0.121)
    upto = articulated.fit_fraction(shut, "top_region", "bowl")
    assert upto == pytest.approx((0.01 + 0.121) / 0.17, abs=1e-3)  # fraction of the range from its closed end
    assert not articulated.is_open(shut, "top_region", upto)
    part_way = _cabinet_with_drawer(0.01 - upto * 0.17)
    assert articulated.is_open(part_way, "top_region", upto) and not articulated.is_open(part_way, "top_region")
    # Part way out, the bowl is aimed at the middle of what stands out of the cabinet, not at the region's middle
    # (under the cabinet's top, where its rim would meet the top's front edge).
    dest = world.destination(part_way, "in", "top_region", "bowl")
    assert dest.xy[1] == pytest.approx((-0.16 + (-0.174 + 0.121)) / 2)
    assert dest.xy[0] == pytest.approx(0.021)
    assert world.drawer_travel_to_fit(part_way, "top_region", 0.107, margin=0.0) == pytest.approx(0.0)
    # Anything that is not a drawer's region: no such rule.
    assert world.drawer_span(part_way, "nowhere") is None

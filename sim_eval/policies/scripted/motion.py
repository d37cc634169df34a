"""Low-level motion for the scripted expert: orientation math and a bounded, smooth Cartesian servo.

Actions are LIBERO's 7-D delta end-effector commands for robosuite's OSC_POSE controller: each step the controller's
goal becomes the current pose plus ``action[:3] * 0.05`` m and the world-frame rotation ``action[3:6] * 0.5`` rad
(``output_max`` of the controller config, checked in the tests), gripper last (-1 open, +1 closed). The servo turns a
pose error into such an action: proportional, with the translation's norm capped (a speed limit that keeps the
direction) and its change per step capped (no jerks when a waypoint switches).
"""

from __future__ import annotations

import numpy as np

POS_SCALE = 0.05  # metres of OSC goal offset per unit of action
ROT_SCALE = 0.5  # radians of OSC goal rotation per unit of action
OPEN, CLOSED = -1.0, 1.0
# Gripper frame with the fingers pointing straight down, at yaw 0; the fingers then close along world y.
R_HOME = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def rot_z(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotvec(mat: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, angle in [0, pi]) of a rotation matrix."""
    m = np.asarray(mat, dtype=np.float64)
    # Quaternion from the matrix (Shepperd's method keeps it well conditioned for angles near pi).
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-12))
        q = np.zeros(3)
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
        w = (m[k, j] - m[j, k]) / s
        x, y, z = q
    v = np.array([x, y, z])
    if w < 0:
        w, v = -w, -v
    norm = np.linalg.norm(v)
    if norm < 1e-12:
        return np.zeros(3)
    return v / norm * 2.0 * np.arctan2(norm, w)


def closing_axis(yaw: float) -> np.ndarray:
    """World direction along which the fingers close at gripper yaw ``yaw``."""
    return rot_z(yaw) @ np.array([0.0, 1.0, 0.0])


# The wrist joint sits at about 0.76 rad at yaw 0 and turns opposite to the yaw, within +-2.9 rad; yaws are picked
# as close as possible to the middle of what it can reach, so a quarter turn either way never hits the joint limit.
WRIST_CENTER_YAW = 0.6


def yaw_for_axis(axis: np.ndarray) -> float:
    """Gripper yaw whose closing axis is the horizontal direction ``axis``. The gripper is symmetric under a half
    turn; of the equivalent yaws this is the one nearest the middle of the wrist's range."""
    yaw = float(np.arctan2(-axis[0], axis[1]))
    candidates = [yaw + k * np.pi for k in (-2, -1, 0, 1, 2)]
    return min(candidates, key=lambda c: abs(c - WRIST_CENTER_YAW))


def gripper_down(yaw: float) -> np.ndarray:
    """Gripper orientation pointing straight down, turned by ``yaw`` about world z."""
    return rot_z(yaw) @ R_HOME


def gripper_facing(approach: np.ndarray, closing: np.ndarray) -> np.ndarray:
    """Gripper orientation whose fingers point along ``approach`` and close along ``closing`` (both unit, normal)."""
    z = approach / np.linalg.norm(approach)
    x = closing - (closing @ z) * z
    x /= np.linalg.norm(x)
    return np.column_stack([x, np.cross(z, x), z])


def tilted_down(yaw: float, up: np.ndarray) -> np.ndarray:
    """``gripper_down(yaw)`` tilted so its fingers point along ``-up`` (a tilted object's own down axis): the
    rotation taking world z onto ``up`` applied to the straight-down gripper."""
    z = np.array([0.0, 0.0, 1.0])
    u = np.asarray(up, float) / np.linalg.norm(up)
    axis = np.cross(z, u)
    s, c = np.linalg.norm(axis), float(z @ u)
    if s < 1e-9:
        return gripper_down(yaw)
    k = axis / s
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    tilt = np.eye(3) + s * kx + (1 - c) * kx @ kx
    return tilt @ gripper_down(yaw)


def rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle of the rotation taking orientation ``b`` to ``a``."""
    return float(np.arccos(np.clip((np.trace(a @ b.T) - 1.0) / 2.0, -1.0, 1.0)))


_DOWN_YAWS = np.linspace(WRIST_CENTER_YAW - 1.5, WRIST_CENTER_YAW + 1.5, 31)


def nearest_down(eef_mat: np.ndarray) -> float:
    """The yaw of the straight-down orientation (within the wrist's comfortable range) closest to ``eef_mat``, to
    come back from a sideways grasp with the least wrist travel."""
    return float(min(_DOWN_YAWS, key=lambda yaw: rotation_angle(gripper_down(yaw), eef_mat)))


def current_yaw(eef_mat: np.ndarray) -> float:
    """Yaw of the gripper relative to ``R_HOME`` (its rotation about world z)."""
    rel = eef_mat @ R_HOME.T
    return float(np.arctan2(rel[1, 0], rel[0, 0]))


class Servo:
    """Pose error -> bounded 7-D action, with per-step slew limits on the translation command."""

    def __init__(self, speed: float = 1.0, slew: float = 0.35, pos_gain: float = 1.0, rot_gain: float = 1.0):
        self.speed, self.slew, self.pos_gain, self.rot_gain = speed, slew, pos_gain, rot_gain
        self._last = np.zeros(3)

    def reset(self) -> None:
        self._last = np.zeros(3)

    def __call__(self, p, target_pos, target_rot: np.ndarray, grip: float, speed: float | None = None) -> np.ndarray:
        limit = self.speed if speed is None else min(speed, self.speed)
        cmd = (np.asarray(target_pos) - p["eef_pos"]) / POS_SCALE * self.pos_gain
        norm = np.linalg.norm(cmd)
        if norm > limit:
            cmd = cmd * (limit / norm)
        step = cmd - self._last
        step_norm = np.linalg.norm(step)
        if step_norm > self.slew:
            cmd = self._last + step * (self.slew / step_norm)
        self._last = cmd
        rot = rotvec(target_rot @ p["eef_mat"].T) / ROT_SCALE * self.rot_gain
        rot = np.clip(rot, -1.0, 1.0)
        return np.concatenate([cmd, rot, [grip]])

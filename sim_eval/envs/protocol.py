"""openpi's LIBERO conventions for what a policy is given: images upright (LIBERO's cameras are rotated 180 degrees),
resized as openpi's client does it (keep the aspect ratio, bilinear resize on uint8, pad centred with black to a
square; square renders, LIBERO's, just scale) and the 8-D state (eef position, eef axis-angle, gripper joints).
``LiberoEnv`` applies them."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_with_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to (size, size, 3): scale the longer side to ``size``, pad the other centred."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    ratio = max(width / size, height / size)
    new_w, new_h = int(width / ratio), int(height / ratio)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample=Image.BILINEAR))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Axis-angle (rotation vector) of a unit quaternion in (x, y, z, w) order, the convention of LIBERO's state."""
    quat = np.asarray(quat_xyzw, dtype=np.float64)
    w = float(np.clip(quat[3], -1.0, 1.0))
    sin_half = np.sqrt(1.0 - w * w)
    if np.isclose(sin_half, 0.0):
        return np.zeros(3)
    return quat[:3] * 2.0 * np.arccos(w) / sin_half


def libero_state(raw_obs: dict[str, np.ndarray]) -> np.ndarray:
    """The 8-D state: eef position, eef axis-angle, both gripper finger joint positions."""
    return np.concatenate(
        [raw_obs["robot0_eef_pos"], quat_to_axis_angle(raw_obs["robot0_eef_quat"]), raw_obs["robot0_gripper_qpos"]]
    ).astype(np.float32)


def upright(image: np.ndarray) -> np.ndarray:
    """Undo LIBERO's 180-degree camera rotation."""
    return np.ascontiguousarray(image[::-1, ::-1])

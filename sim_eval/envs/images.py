"""Image resizing as openpi's LIBERO client does it: keep the aspect ratio, bilinear resize on uint8, pad centred with
black to a square. Square renders (LIBERO's) just scale."""

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

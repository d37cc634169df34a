"""Side-by-side videos of a cliff episode: the ``full`` baseline on top, the cache mode below, frame by frame from the
same init state. Each input is an evaluator mp4 (both cameras side by side); the shorter one holds its last frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim_eval.records.video import VIDEO_CRF

LABEL_HEIGHT = 14


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with a dark bar above it naming the run, so a viewer knows which row is which mode."""
    bar = np.zeros((LABEL_HEIGHT, frame.shape[1], 3), dtype=np.uint8)
    try:
        from PIL import Image, ImageDraw

        image = Image.fromarray(bar)
        ImageDraw.Draw(image).text((4, 1), text, fill=(255, 255, 255))
        bar = np.asarray(image)
    except ImportError:  # without Pillow the rows stay unlabelled; the file name still names both runs
        pass
    return np.concatenate([bar, frame], axis=0)


def _fit(frame: np.ndarray, width: int) -> np.ndarray:
    """Pad (right, black) or crop ``frame`` to ``width`` so rows of different render sizes stack."""
    if frame.shape[1] == width:
        return frame
    if frame.shape[1] > width:
        return frame[:, :width]
    pad = np.zeros((frame.shape[0], width - frame.shape[1], 3), dtype=np.uint8)
    return np.concatenate([frame, pad], axis=1)


def side_by_side(top: Path, bottom: Path, out: Path, top_label: str, bottom_label: str, fps: int = 20) -> Path:
    """Write ``out`` (mp4) stacking ``top`` over ``bottom``; raises if either cannot be read."""
    import imageio.v2 as imageio

    rows = []
    for path in (top, bottom):
        with imageio.get_reader(path) as reader:
            rows.append([np.asarray(frame)[..., :3] for frame in reader])
        if not rows[-1]:
            raise ValueError(f"{path}: no frames")
    width = max(rows[0][0].shape[1], rows[1][0].shape[1])
    length = max(len(rows[0]), len(rows[1]))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(
        out, fps=fps, codec="libx264", macro_block_size=2, quality=None, output_params=["-crf", str(VIDEO_CRF)]
    )
    try:
        for i in range(length):
            a = _label(_fit(rows[0][min(i, len(rows[0]) - 1)], width), top_label)
            b = _label(_fit(rows[1][min(i, len(rows[1]) - 1)], width), bottom_label)
            frame = np.concatenate([a, b], axis=0)
            # libx264 wants even sizes
            frame = frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]
            writer.append_data(frame)
    finally:
        writer.close()
    return out

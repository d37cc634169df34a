"""Demonstration files: one ``.npz`` per successful episode, readable with numpy and Pillow alone (no simulator).

Layout of a demo file (``np.load(path)``):
    ``<view>_jpeg``     uint8 (total_bytes,): the episode's frames of camera ``view`` (agentview, wrist) as JPEG
                        images, concatenated; frame i is ``bytes[offsets[i]:offsets[i + 1]]``
    ``<view>_offsets``  int64 (F + 1,)
    ``frame_steps``     int64 (F,): the step each frame was observed at (every step, or every n-th with a stride)
    ``state``           float32 (T, 8): eef position, eef axis-angle, gripper qpos, observed before action t
    ``actions``         float32 (T, 7): the actions actually executed (delta EEF, gripper last)
    ``labels``          float32 (T, 7): what the expert commanded at step t: the training target. It differs from
                        ``actions`` where DART noise perturbed the executed action (``perturbed``)
    ``perturbed``       bool (T,)
    ``meta``            0-d str: JSON with instruction, suite, task_id, placement_seed, held_out (the distance to the
                        nearest evaluation init state), dart settings, success, steps, image_size, jpeg_quality,
                        policy, format

The frame of step t is the observation the policy saw before executing action t; the observation after the last
action is not stored (nothing acted on it). Images are the model's input pixels: the protocol's observation (upright,
resized-with-pad) taken to ``image_size`` by the engine's own pre-processing (``sim_eval.policies.pi05.processing``).
``manifest.json`` next to the files lists them with their episode keys and counts the failed episodes.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "sim_eval.demo/2"
MANIFEST = "manifest.json"
VIEWS = ("agentview", "wrist")


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=int(quality), optimize=True)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def demo_filename(suite: str, task_id: int, placement_seed: int) -> str:
    return f"{suite}_task{task_id:02d}_seed{placement_seed:06d}.npz"


@dataclass
class Demo:
    """One recorded episode. ``frames[view]`` are JPEG bytes; ``images(view)`` decodes them."""

    meta: dict[str, Any]
    state: np.ndarray
    actions: np.ndarray
    labels: np.ndarray
    perturbed: np.ndarray
    frames: dict[str, list[bytes]] = field(default_factory=dict)

    frame_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.actions)

    def images(self, view: str) -> np.ndarray:
        """Decoded frames of ``view``, uint8 (F, H, W, 3), frame i observed at step ``frame_steps[i]``."""
        return np.stack([decode_jpeg(b) for b in self.frames[view]])

    @property
    def instruction(self) -> str:
        return self.meta["instruction"]


class DemoWriter:
    """Accumulates one episode step by step (JPEG-encoding as it goes, so memory stays small) and saves it."""

    def __init__(self, image_size: int, jpeg_quality: int = 65):
        self.image_size, self.jpeg_quality = int(image_size), int(jpeg_quality)
        self.frames: dict[str, list[bytes]] = {view: [] for view in VIEWS}
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.perturbed: list[bool] = []
        self.frame_steps: list[int] = []

    def add(
        self, obs: dict[str, Any], action: np.ndarray, label: np.ndarray | None = None, perturbed: bool = False
    ) -> None:
        """One step: ``obs`` (images, where this step has a frame, already at ``image_size``), the executed
        ``action`` and the expert's ``label`` (None: the executed action was the expert's own)."""
        if "images" in obs:
            for view in VIEWS:
                image = obs["images"][view]
                if image.shape[:2] != (self.image_size, self.image_size):
                    raise ValueError(f"{view} image is {image.shape[:2]}, demo image_size is {self.image_size}")
                self.frames[view].append(encode_jpeg(image, self.jpeg_quality))
            self.frame_steps.append(len(self.actions))
        self.states.append(np.asarray(obs["state"], dtype=np.float32))
        self.actions.append(np.asarray(action, dtype=np.float32))
        self.labels.append(np.asarray(action if label is None else label, dtype=np.float32))
        self.perturbed.append(bool(perturbed))

    def save(self, path: str | Path, meta: dict[str, Any]) -> Path:
        """Write atomically (temp file, fsync, rename): a killed recorder never leaves a truncated demo."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "state": np.stack(self.states),
            "actions": np.stack(self.actions),
            "labels": np.stack(self.labels),
            "perturbed": np.asarray(self.perturbed, dtype=bool),
            "frame_steps": np.asarray(self.frame_steps, dtype=np.int64),
            "meta": np.array(
                json.dumps(
                    {
                        **meta,
                        "steps": len(self.actions),
                        "image_size": self.image_size,
                        "jpeg_quality": self.jpeg_quality,
                        "format": FORMAT,
                    }
                )
            ),
        }
        for view, frames in self.frames.items():
            arrays[f"{view}_jpeg"] = np.frombuffer(b"".join(frames), dtype=np.uint8)
            arrays[f"{view}_offsets"] = np.concatenate([[0], np.cumsum([len(f) for f in frames])]).astype(np.int64)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # JPEG is already compressed; zip deflate would only cost time
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path


def load_demo(path: str | Path) -> Demo:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} demo file (format={meta.get('format')!r})")
        frames = {}
        for view in VIEWS:
            blob, offsets = data[f"{view}_jpeg"].tobytes(), data[f"{view}_offsets"]
            frames[view] = [blob[offsets[t] : offsets[t + 1]] for t in range(len(offsets) - 1)]
        return Demo(
            meta=meta,
            state=data["state"].copy(),
            actions=data["actions"].copy(),
            labels=data["labels"].copy(),
            perturbed=data["perturbed"].copy(),
            frames=frames,
            frame_steps=data["frame_steps"].copy(),
        )


def load_manifest(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / MANIFEST).read_text())


def iter_demos(directory: str | Path):
    """Every demo the manifest of ``directory`` lists, in manifest order."""
    directory = Path(directory)
    for entry in load_manifest(directory)["demos"]:
        yield load_demo(directory / entry["file"])

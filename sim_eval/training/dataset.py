"""The training set: recorded demonstrations packed small enough to travel to a GPU machine with no network.

``export_dataset(demo_dirs, out)`` writes a directory of three kinds of file:
    ``<view>.mp4``   every kept frame of every demo of camera ``view``, in manifest order, H.264 (yuv444p: no chroma
                     subsampling at 128 px), one video per view; or, with ``codec="raw"``, ``<view>.npy``: the same
                     frames uncompressed, for a set trained on the machine that recorded it (no encoder needed there)
    ``arrays.npz``   per step: ``state`` (N, 8), ``labels`` (N, 7) (the expert's actions, the training target),
                     ``actions`` (N, 7) (executed), ``perturbed`` (N,), ``episode`` (N,); per frame: ``frame_step``
                     (F,) (index into the step arrays); per episode: ``task_id``, ``placement_seed``, ``step_start``,
                     ``frame_start`` (E + 1 offsets)
    ``meta.json``    suite, instructions by task, image size, stride, DART settings, the held-out check, the source
                     manifest's counts, the encoder settings and a sha256 of every file

``TrainingSet.load(path)`` reads it back (numpy; videos through imageio's ffmpeg or OpenCV, whichever is importable).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim_eval.demos.files import VIEWS, iter_demos, load_manifest

FORMAT = "sim_eval.training_set/1"
ARRAYS = "arrays.npz"
META = "meta.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def encode_video(frames: list[np.ndarray] | np.ndarray, path: Path, crf: int, fps: int = 20) -> None:
    """H.264 (libx264, yuv444p) of uint8 (H, W, 3) frames; every frame is kept (no frame-rate conversion)."""
    import imageio.v2 as imageio

    writer = imageio.get_writer(
        str(path),
        format="FFMPEG",
        fps=fps,
        codec="libx264",
        pixelformat="yuv444p",
        quality=None,
        macro_block_size=1,
        output_params=["-crf", str(int(crf)), "-preset", "slow"],
    )
    try:
        for frame in frames:
            writer.append_data(np.asarray(frame, dtype=np.uint8))
    finally:
        writer.close()


def decode_video(path: Path) -> np.ndarray:
    """All frames of a video, uint8 (F, H, W, 3) RGB."""
    try:
        import imageio_ffmpeg  # noqa: F401  (the encoder's own binary, where installed)
    except ImportError:
        import cv2  # GPU machines without imageio-ffmpeg have OpenCV's FFmpeg

        cap = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame[:, :, ::-1])
        cap.release()
        return np.stack(frames)
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        return np.stack([np.asarray(f) for f in reader])
    finally:
        reader.close()


CODECS = ("h264", "raw")


def frames_file(view: str, codec: str) -> str:
    return f"{view}.npy" if codec == "raw" else f"{view}.mp4"


def export_dataset(
    demo_dirs: str | Path | list, out: str | Path, crf: int = 20, per_task: int | None = None, codec: str = "h264"
) -> dict[str, Any]:
    """Pack the demos of ``demo_dirs`` (each directory's manifest, in order; with ``per_task``, the first that many
    of each task) into ``out``; returns the meta dict. The directories must share suite, image size and stride."""
    if codec not in CODECS:
        raise ValueError(f"codec {codec!r}: allowed are {', '.join(CODECS)}")
    dirs = [Path(d) for d in (demo_dirs if isinstance(demo_dirs, list | tuple) else [demo_dirs])]
    out = Path(out)
    manifests = [load_manifest(d) for d in dirs]
    keys = ("suite", "image_size", "frame_stride", "held_out_tolerance_m")
    for d, m in zip(dirs[1:], manifests[1:], strict=True):
        differs = [k for k in keys if m.get(k) != manifests[0].get(k)]
        if differs:
            raise ValueError(f"{d}: {', '.join(differs)} differ from {dirs[0]}'s; export them apart")
    manifest = manifests[0]
    taken: dict[int, int] = {}
    out.mkdir(parents=True, exist_ok=True)
    frames: dict[str, list[np.ndarray]] = {view: [] for view in VIEWS}
    steps: dict[str, list[np.ndarray]] = {k: [] for k in ("state", "labels", "actions", "perturbed", "episode")}
    frame_step: list[np.ndarray] = []
    episodes: dict[str, list[int]] = {"task_id": [], "placement_seed": [], "step_start": [0], "frame_start": [0]}
    instructions: dict[int, str] = {}
    held_out: list[float] = []
    every = (demo for d in dirs for demo in iter_demos(d))
    demos = (d for d in every if per_task is None or taken.setdefault(d.meta["task_id"], 0) < per_task)
    for e, demo in enumerate(demos):
        meta = demo.meta
        taken[meta["task_id"]] = taken.get(meta["task_id"], 0) + 1
        n = len(demo)
        for view in VIEWS:
            frames[view].extend(demo.images(view))
        steps["state"].append(demo.state)
        steps["labels"].append(demo.labels)
        steps["actions"].append(demo.actions)
        steps["perturbed"].append(demo.perturbed)
        steps["episode"].append(np.full(n, e, np.int32))
        frame_step.append(demo.frame_steps + episodes["step_start"][-1])
        episodes["task_id"].append(int(meta["task_id"]))
        episodes["placement_seed"].append(int(meta["placement_seed"]))
        episodes["step_start"].append(episodes["step_start"][-1] + n)
        episodes["frame_start"].append(episodes["frame_start"][-1] + len(demo.frame_steps))
        instructions[int(meta["task_id"])] = meta["instruction"]
        held_out.append(float(meta["held_out"]["distance_m"]))
    if not held_out:
        raise ValueError(f"{', '.join(map(str, dirs))}: the manifests list no demos")
    arrays = {k: np.concatenate(v) for k, v in steps.items()}
    arrays["frame_step"] = np.concatenate(frame_step).astype(np.int64)
    arrays.update({k: np.asarray(v, dtype=np.int64) for k, v in episodes.items()})
    np.savez_compressed(out / ARRAYS, **arrays)
    for view in VIEWS:
        if codec == "raw":
            np.save(out / frames_file(view, codec), np.stack(frames[view]).astype(np.uint8))
        else:
            encode_video(frames[view], out / frames_file(view, codec), crf)
    files = [ARRAYS] + [frames_file(view, codec) for view in VIEWS]
    meta = {
        "format": FORMAT,
        "suite": manifest["suite"],
        "instructions": {str(k): v for k, v in sorted(instructions.items())},
        "views": list(VIEWS),
        "image_size": manifest["image_size"],
        "frame_stride": manifest.get("frame_stride", 1),
        "simulator": manifest.get("simulator"),
        "dart": {
            "prob": manifest["dart"]["prob"],
            "sigma": manifest["dart"]["sigma"],
            "perturbed_steps": int(arrays["perturbed"].sum()),
            "steps": int(len(arrays["perturbed"])),
        },
        "held_out": {
            "tolerance_m": manifest["held_out_tolerance_m"],
            "min_distance_m": round(min(held_out), 5),
            "median_distance_m": round(float(np.median(held_out)), 5),
        },
        "source": {
            "dirs": [str(d) for d in dirs],
            "policy": manifest["policy"],
            **{k: sum(m[k] for m in manifests) for k in ("episodes_run", "successes", "failures")},
            "rejected": sum(len(m.get("rejected", [])) for m in manifests),
        },
        "episodes": len(held_out),
        "steps": int(len(arrays["labels"])),
        "frames": int(len(arrays["frame_step"])),
        "video": {"codec": "raw"} if codec == "raw" else {"codec": "libx264", "pixel_format": "yuv444p", "crf": crf},
        "sha256": {name: _sha256(out / name) for name in files},
    }
    (out / META).write_text(json.dumps(meta, indent=1))
    return meta


@dataclass
class TrainingSet:
    """A loaded training set: ``images[view]`` uint8 (F, H, W, 3) and the arrays of ``arrays.npz``."""

    meta: dict[str, Any]
    images: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, path: str | Path, check: bool = True) -> TrainingSet:
        path = Path(path)
        meta_file = path / META
        if not meta_file.is_file():
            raise ValueError(f"{path} is not a training set (no {META}; make one with python -m sim_eval.export)")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_file}: format {meta.get('format')!r}, expected {FORMAT!r}")
        if check:
            for name, digest in meta["sha256"].items():
                if _sha256(path / name) != digest:
                    raise ValueError(f"{path / name}: sha256 differs from {META} (a partial or changed copy)")
        with np.load(path / ARRAYS) as data:
            arrays = {k: data[k] for k in data.files}
        raw = meta.get("video", {}).get("codec") == "raw"
        images = {
            view: np.load(path / frames_file(view, "raw")) if raw else decode_video(path / frames_file(view, "h264"))
            for view in meta["views"]
        }
        for view, frames in images.items():
            if len(frames) != meta["frames"]:
                raise ValueError(f"{path}: {len(frames)} frames of {view} decoded, {meta['frames']} expected")
        return cls(meta, images, arrays)

    def action_chunks(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """For every frame: its next ``chunk`` labels (F, chunk, 7) and a validity mask (F, chunk) (steps past the
        episode's end repeat its last label and are masked out of the loss)."""
        labels, episode = self.arrays["labels"], self.arrays["episode"]
        end = self.arrays["step_start"][1:][episode[self.arrays["frame_step"]]]  # exclusive end of each frame's ep
        idx = self.arrays["frame_step"][:, None] + np.arange(chunk)[None]
        valid = idx < end[:, None]
        idx = np.minimum(idx, end[:, None] - 1)
        return labels[idx], valid

    def frame_tasks(self) -> np.ndarray:
        """Task id of every frame."""
        return self.arrays["task_id"][self.arrays["episode"][self.arrays["frame_step"]]]

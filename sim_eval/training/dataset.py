"""The training set: recorded demonstrations packed small enough to travel to a GPU machine with no network.

``export_dataset(demo_dirs, out)`` writes a directory of three kinds of file:
    ``<view>.mp4``   every kept frame of every demo of camera ``view``, in manifest order, H.264 (yuv444p: no chroma
                     subsampling at 128 px), one video per view; or, with ``codec="raw"``, ``<view>.npy``: the same
                     frames uncompressed, for a set trained on the machine that recorded it (no encoder needed there)
    ``arrays.npz``   per step: ``state`` (N, 8), ``labels`` (N, 7) (the expert's actions, the training target),
                     ``actions`` (N, 7) (executed), ``perturbed`` (N,), ``episode`` (N,); per frame: ``frame_step``
                     (F,) (index into the step arrays); per episode: ``task_id``, ``prompt_id`` (row of ``prompts``),
                     ``placement_seed``, ``step_start``, ``frame_start`` (E + 1 offsets)
    ``meta.json``    suite(s), the instruction of every (suite, task) (``prompts``), image size, stride, DART settings,
                     the held-out check, per-suite counts, the simulator of every source, the encoder settings and
                     a sha256 of every file

One set may hold several suites (one model for all of them): each demo directory's manifest names its suite, and
the instruction text is what tells the tasks apart to the model, so episodes are keyed by (suite, task) and each
(suite, task) is one ``prompts`` row. The directories must share the simulator, image size, stride and held-out
tolerance: a set mixing simulators would train a model of no one world.

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


# What every source directory of one set must share: frames of one size and stride, one held-out rule, one world.
SHARED = ("image_size", "frame_stride", "held_out_tolerance_m", "simulator")


def check_sources(dirs: list[Path], manifests: list[dict[str, Any]]) -> None:
    """Raise ValueError (one line) when the directories cannot make one set: a directory given twice, or one that
    differs from the first in a ``SHARED`` setting."""
    seen: set[Path] = set()
    for d in dirs:
        if d.resolve() in seen:
            raise ValueError(f"{d}: given twice (its demos would count twice)")
        seen.add(d.resolve())
    for d, m in zip(dirs[1:], manifests[1:], strict=True):
        differs = [k for k in SHARED if m.get(k) != manifests[0].get(k)]
        if differs:
            shown = "; ".join(f"{k} {m.get(k)!r} vs {manifests[0].get(k)!r}" for k in differs[:2])
            raise ValueError(f"{d}: {', '.join(differs)} differ from {dirs[0]}'s ({shown}); export them apart")


def _held_out(distances: list[float], tolerance: float) -> dict[str, float]:
    return {"tolerance_m": tolerance, "min_distance_m": round(min(distances), 5),
            "median_distance_m": round(float(np.median(distances)), 5)}  # fmt: skip


def export_dataset(
    demo_dirs: str | Path | list, out: str | Path, crf: int = 20, per_task: int | None = None, codec: str = "h264"
) -> dict[str, Any]:
    """Pack the demos of ``demo_dirs`` (each directory's manifest, in order; with ``per_task``, the first that many
    of each (suite, task)) into ``out``; returns the meta dict. The directories may come from several suites; they
    must share ``SHARED`` (ValueError otherwise)."""
    if codec not in CODECS:
        raise ValueError(f"codec {codec!r}: allowed are {', '.join(CODECS)}")
    dirs = [Path(d) for d in (demo_dirs if isinstance(demo_dirs, list | tuple) else [demo_dirs])]
    out = Path(out)
    manifests = [load_manifest(d) for d in dirs]
    check_sources(dirs, manifests)
    manifest = manifests[0]
    suites = list(dict.fromkeys(m["suite"] for m in manifests))  # first-appearance order: the prompt rows' order
    taken: dict[tuple[str, int], int] = {}
    frames: dict[str, list[np.ndarray]] = {view: [] for view in VIEWS}
    steps: dict[str, list[np.ndarray]] = {k: [] for k in ("state", "labels", "actions", "perturbed", "episode")}
    frame_step: list[np.ndarray] = []
    episodes: dict[str, list[int]] = {"task_id": [], "placement_seed": [], "step_start": [0], "frame_start": [0]}
    ep_suite: list[str] = []
    instructions: dict[tuple[str, int], str] = {}
    held_out: list[float] = []
    keys: set[tuple[str, int, int]] = set()
    every = ((d, demo) for d in dirs for demo in iter_demos(d))
    for d, demo in every:
        meta = demo.meta
        task, suite = int(meta["task_id"]), meta["suite"]
        key = (suite, task, int(meta["placement_seed"]))
        if key in keys:  # a placement recorded twice (an overlapping top-up): one start layout must not weigh double
            raise ValueError(f"{d}: {suite} task {task} placement seed {key[2]} is already in an earlier directory")
        keys.add(key)
        if per_task is not None and taken.get((suite, task), 0) >= per_task:
            continue
        taken[(suite, task)] = taken.get((suite, task), 0) + 1
        n, e = len(demo), len(held_out)
        for view in VIEWS:
            frames[view].extend(demo.images(view))
        steps["state"].append(demo.state)
        steps["labels"].append(demo.labels)
        steps["actions"].append(demo.actions)
        steps["perturbed"].append(demo.perturbed)
        steps["episode"].append(np.full(n, e, np.int32))
        frame_step.append(demo.frame_steps + episodes["step_start"][-1])
        episodes["task_id"].append(task)
        episodes["placement_seed"].append(key[2])
        episodes["step_start"].append(episodes["step_start"][-1] + n)
        episodes["frame_start"].append(episodes["frame_start"][-1] + len(demo.frame_steps))
        ep_suite.append(suite)
        instructions[(suite, task)] = meta["instruction"]
        held_out.append(float(meta["held_out"]["distance_m"]))
    if not held_out:
        raise ValueError(f"{', '.join(map(str, dirs))}: the manifests list no demos")
    prompts = sorted(instructions, key=lambda st: (suites.index(st[0]), st[1]))
    row = {st: i for i, st in enumerate(prompts)}
    out.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.concatenate(v) for k, v in steps.items()}
    arrays["frame_step"] = np.concatenate(frame_step).astype(np.int64)
    arrays.update({k: np.asarray(v, dtype=np.int64) for k, v in episodes.items()})
    arrays["prompt_id"] = np.asarray([row[(s, t)] for s, t in zip(ep_suite, episodes["task_id"], strict=True)])
    np.savez_compressed(out / ARRAYS, **arrays)
    for view in VIEWS:
        if codec == "raw":
            np.save(out / frames_file(view, codec), np.stack(frames[view]).astype(np.uint8))
        else:
            encode_video(frames[view], out / frames_file(view, codec), crf)
    files = [ARRAYS] + [frames_file(view, codec) for view in VIEWS]
    ep_steps = np.diff(arrays["step_start"])
    ep_frames = np.diff(arrays["frame_start"])
    per_suite, tolerance = {}, manifest["held_out_tolerance_m"]
    for suite in suites:
        mine = np.asarray([s == suite for s in ep_suite])
        srcs = [m for m in manifests if m["suite"] == suite]
        per_suite[suite] = {
            "instructions": {str(t): instructions[(s, t)] for s, t in prompts if s == suite},
            "episodes": int(mine.sum()),
            "demos_by_task": {str(t): n for (s, t), n in sorted(taken.items()) if s == suite},
            "steps": int(ep_steps[mine].sum()),
            "frames": int(ep_frames[mine].sum()),
            "held_out": _held_out([h for h, m in zip(held_out, mine, strict=True) if m], tolerance),
            "source": {k: sum(m[k] for m in srcs) for k in ("episodes_run", "successes", "failures")},
        }
    meta = {
        "format": FORMAT,
        # one suite: its name, as always; several: "a,b,c" (the sweep syntax of python -m sim_eval -m suite=a,b,c)
        "suite": ",".join(suites),
        "suites": per_suite,
        "prompts": [[s, t, instructions[(s, t)]] for s, t in prompts],  # row i = prompt_id i
        "views": list(VIEWS),
        "image_size": manifest["image_size"],
        "frame_stride": manifest.get("frame_stride", 1),
        "simulator": manifest.get("simulator"),  # the one simulator of every source (check_sources)
        "dart": {
            "prob": manifest["dart"]["prob"],
            "sigma": manifest["dart"]["sigma"],
            "perturbed_steps": int(arrays["perturbed"].sum()),
            "steps": int(len(arrays["perturbed"])),
        },
        "held_out": _held_out(held_out, tolerance),
        "source": {
            "dirs": [str(d) for d in dirs],
            "suites": [m["suite"] for m in manifests],
            "simulators": [m.get("simulator") for m in manifests],
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
    if len(suites) == 1:  # a one-suite set keeps its task-keyed instructions, as sets have always had
        meta["instructions"] = per_suite[suites[0]]["instructions"]
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
        """Task id of every frame (within its suite: several suites share ids; ``frame_prompts`` tells them apart)."""
        return self.arrays["task_id"][self.arrays["episode"][self.arrays["frame_step"]]]

    def prompts(self) -> dict[int, str]:
        """The instruction of every prompt row. A set written before sets could hold several suites has no
        ``prompts``: its rows are its task ids."""
        if "prompts" in self.meta:
            return {i: text for i, (_, _, text) in enumerate(self.meta["prompts"])}
        return {int(k): v for k, v in self.meta["instructions"].items()}

    def frame_prompts(self) -> np.ndarray:
        """Prompt row (``prompts``) of every frame."""
        per_episode = self.arrays.get("prompt_id", self.arrays["task_id"])
        return per_episode[self.arrays["episode"][self.arrays["frame_step"]]]

    def suites(self) -> list[str]:
        return list(self.meta.get("suites") or [self.meta["suite"]])

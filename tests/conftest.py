"""Shared test set-up: headless rendering, config composition through Hydra's compose API, fixture paths."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

# Triton's native library is loaded before anything imports robosuite: under MuJoCo 3.2.3 (the pin) `import
# robosuite; import triton` ends the process with SIGSEGV while the reverse order works (measured here, triton 3.9,
# numba 0.68), and this one pytest process runs both the simulator tests and the kernels' tests. Those run under
# Triton's interpreter (no GPU in CI), whose mode triton fixes at import, so it is switched on first
# (TRITON_INTERPRET=0 in the environment keeps compiled kernels; test_triton_expert then skips itself).
os.environ.setdefault("TRITON_INTERPRET", "1")
try:
    import triton  # noqa: F401
except ImportError:  # dev extras without triton (not x86-64 Linux): its tests skip themselves
    pass

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "sim_eval" / "conf"
FIXTURES = REPO / "tests" / "fixtures" / "pi05"


def tiny_engine(layout: str = "lerobot", **kwargs):
    """The fixtures' tiny Pi0.5 (``lerobot`` or ``openpi`` layout) as a CPU ``Pi05Engine``; ``kwargs`` go to
    ``load_engine``."""
    from sim_eval.policies.pi05.engine import load_engine

    ckpt = FIXTURES / ("tiny_lerobot" if layout == "lerobot" else "tiny_openpi_layout")
    args = {"model_sizes": str(FIXTURES / "tiny_config.json"), "tokenizer": str(FIXTURES / "tokenizer")}
    return load_engine(str(ckpt), **{**args, "device": "cpu", **kwargs})


def writable_copy(src: Path, dst: Path) -> Path:
    """Copy the tree ``src`` to ``dst`` for a test to edit. ``shutil.copytree`` keeps the source's mode bits, and in
    the container smoke test the fixtures are another user's read-only files, so the copy would be read-only too:
    files are copied without their modes and every copied directory is made writable by its owner."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for d in [dst, *(p for p in dst.rglob("*") if p.is_dir())]:
        d.chmod(d.stat().st_mode | stat.S_IRWXU)
    return dst


def sigint_default() -> None:
    """``preexec_fn`` for subprocesses that a test interrupts with SIGINT: a shell that starts the test run in the
    background (``cmd &``, nohup, some CI runners) leaves SIGINT ignored, children inherit that, and Python then never
    raises KeyboardInterrupt. Restoring the default before exec makes the child's Python install its handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def compose(overrides: list[str]):
    """The config ``python -m sim_eval <overrides>`` would run with (minus Hydra's own runtime keys)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from sim_eval.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def overrides(*parts: str) -> list[str]:
    """A base command line with some of its keys changed: a later ``key=value`` replaces the earlier one in place
    (``python -m sim_eval`` refuses a key given twice)."""
    out: dict[str, str] = {}
    for part in parts:
        out.pop(part.split("=", 1)[0] if "=" in part else part, None)
        out[part.split("=", 1)[0] if "=" in part else part] = part
    return list(out.values())


def run_cli(args: list[str], cwd: Path, timeout: float = 600, module: str = "sim_eval"):
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


SIM_323 = {"sim.mujoco": "3.2.3", "sim.robosuite": "1.4.0", "sim.libero": "0.1.1", "sim.texture_colorspace": "linear"}


def synthetic_demo_dir(
    path: Path, tasks: list[int], steps: int = 7, stride: int = 2, image_size: int = 32, suite: str = "libero_object",
    instruction: str | dict[int, str] = "task {task} words", label_scale: float = 1.0, simulator: dict | None = None,
) -> Path:  # fmt: skip
    """A recorder-shaped directory of small synthetic demos of ``suite`` (gradient frames, so the video codec has
    real content; ``instruction``: a template or the text by task); labels are ``label_scale * (0.1 t + 0.01)``,
    executed actions ``0.1 t``, step 3 perturbed."""
    import json

    import numpy as np

    from sim_eval.demos.files import MANIFEST, DemoWriter, demo_filename

    path.mkdir(parents=True)
    demos = []
    for i, task in enumerate(tasks):
        writer = DemoWriter(image_size, 90)
        for t in range(steps):
            obs = {"state": np.full(8, t, np.float32)}
            if t % stride == 0:
                y, x = np.mgrid[0:image_size, 0:image_size]
                frame = np.stack([(x * 8 + t * 10) % 256, y * 8 % 256, np.full_like(x, 40 * task)], -1).astype(np.uint8)
                obs["images"] = {"agentview": frame, "wrist": frame[::-1].copy()}
            label = np.full(7, label_scale * (0.1 * t + 0.01), np.float32)
            writer.add(obs, np.full(7, 0.1 * t, np.float32), label, t == 3)
        name = demo_filename(suite, task, 100 + i)
        text = instruction.format(task=task) if isinstance(instruction, str) else instruction[task]
        meta = {"instruction": text, "suite": suite, "task_id": task,
                "placement_seed": 100 + i, "held_out": {"distance_m": 0.004 + i / 1000}, "success": True}  # fmt: skip
        writer.save(path / name, meta)
        demos.append({"file": name, "task_id": task, "placement_seed": 100 + i, "steps": steps})
    manifest = {"suite": suite, "policy": "scripted", "image_size": image_size, "frame_stride": stride,
                "held_out_tolerance_m": 0.001, "dart": {"prob": 0.3, "sigma": 0.3}, "episodes_run": len(tasks),
                "successes": len(tasks), "failures": 0, "rejected": [], "demos": demos,
                "simulator": dict(simulator or SIM_323)}  # fmt: skip
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


# A short, cheap episode setup for simulator tests: low-res renders and few control steps keep CI fast on 2 cores.
FAST_SIM = ["protocol.render_size=64", "protocol.model_image_size=64", "eval.max_steps=8", "protocol.num_wait_steps=2"]


@pytest.fixture
def fast_sim_overrides():
    return list(FAST_SIM)

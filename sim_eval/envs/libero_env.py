"""LIBERO as a ``gymnasium.Env`` that applies the evaluation protocol.

``reset`` seeds the simulator, loads init state i and runs the protocol's wait steps, so every episode starts exactly
where the protocol says, whatever ran before it in the same process. Observations are what a policy sees under the
protocol: both cameras upright (LIBERO renders them rotated by 180 degrees), resized-with-pad to the model image size,
the 8-D state and the language instruction. ``terminated`` is LIBERO's own success check; ``truncated`` the step limit.
"""

from __future__ import annotations

import logging
import os
import string
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from sim_eval.envs.benchmarks import task_instruction
from sim_eval.envs.interrupts import interrupts_deferred
from sim_eval.envs.protocol import libero_state, resize_with_pad, upright
from sim_eval.envs.simulator import colorspace_processor
from sim_eval.policies.base import ACTION_DIM, STATE_DIM, VIEWS

# LIBERO camera names behind our view names.
CAMERAS = {"agentview": "agentview_image", "wrist": "robot0_eye_in_hand_image"}
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + string.punctuation + " "
# Placement attempts before a reset gives up (robosuite raises RandomizationError when objects do not fit; LIBERO
# retries that forever).
RESET_ATTEMPTS = 100


def reset_simulator(control_env) -> dict[str, np.ndarray]:
    """``ControlEnv.reset`` without its flaw: LIBERO retries in a loop whose ``finally: continue`` swallows every
    exception, Ctrl-C included (three SIGINTs ignored, the run went on), and turns any real error into an endless
    loop. Here only a failed placement is retried, a bounded number of times; everything else propagates."""
    from robosuite.utils.errors import RandomizationError

    for _ in range(RESET_ATTEMPTS):
        try:
            return control_env.env.reset()
        except RandomizationError:
            continue
    raise RuntimeError(f"reset: no object placement found in {RESET_ATTEMPTS} attempts (robosuite RandomizationError)")


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


_ROBOSUITE_MACROS = _DropMessages("No private macro file", "It is recommended to use a private macro", "To setup, run")


def quiet_dependencies() -> None:
    """Silence what LIBERO's stack prints that tells a sim_eval user nothing: robosuite's three "private macro
    file" warnings (printed twice: its own handler and Hydra's root one), PyOpenGL's INFO that its optional
    accelerator is absent. The logger exists before robosuite configures it, and keeps the filter. Idempotent."""
    robosuite_log = logging.getLogger("robosuite_logs")
    if _ROBOSUITE_MACROS not in robosuite_log.filters:
        robosuite_log.addFilter(_ROBOSUITE_MACROS)
    logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)


def unpinned_egl_default() -> None:
    """Before a simulator exists in a process whose rendering is not pinned: robosuite picks its EGL device from
    ``MUJOCO_EGL_DEVICE_ID``, else from ``CUDA_VISIBLE_DEVICES`` parsed as a list of integers. submitit's local and
    SLURM executors set ``CUDA_VISIBLE_DEVICES=""`` for a job without GPUs (SLURM may also set GPU UUIDs), which
    robosuite fails on (``int('')``) for every episode. Naming EGL device 0 is what robosuite does when neither is
    set; the torch side keeps seeing the GPUs (none) the launcher gave it."""
    if os.environ.get("MUJOCO_GL", "egl") != "egl" or os.environ.get("MUJOCO_EGL_DEVICE_ID") is not None:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not all(part.strip().isdigit() for part in visible.split(",")):
        os.environ["MUJOCO_EGL_DEVICE_ID"] = "0"


def task_info(suite: str, task_id: int) -> tuple[Any, Path, np.ndarray]:
    """LIBERO's task object, its BDDL file and its init states."""
    quiet_dependencies()
    from libero.libero import get_libero_path

    from sim_eval.envs.benchmarks import quiet_suite

    task_suite = quiet_suite(suite)
    task = task_suite.get_task(task_id)
    bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
    return task, bddl, task_suite.get_task_init_states(task_id)


class LiberoEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        suite: str,
        task_id: int,
        max_steps: int,
        env_seed: int = 7,
        num_wait_steps: int = 10,
        wait_action: list[float] | None = None,
        render_size: int = 256,
        model_image_size: int = 224,
        cameras: bool = True,
        privileged: bool = False,
        render_mode: str | None = None,
        texture_colorspace: str = "linear",
    ):
        os.environ.setdefault("MUJOCO_GL", "egl")
        quiet_dependencies()
        unpinned_egl_default()  # a launcher's CUDA_VISIBLE_DEVICES="" would otherwise break robosuite's EGL set-up
        from libero.libero.envs.env_wrapper import ControlEnv

        self.suite, self.task_id = suite, int(task_id)
        self.max_steps, self.env_seed = int(max_steps), int(env_seed)
        self.num_wait_steps = int(num_wait_steps)
        self.wait_action = np.asarray(wait_action if wait_action is not None else [0.0] * 6 + [-1.0], np.float64)
        self.cameras, self.privileged, self.render_mode = cameras, privileged, render_mode
        self.render_size = int(render_size)
        self.image_size = int(model_image_size) or self.render_size
        task, bddl, self.init_states = task_info(suite, task_id)
        # openpi's instruction (the task name) on base suites; a perturbed suite's own words where it changes them
        self.language = task_instruction(suite, task)
        self._env = ControlEnv(
            bddl_file_name=str(bddl),
            use_camera_obs=cameras,
            has_renderer=False,
            has_offscreen_renderer=cameras,
            camera_heights=self.render_size,
            camera_widths=self.render_size,
        )
        # Every reset is a hard reset (LIBERO's default) that reloads the model through this hook, so the textures of
        # every episode are sampled in the chosen colour space (sim_eval.envs.simulator).
        self.texture_colorspace = texture_colorspace
        processor = colorspace_processor(texture_colorspace)
        if processor is not None:
            self._env.env.set_xml_processor(processor)
        spaces = {
            # Positions in metres, rotation vector within pi, finger joints in centimetres: 10 bounds them all.
            "state": gym.spaces.Box(-10.0, 10.0, (STATE_DIM,), np.float32),
            "instruction": gym.spaces.Text(max_length=512, min_length=1, charset=INSTRUCTION_CHARSET),
        }
        if cameras:
            image = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
            spaces["images"] = gym.spaces.Dict({view: image for view in VIEWS})
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._raw: dict[str, np.ndarray] = {}
        self._rendering = cameras
        self._steps = 0
        # seconds spent in this episode's control steps (since reset): camera renders, the rest of robosuite's step
        # (physics, controller), and turning raw observations into the protocol's (where rollout time goes)
        self.timing = {"physics_s": 0.0, "render_s": 0.0, "observe_s": 0.0}
        self.init_state_index: int | None = None
        self.placement_seed: int | None = None
        self.start_state: np.ndarray | None = None
        self.held_out = None  # HeldOutCheck of the last placement reset that asked for one

    @property
    def n_init_states(self) -> int:
        return len(self.init_states)

    @property
    def sim(self):
        """The underlying robosuite environment (privileged access for scripted experts and checks)."""
        return self._env.env

    def _observe(self, raw: dict[str, np.ndarray]) -> dict[str, Any]:
        self._raw = raw
        obs: dict[str, Any] = {"state": libero_state(raw), "instruction": self.language}
        if self.cameras and self._rendering:
            obs["images"] = {
                view: resize_with_pad(upright(raw[camera]), self.image_size) for view, camera in CAMERAS.items()
            }
        if self.privileged:
            # Simulator ground truth for scripted experts; not part of observation_space, which learned policies see.
            from sim_eval.envs.privileged import privileged_observation

            obs["privileged"] = privileged_observation(self.sim)
        return obs

    def gl_renderer(self) -> str | None:
        """The OpenGL implementation that renders this env's cameras ("vendor / renderer / version"), None without
        cameras. Records carry it because it changes the pixels: Mesa's llvmpipe and NVIDIA's EGL light the same
        LIBERO scene differently (docs/benchmarks.md, GPU node), so a policy trained on one may fail on the other."""
        if not self.cameras:
            return None
        from OpenGL import GL

        self._env.env.sim._render_context_offscreen.gl_ctx.make_current()
        parts = [GL.glGetString(name) for name in (GL.GL_VENDOR, GL.GL_RENDERER, GL.GL_VERSION)]
        return " / ".join(p.decode() for p in parts if p is not None) or None

    def set_rendering(self, enabled: bool) -> None:
        """Render the cameras on the following steps or not (a recorder that keeps every n-th frame skips the rest,
        the costliest part of a step on a CPU). Off, observations carry no ``images``. Only the render is skipped:
        robosuite still samples its camera observables on their own schedule, so a frame rendered after
        re-enabling is pixel for pixel the one an always-on env gives."""
        if not self.cameras:
            raise ValueError("set_rendering: this env was built without cameras")
        self._rendering = bool(enabled)

    @contextmanager
    def _rendering_if(self, wanted: bool):
        """Inside, render the cameras only if ``wanted`` and rendering is on; afterwards as before."""
        on = self._rendering
        self._rendering = on and wanted
        try:
            yield
        finally:
            self._rendering = on

    def _gate_camera_sensors(self) -> None:
        """Wrap each camera observable's sensor so that it renders only while ``_rendering`` (robosuite rebuilds the
        sensors at every hard reset, so this runs after each one)."""
        env = self._env.env
        for camera in CAMERAS.values():
            real = env._observables[camera]._sensor
            blank = np.zeros((1, 1, 3), np.uint8)

            def sensor(cache, real=real, blank=blank):
                if not self._rendering:
                    return blank
                started = time.perf_counter()
                frame = real(cache)
                self.timing["render_s"] += time.perf_counter() - started
                return frame

            sensor.__modality__ = getattr(real, "__modality__", "image")
            env._observables[camera]._sensor = sensor

    def frames(self) -> dict[str, np.ndarray]:
        """The last renders of both cameras, upright, at render size (what videos show)."""
        return {view: upright(self._raw[camera]) for view, camera in CAMERAS.items()} if self.cameras else {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode from LIBERO's fixed init state ``options["init_state_index"]`` (what the evaluator
        scores on) or, with ``options["placement_seed"]``, from a fresh layout that LIBERO's own placement sampler
        draws under that seed (what demonstrations start from, so they never share the evaluation's layouts)."""
        super().reset(seed=seed)
        options = options or {}  # init_state_index | placement_seed (+ held_out_tolerance, metres)
        placement = options.get("placement_seed")
        index = options.get("init_state_index")
        if placement is not None and index is not None:
            raise ValueError("reset: give init_state_index or placement_seed, not both")
        if placement is None and index is None:
            index = int(self.np_random.integers(self.n_init_states))
        if index is not None and not 0 <= int(index) < self.n_init_states:
            raise ValueError(f"init_state_index={index}: allowed are 0..{self.n_init_states - 1}")
        self.init_state_index = None if index is None else int(index)
        self.placement_seed = None if placement is None else int(placement)
        # Seeding before every reset makes an episode independent of what the process ran before (resume, shards).
        self._env.seed(self.placement_seed if placement is not None else self.env_seed if seed is None else seed)
        raw = reset_simulator(self._env)
        if self.cameras:
            self._gate_camera_sensors()
        # Only the last of these observations is returned, so only it is rendered (pixels depend on the state alone).
        if self.init_state_index is not None:
            with self._rendering_if(self.num_wait_steps == 0):
                raw = self._env.set_init_state(self.init_states[self.init_state_index])
        # the layout the episode starts from, before the wait steps (init states are stored at that point too)
        self.start_state = np.asarray(self._env.get_sim_state(), dtype=np.float64).copy()
        self.held_out = None
        if self.placement_seed is not None and options.get("held_out_tolerance") is not None:
            self.held_out = self._check_held_out(float(options["held_out_tolerance"]))
        for wait in range(self.num_wait_steps):
            with self._rendering_if(wait == self.num_wait_steps - 1):
                raw, _, _, _ = self._env.step(self.wait_action)
        self._steps = 0
        self.timing = dict.fromkeys(self.timing, 0.0)
        info = {
            "init_state_index": self.init_state_index,
            "placement_seed": self.placement_seed,
            "success": bool(self._env.check_success()),
        }
        return self._observe(raw), info

    def _check_held_out(self, tolerance_m: float):
        """Refuse (``HeldOutViolation``) a start layout within ``tolerance_m`` of any evaluation init state."""
        from sim_eval.envs.layouts import HeldOutViolation, check_held_out, free_joint_qpos_addresses

        check = check_held_out(
            self.start_state, self.init_states, free_joint_qpos_addresses(self.sim.sim.model._model), tolerance_m
        )
        if not check.held_out:
            raise HeldOutViolation(
                f"placement seed {self.placement_seed}: start layout is {check.distance_m:.4f} m from evaluation init "
                f"state {check.nearest_init_state} of task {self.task_id} (tolerance {tolerance_m} m)"
            )
        return check

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        started, rendered = time.perf_counter(), self.timing["render_s"]
        raw, _, _, _ = self._env.step(action)
        self._steps += 1
        success = bool(self._env.check_success())
        truncated = not success and self._steps >= self.max_steps
        stepped = time.perf_counter()
        self.timing["physics_s"] += stepped - started - (self.timing["render_s"] - rendered)
        obs = self._observe(raw)
        self.timing["observe_s"] += time.perf_counter() - stepped
        return obs, float(success), success, truncated, {"success": success, "steps": self._steps}

    def render(self):
        if self.render_mode == "rgb_array" and self.cameras:
            return self.frames()["agentview"]
        return None

    def close(self):
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
            self._env = None


class EnvPerTask:
    """One ``LiberoEnv`` at a time, rebuilt only when the task changes: starting a simulator costs seconds, and
    consecutive episodes of a plan mostly share a task. A failed start leaves no env held, so the next call retries."""

    def __init__(self, suite: str, **env_kwargs: Any):
        self.suite, self.env_kwargs = suite, env_kwargs
        self._env: LiberoEnv | None = None
        self._task: int | None = None

    def __call__(self, task_id: int) -> LiberoEnv:
        if self._task != task_id:
            self.close()
            with interrupts_deferred():  # a Ctrl-C inside an extension's import would not stay a Ctrl-C
                self._env = LiberoEnv(self.suite, task_id, **self.env_kwargs)
            self._task = task_id
        return self._env

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env, self._task = None, None


class EveryNthFrame:
    """A ``LiberoEnv`` that renders only the observations of steps 0, n, 2n, ... (the others carry no ``images``): a
    recorder keeping every n-th frame pays for 1/n of the renders, and the frames it keeps are the same pixels."""

    def __init__(self, env: LiberoEnv, n: int):
        if n < 1:
            raise ValueError(f"frame stride {n}: must be >= 1")
        self.env, self.n, self._t = env, int(n), 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, **kwargs):
        self.env.set_rendering(True)
        self._t = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        self._t += 1
        self.env.set_rendering(self._t % self.n == 0)
        return self.env.step(action)

"""Running episodes in one process: ``EpisodeRunner`` (one simulator per task, one policy) and the policy built from
its Hydra ``_target_`` (``build_policy``), with what every record says about the run (``run_meta``) and the protocol
turned into env arguments (``env_kwargs``, shared with the demonstration recorder). A spawned worker builds its own
runner (``episode_runner``, ``remote_episode_runner`` under the batched server)."""

from __future__ import annotations

import dataclasses
import traceback
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sim_eval.config import RunConfig
from sim_eval.envs.interrupts import reraise_if_interrupt
from sim_eval.envs.libero_env import EnvPerTask
from sim_eval.records.episodes import episode_key, utc_now
from sim_eval.records.manifest import identity, run_info
from sim_eval.records.video import EpisodeVideo
from sim_eval.runtime.devices import WorkerDevice, cpu_info, cuda_memory_mib, pin_worker
from sim_eval.runtime.rollout import run_episode


def build_policy(policy_cfg: DictConfig | dict):
    """Instantiate the policy's ``_target_`` with every key but ``name`` (a label for records, not an argument)."""
    kwargs = OmegaConf.to_container(policy_cfg, resolve=True) if isinstance(policy_cfg, DictConfig) else policy_cfg
    kwargs = {k: v for k, v in kwargs.items() if k != "name"}
    return instantiate(kwargs, _convert_="all")


def run_meta(run: RunConfig, ident: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every record of this run says about how it was run: the headline settings, and the whole identity
    (``sim_eval.records.manifest``) with the versions and device beside it, so that records of different models or
    settings can never be pooled unnoticed."""
    checkpoint = getattr(run.policy, "checkpoint", None)
    return {
        "policy": run.policy.name,
        **({"checkpoint": str(checkpoint)} if checkpoint is not None else {}),
        "cache_mode": run.policy.cache_mode,
        # eval.seed moves the flow-matching noise stream: the report tells a `full` control arm apart by it
        "seed": run.eval.seed,
        # the suite as LIBERO-PRO names it: which base suite it perturbs, how, and whose step limit it ran under
        "base_suite": run.suite.base_suite,
        "perturbation": run.suite.perturbation,
        "protocol": {
            **dataclasses.asdict(run.protocol),
            "max_steps": run.max_steps,
            "max_steps_from": "eval.max_steps" if run.eval.max_steps else run.step_limit_suite,
        },
        "shard": dataclasses.asdict(run.eval.shard),
        "identity": identity(run) if ident is None else ident,
        "info": run_info(run),
    }


def crash_record(
    run: RunConfig, task_id: int, episode_index: int, error: dict[str, str], meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The record of an episode that crashed outside the rollout loop (simulator start-up, a dead worker)."""
    suite = run.suite.name
    return {
        "key": episode_key(suite, task_id, episode_index),
        "suite": suite,
        "task_id": task_id,
        "episode_index": episode_index,
        "init_state_index": episode_index,
        **(meta if meta is not None else run_meta(run)),
        "success": None,
        "steps": 0,
        "inferences": [],
        "error": error,
        "video": None,
        "finished_at": utc_now(),
    }


def env_kwargs(run: RunConfig) -> dict[str, Any]:
    """``LiberoEnv`` arguments (besides suite and task) that apply the run's protocol."""
    protocol = run.protocol
    return {
        "max_steps": run.max_steps,
        "env_seed": protocol.env_seed,
        "num_wait_steps": protocol.num_wait_steps,
        "wait_action": list(protocol.wait_action),
        "render_size": protocol.render_size,
        "model_image_size": protocol.model_image_size,
        "texture_colorspace": run.sim.texture_colorspace,
        # The policy schema says whether it needs simulator state (a property there, not a config key).
        "privileged": bool(getattr(run.policy, "privileged", False)),
    }


def policy_device(policy) -> str:
    """The torch device the policy's engine actually runs on ("-" for policies without one; a batched server's
    client names the server's)."""
    if isinstance(getattr(policy, "device", None), str):
        return policy.device
    return str(getattr(getattr(policy, "engine", None), "device", "-"))


class EpisodeRunner:
    """Runs episodes of one suite with one policy, keeping one simulator per task alive between episodes.

    ``meta``: what every record says about the run (``run_meta``, or the parent's with the checkpoint hashed once);
    ``device``: what this process was given (``sim_eval.runtime.devices.pin_worker``); every record carries both."""

    def __init__(
        self,
        run: RunConfig,
        policy,
        run_dir: Path,
        meta: dict[str, Any] | None = None,
        device: dict[str, Any] | None = None,
    ):
        self.run, self.policy, self.run_dir = run, policy, Path(run_dir)
        self.envs = EnvPerTask(run.suite.name, **env_kwargs(run))
        device = device or {"gpu": None, "egl_device": None, "gpu_name": None}
        meta = run_meta(run) if meta is None else meta
        self.meta = {**meta, "device": {**device, "policy": policy_device(policy), "cpu": cpu_info()}}

    def __call__(self, task_id: int, episode_index: int) -> dict[str, Any]:
        suite = self.run.suite.name
        try:
            env = self.envs(task_id)
        except Exception as err:  # a simulator that cannot start is this episode's error, not a task failure
            reraise_if_interrupt(err)
            error = {"type": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()}
            return crash_record(self.run, task_id, episode_index, error, self.meta)
        if "renderer" not in self.meta["device"]:  # one GL implementation per process: ask the first env
            self.meta["device"]["renderer"] = env.gl_renderer() if hasattr(env, "gl_renderer") else None
        video = None
        if self.run.eval.video != "none":
            video = EpisodeVideo(self.run_dir / "videos", fps=self.run.eval.video_fps)
        record = run_episode(
            env,
            self.policy,
            suite=suite,
            task_id=task_id,
            episode_index=episode_index,
            replan_steps=self.run.protocol.replan_steps,
            seed=self.run.eval.seed,
            lag_mae=self.run.eval.lag_mae,
            meta=self.meta,
            observer=video.observe(env) if video is not None else None,
            render_policy_frames_only=video is None and getattr(env, "cameras", False),
        )
        memory = cuda_memory_mib(getattr(getattr(self.policy, "engine", None), "device", None))
        if memory is not None:
            record["gpu_mem_mib"] = memory
        record["video"] = None
        if video is not None:
            keep = self.run.eval.video == "all" or record["success"] is False
            outcome = "error" if record["error"] else ("success" if record["success"] else "failure")
            path = video.finish(f"{suite}_task{task_id:02d}_ep{episode_index:03d}_{outcome}", keep=keep)
            record["video"] = str(path.relative_to(self.run_dir)) if path is not None else None
        return record

    def close(self) -> None:
        self.envs.close()


def policy_on(policy_cfg: dict, device: WorkerDevice) -> tuple[Any, dict[str, Any]]:
    """Pin this process to ``device`` (rendering, before any simulator exists) and build the policy on its torch
    device; returns the policy and what records say about the device."""
    info = pin_worker(device)
    if "device" in policy_cfg:
        policy_cfg = {**policy_cfg, "device": device.policy}
    return build_policy(policy_cfg), info


def episode_runner(
    run: RunConfig, policy_cfg: dict, run_dir: str, meta: dict[str, Any], device: WorkerDevice
) -> EpisodeRunner:
    """What a spawned worker runs: its own policy (built from the config, on its slot's device) and simulator
    (rendering on its slot's GPU). ``meta`` comes from the parent, which has hashed the checkpoint once for all
    workers."""
    policy, info = policy_on(policy_cfg, device)
    return EpisodeRunner(run, policy, Path(run_dir), meta, device=info)


def remote_episode_runner(
    run: RunConfig, run_dir: str, meta: dict[str, Any], server: dict[str, Any], device: WorkerDevice, conn,
    frames: str,
) -> EpisodeRunner:  # fmt: skip
    """A worker under ``eval.server=batched``: its simulator (rendering on its slot's GPU) and the server's client
    for slot ``conn`` (``server``: what the server said when ready; ``frames``: the slot's frame buffer)."""
    from sim_eval.runtime.server import RemotePolicy

    policy = RemotePolicy(conn, server["policy"], server["preparer"], frames)
    return EpisodeRunner(run, policy, Path(run_dir), meta, device=pin_worker(device))

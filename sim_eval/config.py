"""Structured config schemas: one dataclass per Hydra config group, validated in ``__post_init__``.

Hydra composes YAML into these schemas (type-checked on every override); ``validate(cfg)`` then builds the dataclass
objects, which runs every ``__post_init__`` on the final values. Every check here is cheap and runs before any
simulator, model or logger starts, and each failure is one line naming the bad value and what is allowed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from policies.base import VIEWS
from policies.cache import DEFAULT_THRESHOLD
from policies.cache_mode import CacheMode
from policies.pi05.config import KERNELS

# Number of tasks per suite, as LIBERO's benchmark registry defines them (checked against LIBERO in the tests).
SUITE_TASKS = {"libero_spatial": 10, "libero_object": 10, "libero_goal": 10, "libero_10": 10, "libero_90": 90}
VIDEO_MODES = ("all", "failures", "none")
LOGGER_MODES = ("online", "offline", "disabled")
SERVERS = ("none", "batched")
REPO = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A bad configuration value; its message is the one line the CLI prints."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class SuiteConfig:
    name: str = MISSING

    def __post_init__(self) -> None:
        _require(self.name in SUITE_TASKS, f"unknown suite {self.name!r}: allowed are {', '.join(SUITE_TASKS)}")

    @property
    def n_tasks(self) -> int:
        return SUITE_TASKS[self.name]


@dataclass
class ProtocolConfig:
    """How an episode is run. Defaults are openpi's LIBERO protocol."""

    name: str = "openpi"
    trials_per_task: int = 50
    env_seed: int = 7
    num_wait_steps: int = 10
    wait_action: list[float] = field(default_factory=lambda: [0.0] * 6 + [-1.0])
    max_steps: dict[str, int] = field(
        default_factory=lambda: {
            "libero_spatial": 220,
            "libero_object": 280,
            "libero_goal": 300,
            "libero_10": 520,
            "libero_90": 400,
        }
    )
    replan_steps: int = 5
    render_size: int = 256
    model_image_size: int = 224  # images reach the policy resized-with-pad to this size (0 = as rendered)

    def __post_init__(self) -> None:
        _require(self.trials_per_task >= 1, f"protocol.trials_per_task={self.trials_per_task}: must be >= 1")
        _require(self.num_wait_steps >= 0, f"protocol.num_wait_steps={self.num_wait_steps}: must be >= 0")
        _require(len(self.wait_action) == 7, f"protocol.wait_action={list(self.wait_action)}: needs 7 values")
        _require(self.replan_steps >= 1, f"protocol.replan_steps={self.replan_steps}: must be >= 1")
        _require(self.render_size >= 16, f"protocol.render_size={self.render_size}: must be >= 16")
        _require(self.model_image_size >= 0, f"protocol.model_image_size={self.model_image_size}: must be >= 0")
        missing = sorted(set(SUITE_TASKS) - set(self.max_steps))
        _require(not missing, f"protocol.max_steps lacks suites {missing}")
        for suite, steps in self.max_steps.items():
            _require(steps >= 1, f"protocol.max_steps.{suite}={steps}: must be >= 1")


@dataclass
class ShardConfig:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        _require(self.count >= 1, f"eval.shard.count={self.count}: must be >= 1")
        _require(0 <= self.index < self.count, f"eval.shard.index={self.index}: allowed are 0..{self.count - 1}")


@dataclass
class EvalConfig:
    tasks: list[int] | None = None  # None = every task of the suite
    episodes_per_task: int | None = None  # None = protocol.trials_per_task
    first_episode: int = 0  # episodes first_episode .. first_episode + episodes_per_task - 1 (init state = episode)
    max_steps: int | None = None  # overrides the protocol's per-suite step limit (short test runs)
    video: str = "none"
    video_fps: int = 20
    num_workers: int = 0  # 0 = run in this process; N >= 1 = N spawned worker processes, one env each
    retry_errors: bool = False  # on resume, run again episodes whose record is an error
    seed: int = 0  # base of the per-episode noise seed
    lag_mae: int = 3  # record pixel MAE against the inputs 1..N inferences back (calibration); 0 = off
    # CUDA devices the workers are spread over, round-robin, for the policy and for EGL rendering (sim_eval.devices);
    # null = every visible one (none on a CPU machine); [] = pin nothing
    gpus: list[int] | None = None
    # run into a dir whose manifest names other settings, the new episodes beside the old ones (sim_eval.manifest)
    force_resume: bool = False
    shard: ShardConfig = field(default_factory=ShardConfig)
    # none: every worker holds its own engine (batch 1); batched: one server process holds the engine and serves the
    # workers' inferences in batches of up to server_max_batch, waiting at most server_max_wait_ms for a batch to fill
    # (sim_eval.server)
    server: str = "none"
    server_max_batch: int = 16
    server_max_wait_ms: float = 5.0

    def __post_init__(self) -> None:
        _require(self.server in SERVERS, f"eval.server={self.server!r}: allowed are {', '.join(SERVERS)}")
        _require(self.server_max_batch >= 1, f"eval.server_max_batch={self.server_max_batch}: must be >= 1")
        _require(self.server_max_wait_ms >= 0, f"eval.server_max_wait_ms={self.server_max_wait_ms}: must be >= 0")
        _require(
            self.server == "none" or self.num_workers >= 1,
            f"eval.server={self.server} with eval.num_workers={self.num_workers}: a batched server serves worker "
            "processes, so eval.num_workers must be >= 1",
        )
        _require(self.video in VIDEO_MODES, f"eval.video={self.video!r}: allowed are {', '.join(VIDEO_MODES)}")
        _require(
            self.episodes_per_task is None or self.episodes_per_task >= 1,
            f"eval.episodes_per_task={self.episodes_per_task}: must be >= 1",
        )
        _require(self.max_steps is None or self.max_steps >= 1, f"eval.max_steps={self.max_steps}: must be >= 1")
        _require(self.first_episode >= 0, f"eval.first_episode={self.first_episode}: must be >= 0")
        _require(self.num_workers >= 0, f"eval.num_workers={self.num_workers}: must be >= 0")
        _require(self.lag_mae >= 0, f"eval.lag_mae={self.lag_mae}: must be >= 0")
        _require(self.video_fps >= 1, f"eval.video_fps={self.video_fps}: must be >= 1")
        _require(
            self.gpus is None or all(g >= 0 for g in self.gpus),
            f"eval.gpus={self.gpus}: CUDA ordinals must be >= 0",
        )


@dataclass
class LoggerConfig:
    mode: str = "disabled"
    project: str = "sim_eval"
    entity: str | None = None
    dir: str | None = None  # None = the run dir

    def __post_init__(self) -> None:
        _require(self.mode in LOGGER_MODES, f"logger.mode={self.mode!r}: allowed are {', '.join(LOGGER_MODES)}")


@dataclass
class RefreshConfig:
    threshold: float = DEFAULT_THRESHOLD
    views: list[str] = field(default_factory=lambda: list(VIEWS))

    def __post_init__(self) -> None:
        _require(self.threshold >= 0, f"policy.refresh.threshold={self.threshold}: must be >= 0")
        _require(len(self.views) > 0, "policy.refresh.views is empty: name at least one of " + ", ".join(VIEWS))
        for view in self.views:
            _require(view in VIEWS, f"policy.refresh.views has {view!r}: allowed are {', '.join(VIEWS)}")


PI05_HOWTO = (
    "policy.checkpoint=PATH names a LeRobot- or openpi-format Pi0.5 directory (e.g. a local copy of "
    "lerobot/pi05_libero); without it policy=pi05 runs the embedded small model (checkpoints/pi05_small_libero)"
)


@dataclass
class Pi05PolicyConfig:
    _target_: str = "policies.pi05.build_policy"
    name: str = "pi05"
    checkpoint: str | None = None
    cache: str = "full"
    # The protocol's replan_steps (conf/policy/pi05.yaml interpolates it): replay<N> consumes this many actions of
    # the stored chunk per inference, so the policy must know it; not part of the identity (the protocol's is).
    replan_steps: int = 5
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    engine: str = "native"
    device: str = "auto"
    dtype: str = "float32"
    tokenizer: str | None = None
    model_sizes: str | None = None
    random_weights: bool = False
    # view -> checkpoint camera key; None = the checkpoint's own order. Typed Any (checked below): OmegaConf cannot
    # merge a command-line map into an Optional[Dict] None node, nor add keys to a typed dict in struct mode.
    camera_map: Any = None
    shadow: bool = False
    num_steps: int = 10
    cpu_threads: int | None = 1
    kernels: str = "auto"
    pad_multiple: int = 1

    def __post_init__(self) -> None:
        try:
            CacheMode.parse(self.cache)
        except ValueError as err:
            raise ConfigError(f"policy.cache: {err}") from None
        _require(self.engine in ("native", "flashrt"), f"policy.engine={self.engine!r}: allowed are native, flashrt")
        _require(self.dtype in ("float32", "bfloat16"), f"policy.dtype={self.dtype!r}: allowed are float32, bfloat16")
        _require(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            f"policy.device={self.device!r}: allowed are auto, cpu, cuda, cuda:N",
        )
        _require(self.num_steps >= 1, f"policy.num_steps={self.num_steps}: must be >= 1")
        _require(self.kernels in KERNELS, f"policy.kernels={self.kernels!r}: allowed are {', '.join(KERNELS)}")
        _require(
            self.pad_multiple >= 1,
            f"policy.pad_multiple={self.pad_multiple}: must be >= 1 (1 = exact prompt lengths, nothing padded)",
        )
        _require(
            self.cpu_threads is None or self.cpu_threads >= 1,
            f"policy.cpu_threads={self.cpu_threads}: must be >= 1 or null (torch's default)",
        )
        if self.camera_map is not None:
            _require(
                isinstance(self.camera_map, dict),
                f"policy.camera_map={self.camera_map!r}: expected a map like {{agentview:base_0_rgb,wrist:KEY}}",
            )
            for view, key in self.camera_map.items():
                _require(view in VIEWS, f"policy.camera_map has view {view!r}: allowed are {', '.join(VIEWS)}")
                _require(isinstance(key, str), f"policy.camera_map.{view}={key!r}: expected a camera key")
        if self.checkpoint is None:  # the embedded default (records name the resolved path)
            self.checkpoint = str(embedded_checkpoint())
        path = os.path.expanduser(str(self.checkpoint))
        _require(os.path.isdir(path), f"policy.checkpoint={self.checkpoint!r}: no such directory; {PI05_HOWTO}")
        _check_pi05_checkpoint(path)
        mode = CacheMode.parse(self.cache)
        if mode.kind == "replay":
            from policies.pi05 import chunk_length

            try:
                mode.check_chunk(chunk_length(path), self.replan_steps)
            except ValueError as err:
                raise ConfigError(f"policy.cache: {err}") from None

    @property
    def cache_mode(self) -> str:
        return CacheMode.parse(self.cache).name


def embedded_checkpoint():
    """The shipped small Pi0.5 (``checkpoints/pi05_small_libero``)."""
    from checkpoints import path

    return path()


def _check_pi05_checkpoint(path: str) -> None:
    """Cheap structural check of a checkpoint directory, delegated to the engine package when it offers one."""
    try:
        from policies.pi05 import check_checkpoint
    except ImportError:
        return
    try:
        check_checkpoint(path)
    except ValueError as err:
        raise ConfigError(str(err)) from None


@dataclass
class ConstantPolicyConfig:
    """A policy that repeats one action: a pipeline smoke test and a 'does nothing' floor for success rates."""

    _target_: str = "policies.simple.ConstantPolicy"
    name: str = "constant"
    action: list[float] = field(default_factory=lambda: [0.0] * 6 + [-1.0])
    chunk: int = 10

    def __post_init__(self) -> None:
        _require(len(self.action) == 7, f"policy.action={list(self.action)}: needs 7 values")
        _require(self.chunk >= 1, f"policy.chunk={self.chunk}: must be >= 1")

    @property
    def cache_mode(self) -> str:
        return "-"


@dataclass
class ScriptedPolicyConfig:
    """The privileged scripted expert: reads simulator state, drives the same 7-D action path as learned policies."""

    _target_: str = "policies.scripted.ScriptedExpert"
    name: str = "scripted"
    speed: float = 1.0
    max_attempts: int = 3

    def __post_init__(self) -> None:
        _require(0.05 <= self.speed <= 1.0, f"policy.speed={self.speed}: allowed are 0.05..1.0")
        _require(self.max_attempts >= 1, f"policy.max_attempts={self.max_attempts}: must be >= 1")

    @property
    def cache_mode(self) -> str:
        return "-"

    @property
    def privileged(self) -> bool:
        return True


@dataclass
class RunConfig:
    suite: SuiteConfig = MISSING
    protocol: ProtocolConfig = MISSING
    policy: Any = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = MISSING

    def __post_init__(self) -> None:
        if isinstance(self.suite, SuiteConfig) and self.eval.tasks is not None:
            allowed = f"allowed are 0..{self.suite.n_tasks - 1} for {self.suite.name}"
            _require(len(self.eval.tasks) > 0, f"eval.tasks is empty: {allowed}")
            for task in self.eval.tasks:
                _require(0 <= task < self.suite.n_tasks, f"eval.tasks has task id {task}: {allowed}")
            twice = sorted({t for t in self.eval.tasks if list(self.eval.tasks).count(t) > 1})
            _require(not twice, f"eval.tasks names task {twice[0] if twice else ''} twice: each task runs once")
        if isinstance(self.protocol, ProtocolConfig):
            # Init state i drives episode i; LIBERO ships one init state per protocol trial.
            trials, first = self.protocol.trials_per_task, self.eval.first_episode
            _require(first < trials, f"eval.first_episode={first}: allowed are 0..{trials - 1}")
            if self.eval.episodes_per_task is not None:
                _require(
                    first + self.eval.episodes_per_task <= trials,
                    f"eval.episodes_per_task={self.eval.episodes_per_task}: allowed are 1..{trials - first}"
                    + (f" from eval.first_episode={first}" if first else ""),
                )
        if self.eval.server != "none":
            name, engine = getattr(self.policy, "name", None), getattr(self.policy, "engine", None)
            cache = str(getattr(self.policy, "cache", ""))
            _require(
                not cache.startswith("replay"),
                f"eval.server={self.eval.server} with policy.cache={cache}: replay<N> runs in-process "
                "(eval.server=none): its replayed frames never reach a model",
            )
            _require(
                name == "pi05" and engine == "native",
                f"eval.server={self.eval.server} with policy {name} (engine {engine}): the batched server runs the "
                "native Pi0.5 engine only (policy=pi05 or pi05_tiny, policy.engine=native)",
            )
        if isinstance(self.suite, SuiteConfig) and isinstance(self.protocol, ProtocolConfig):
            planned = len(self.task_ids) * self.episodes_per_task
            count = self.eval.shard.count
            _require(
                count <= planned,
                f"eval.shard.count={count}: only {planned} episodes planned, so a shard would get none "
                f"(allowed are 1..{planned})",
            )

    @property
    def task_ids(self) -> list[int]:
        return list(self.eval.tasks) if self.eval.tasks is not None else list(range(self.suite.n_tasks))

    @property
    def episodes_per_task(self) -> int:
        return self.eval.episodes_per_task or self.protocol.trials_per_task - self.eval.first_episode

    @property
    def episode_indices(self) -> range:
        return range(self.eval.first_episode, self.eval.first_episode + self.episodes_per_task)

    @property
    def max_steps(self) -> int:
        return self.eval.max_steps or self.protocol.max_steps[self.suite.name]


def repo_path(relative: str) -> str:
    """``${repo:PATH}`` in a config: PATH under the repository root, whatever the working directory."""
    return str(REPO / relative)


def register_configs() -> None:
    if not OmegaConf.has_resolver("repo"):
        OmegaConf.register_new_resolver("repo", repo_path)
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(group="suite", name="suite_schema", node=SuiteConfig)
    store.store(group="protocol", name="protocol_schema", node=ProtocolConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)
    store.store(group="policy", name="pi05_schema", node=Pi05PolicyConfig)
    store.store(group="policy", name="constant_schema", node=ConstantPolicyConfig)
    store.store(group="policy", name="scripted_schema", node=ScriptedPolicyConfig)


def validate(cfg: DictConfig) -> RunConfig:
    """Turn the composed config into schema objects, running every ``__post_init__`` check on the final values."""
    try:
        run = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as err:  # OmegaConf type/missing-value errors carry the key; keep their first line
        raise ConfigError(str(err).splitlines()[0]) from None
    if not isinstance(run, RunConfig):
        raise ConfigError("config does not follow the run schema (was conf/config.yaml changed?)")
    return run

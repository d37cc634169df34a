"""Structured config schemas: one dataclass per Hydra config group, validated in ``__post_init__``.

Hydra composes YAML into these schemas (type-checked on every override); ``validate(cfg)`` then builds the dataclass
objects, which runs every ``__post_init__`` on the final values. Every check here is cheap and runs before any
simulator, model or logger starts, and each failure is one line naming the bad value and what is allowed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from sim_eval.checkpoints import resolve as resolve_checkpoint
from sim_eval.envs import benchmarks
from sim_eval.envs.benchmarks import BASE_SUITES
from sim_eval.policies.base import VIEWS
from sim_eval.policies.cache_mode import DEFAULT_THRESHOLD, CacheMode
from sim_eval.policies.pi05.config import KERNELS

VIDEO_MODES = ("all", "failures", "none")
LOGGER_MODES = ("online", "offline", "disabled")
SERVERS = ("none", "batched")
# Hydra's configs ship inside the package, so an installed sim_eval (a wheel, the image) finds them too
CONF_DIR = Path(__file__).resolve().parent / "conf"
# the checkout around the package (``${repo:PATH}`` in a config: test fixtures, outside any installed package)
REPO = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A bad configuration value; its message is the one line the CLI prints."""


# OmegaConf's type errors name its own classes ("int is not a ListConfig"); a user needs what the setting takes.
_PLAIN = (
    (re.compile(r"Value '(.*)' of type '\w+' could not be converted to Integer"), "expected a whole number, got {0!r}"),
    (re.compile(r"Value '(.*)' of type '\w+' could not be converted to Float"), "expected a number, got {0!r}"),
    (re.compile(r"Value '(.*)' is not a valid bool"), "expected true or false, got {0!r}"),
    (re.compile(r"Invalid value assigned: \w+ is not a ListConfig"), "expected a list like [a,b], got a single value"),
    (re.compile(r"Invalid type assigned: \w+ is not a subclass of (\w+)"), "is a group of settings, not one value: "
     "set its keys (KEY.NAME=VALUE; python -m sim_eval --help lists them)"),
    (re.compile(r"Cannot assign \w+ to Dict"), "expected a map like {{key:value}}, got a single value"),
    (re.compile(r"Cannot convert '(list|dict)' to string"), "expected one text value, got a {0}"),
    (re.compile(r"Non optional field cannot be assigned None|is not Optional"), "cannot be null: give a value"),
    (re.compile(r"Missing mandatory value"), "has no value: give one"),
    (re.compile(r"does not support deletion"), "is a setting sim_eval needs: give it a value instead of deleting it"),
)  # fmt: skip


def plain_message(message: str) -> str:
    """One line for an OmegaConf type error, saying what the setting takes instead of OmegaConf's classes."""
    first = message.splitlines()[0] if message else message
    for pattern, text in _PLAIN:
        match = pattern.search(first)
        if match:
            return text.format(*match.groups())
    return first


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class SuiteConfig:
    """A benchmark the installed LIBERO package registers (``sim_eval.envs.benchmarks``); everything else about it (task
    count, base suite, perturbation, broken tasks) is derived from its name and the package, not configured."""

    name: str = MISSING

    def __post_init__(self) -> None:
        _require(self.name in benchmarks.table(), benchmarks.unknown_suite_message(self.name))
        bench = benchmarks.get(self.name)
        if not bench.runnable:
            raise ConfigError(bench.refusal())

    @property
    def n_tasks(self) -> int:
        return benchmarks.get(self.name).n_tasks

    @property
    def base_suite(self) -> str | None:
        return benchmarks.get(self.name).base_suite

    @property
    def perturbation(self) -> str | None:
        return benchmarks.get(self.name).perturbation


@dataclass
class ProtocolConfig:
    """How an episode is run. The defaults are openpi's LIBERO protocol, written here only: ``protocol=openpi``
    selects them as they are, other protocols (``sim_eval/conf/protocol/*.yaml``) override what they change."""

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
        missing = sorted(set(BASE_SUITES) - set(self.max_steps))
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
    # on resume, run again episodes whose record is an error (a crash is no result: after the cause is fixed, the
    # same command must not keep it); false keeps crash records as they are
    retry_errors: bool = True
    seed: int = 0  # base of the per-episode noise seed
    lag_mae: int = 3  # record pixel MAE against the inputs 1..N inferences back (calibration); 0 = off
    # CUDA devices the workers are spread over, round-robin, for the policy and for EGL rendering
    # (sim_eval.runtime.devices); null = every visible one (none on a CPU machine); [] = pin nothing
    gpus: list[int] | None = None
    # run into a dir whose manifest names other settings, the new episodes beside the old ones
    # (sim_eval.records.manifest)
    force_resume: bool = False
    shard: ShardConfig = field(default_factory=ShardConfig)
    # none: every worker holds its own engine (batch 1); batched: one server process holds the engine and serves the
    # workers' inferences in batches of up to server_max_batch, waiting at most server_max_wait_ms for a batch to fill
    # (sim_eval.runtime.server)
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
        twice = sorted({v for v in self.views if list(self.views).count(v) > 1})
        _require(not twice, f"policy.refresh.views names {twice[0] if twice else ''} twice: name each view once")


PI05_HOWTO = (
    "policy.checkpoint=PATH names a LeRobot- or openpi-format Pi0.5 directory (e.g. a local copy of "
    "lerobot/pi05_libero); without it policy=pi05 runs the embedded small model "
    "(sim_eval/checkpoints/pi05_small_libero)"
)


@dataclass
class Pi05PolicyConfig:
    _target_: str = "sim_eval.policies.pi05.build_policy"
    name: str = "pi05"
    checkpoint: str | None = None
    cache: str = "full"
    # The protocol's replan_steps (sim_eval/conf/policy/pi05.yaml interpolates it): replay<N> consumes this many
    # actions of the stored chunk per inference, so the policy must know it; not part of the identity (the protocol's
    # is).
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
            self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device) is not None,
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
            self.checkpoint = resolve_checkpoint(None)
        path = resolve_checkpoint(self.checkpoint)
        _require(os.path.isdir(path), f"policy.checkpoint={self.checkpoint!r}: no such directory; {PI05_HOWTO}")
        _check_pi05_checkpoint(path)
        mode = CacheMode.parse(self.cache)
        if mode.kind == "replay":
            from sim_eval.policies.pi05 import chunk_length

            try:
                mode.check_chunk(chunk_length(path), self.replan_steps)
            except ValueError as err:
                raise ConfigError(f"policy.cache: {err}") from None

    @property
    def cache_mode(self) -> str:
        return CacheMode.parse(self.cache).name


def _check_pi05_checkpoint(path: str) -> None:
    """Cheap structural check of a checkpoint directory, delegated to the engine package when it offers one."""
    try:
        from sim_eval.policies.pi05 import check_checkpoint
    except ImportError:
        return
    try:
        check_checkpoint(path)
    except ValueError as err:
        raise ConfigError(str(err)) from None


@dataclass
class ConstantPolicyConfig:
    """A policy that repeats one action: a pipeline smoke test and a 'does nothing' floor for success rates."""

    _target_: str = "sim_eval.policies.simple.ConstantPolicy"
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

    _target_: str = "sim_eval.policies.scripted.ScriptedExpert"
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
class SimConfig:
    """The simulator's own settings (``sim_eval.envs.simulator``): how textures are sampled."""

    # linear = as stored (LIBERO's training data); srgb; auto = MuJoCo's choice; null = the world the model was
    # trained in (its checkpoint's training.json), else linear; resolved by RunConfig
    texture_colorspace: str | None = None

    def __post_init__(self) -> None:
        if self.texture_colorspace is not None:
            from sim_eval.envs.simulator import check_colorspace

            problem = check_colorspace(self.texture_colorspace)
            _require(problem is None, problem or "")


@dataclass
class RunConfig:
    suite: SuiteConfig = MISSING
    protocol: ProtocolConfig = MISSING
    policy: Any = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = MISSING
    sim: SimConfig = field(default_factory=SimConfig)

    def __post_init__(self) -> None:
        if isinstance(self.sim, SimConfig) and self.sim.texture_colorspace is None:
            from sim_eval.envs.simulator import trained_colorspace

            self.sim = SimConfig(trained_colorspace(getattr(self.policy, "checkpoint", None)) or "linear")
        if isinstance(self.suite, SuiteConfig) and self.eval.tasks is not None:
            allowed = f"allowed are 0..{self.suite.n_tasks - 1} for {self.suite.name}"
            _require(len(self.eval.tasks) > 0, f"eval.tasks is empty: {allowed}")
            for task in self.eval.tasks:
                _require(0 <= task < self.suite.n_tasks, f"eval.tasks has task id {task}: {allowed}")
            twice = sorted({t for t in self.eval.tasks if list(self.eval.tasks).count(t) > 1})
            _require(not twice, f"eval.tasks names task {twice[0] if twice else ''} twice: each task runs once")
        if isinstance(self.suite, SuiteConfig):
            refusal = benchmarks.get(self.suite.name).refusal(self.task_ids)
            _require(refusal is None, str(refusal))
        if isinstance(self.protocol, ProtocolConfig):
            # Init state i drives episode i; LIBERO ships one init state per protocol trial (a few perturbed suites
            # fewer, checked below).
            trials, first = self.protocol.trials_per_task, self.eval.first_episode
            if isinstance(self.suite, SuiteConfig):
                _require(
                    self.eval.max_steps is not None or self.step_limit_suite is not None,
                    f"suite {self.suite.name} extends no base suite, so no protocol step limit applies: give "
                    "eval.max_steps=N",
                )
                # a perturbed suite may ship fewer init states than the protocol has trials
                shipped = benchmarks.get(self.suite.name).init_states
                _require(
                    shipped >= trials or self.eval.episodes_per_task is not None,
                    f"suite {self.suite.name} ships {shipped} init states per task, fewer than "
                    f"protocol.trials_per_task={trials}: give eval.episodes_per_task=1..{shipped - first}",
                )
                trials = min(trials, shipped)
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
    def step_limit_suite(self) -> str | None:
        """The suite whose protocol step limit this run inherits: the suite itself when the protocol names it, else
        its base suite (a perturbed suite runs as long as its base suite, as LIBERO-PRO runs it)."""
        if self.suite.name in self.protocol.max_steps:
            return self.suite.name
        base = self.suite.base_suite
        return base if base in self.protocol.max_steps else None

    @property
    def max_steps(self) -> int:
        return self.eval.max_steps or self.protocol.max_steps[self.step_limit_suite]


def standard_step_limit(protocol: str, suite: str) -> int | None:
    """The step limit protocol ``protocol`` (``sim_eval/conf/protocol/<name>.yaml`` over the schema's defaults) sets for
    ``suite``; None for a protocol or suite not known here. ``eval.max_steps`` below it shortens every episode."""
    path = CONF_DIR / "protocol" / f"{protocol}.yaml"
    if not path.is_file():
        return None
    limits = dict(ProtocolConfig().max_steps)
    limits.update(OmegaConf.to_container(OmegaConf.load(path)).get("max_steps") or {})
    return limits.get(suite)


def repo_path(relative: str) -> str:
    """``${repo:PATH}`` in a config: PATH under the repository root, whatever the working directory."""
    return str(REPO / relative)


def register_configs() -> None:
    if not OmegaConf.has_resolver("repo"):
        OmegaConf.register_new_resolver("repo", repo_path)
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(group="suite", name="suite_schema", node=SuiteConfig)
    # One choice per registered benchmark and one per named group of them (sim_eval.envs.benchmarks): derived from the
    # package's table, so no YAML is written per perturbation. A ``suites`` preset sets the sweeper's parameters,
    # so ``-m suites=base_libero_object`` runs one job per suite of the group (Hydra's own multirun).
    for name in benchmarks.table():
        store.store(group="suite", name=name, node={"name": name})
    for preset, names in benchmarks.presets().items():
        node = {"hydra": {"sweeper": {"params": {"suite": ",".join(names)}}}}
        store.store(group="suites", name=preset, node=node, package="_global_")
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
    except Exception as err:  # OmegaConf type/missing-value errors carry the key: name it and what it takes
        key = getattr(err, "full_key", None)
        message = plain_message(getattr(err, "msg", None) or str(err))
        raise ConfigError(f"{key}: {message}" if key else message) from None
    if not isinstance(run, RunConfig):
        raise ConfigError("config does not follow the run schema (was sim_eval/conf/config.yaml changed?)")
    return run

"""The whole command line checked before Hydra runs any of it.

Hydra creates the run dir and writes ``.hydra/`` before the task function starts, and a sweep starts job 0 before
job 1's values are even composed. So ``python -m sim_eval`` first composes and validates every job here, checks that
each run dir can be written and that a dir run into again holds the same settings (``sim_eval.records.manifest``), and
only then hands the command line to Hydra. Each failure is one ``ConfigError`` line; nothing has been written or
started, and nothing here imports torch or LIBERO.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sim_eval.config import CONF_DIR, ConfigError, RunConfig, plain_message, validate
from sim_eval.envs import benchmarks

GROUPS = ("suite", "suites", "protocol", "policy", "logger", "arm")
# Hydra flags after which the command line is Hydra's business (printing the config, help, shell completion...).
HYDRA_FLAGS = (
    "--cfg", "-c", "--info", "-i", "--version", "--hydra-help", "--shell-completion", "-sc", "--resolve",
    "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun",
)  # fmt: skip
# Keys a "+key=value" may add: the entries of a map setting (every other "+" would add a key nothing reads).
ADDABLE = ("hydra.", "hydra/", "policy.camera_map.")


def check_group_choices(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Hydra reports an unknown group option as a multi-line error; name the bad value and the choices in one line
    instead. Sweeps (``suite=a,b``) are checked value by value."""
    for arg in argv:
        name, sep, value = arg.lstrip("+~").partition("=")
        if not sep or name not in GROUPS:
            continue
        choices = group_choices(name, conf_dir)
        for choice in value.split(","):
            if choice.strip() in choices:
                continue
            if name == "suite":  # 83 names: the close ones, not all of them
                raise ConfigError(benchmarks.unknown_suite_message(choice.strip()))
            raise ConfigError(f"unknown {name} {choice.strip()!r}: allowed are {', '.join(choices)}")


def group_choices(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """A group's choices: its YAML files, and for ``suite`` / ``suites`` the benchmarks and presets derived from
    the LIBERO package's table (registered in ``sim_eval.config.register_configs``)."""
    if group == "suite":
        return sorted(benchmarks.table())
    if group == "suites":
        return sorted(benchmarks.presets())
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def expand_suites(overrides: list[str], multirun: bool) -> list[str]:
    """``suites=NAME`` as the sweep Hydra will run: the preset sets ``hydra.sweeper.params.suite``, which Hydra's
    sweeper puts before the command line's sweeps, so the job order here is Hydra's."""
    given = [o for o in overrides if o.lstrip("+~").partition("=")[0] == "suites"]
    if not given:
        return overrides
    preset = given[-1].partition("=")[2].strip()
    names = benchmarks.presets()[preset]
    if not multirun:
        raise ConfigError(f"suites={preset} is a group of {len(names)} suites: add -m to run one job per suite")
    if any(o.lstrip("+~").partition("=")[0] == "suite" for o in overrides):
        raise ConfigError(f"suites={preset} and suite= both name the suites: give one of them")
    return [f"suite={','.join(names)}", *overrides]


def parse_run_argv(argv: list[str]) -> tuple[bool, list[str]] | None:
    """``(multirun, overrides)``, or None when a Hydra flag asks for something other than a run."""
    if any(arg in HYDRA_FLAGS or arg.split("=")[0] in HYDRA_FLAGS for arg in argv):
        return None
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    return multirun, [arg for arg in argv if arg not in ("-m", "--multirun")]


def job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job the command line runs, in Hydra's job order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    for arg in overrides:
        if arg.startswith("~") and not arg.startswith("~hydra"):  # a deleted setting reaches no schema default
            raise ConfigError(f"{arg}: sim_eval's settings cannot be deleted; give KEY=VALUE instead")
        if "=" not in arg or arg.startswith("="):
            raise ConfigError(f"{arg}: expected KEY=VALUE (python -m sim_eval --help lists the settings)")
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except OverrideParseException as err:
        raise unreadable(overrides, parser, err) from None
    seen: dict[str, str] = {}
    for override in parsed:  # Hydra lets the last of two values win without a word
        key = override.get_key_element()
        if key in seen:
            raise ConfigError(f"{key} is given twice ({seen[key]} and {override.input_line}): give it once")
        seen[key] = override.input_line
    for override in parsed:
        key = override.get_key_element().lstrip("+~")
        if (override.is_add() or override.is_force_add()) and not key.startswith(ADDABLE):
            raise ConfigError(
                f"{override.input_line}: '+' adds a key, and sim_eval reads no key {key!r}; "
                "python -m sim_eval --help lists the settings"
            )
    if not multirun:
        sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
        if sweeps:
            raise ConfigError(f"{sweeps[0]} is a sweep: add -m to run one job per value, or give one value")
        return [overrides]
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def unreadable(overrides: list[str], parser, err: Exception) -> ConfigError:
    """One line for an override Hydra's grammar cannot read, naming it (and the usual cause: a '~' path)."""
    for arg in overrides:
        try:
            parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 - any parse failure marks the culprit
            key, _, value = arg.partition("=")
            if "~" in value:
                return ConfigError(
                    f"{arg}: Hydra's command-line grammar does not read '~' in a value; write the path out "
                    f"({key}=$HOME{value.partition('~')[2]}) or quote it ('{key}=\"{value}\"')"
                )
            return ConfigError(
                f"{arg}: Hydra's command-line grammar cannot read this value; quote it ('{key}=\"{value}\"') "
                "or check its brackets and commas"
            )
    return ConfigError(f"cannot read the command line: {str(err).splitlines()[0]}")


def check_arm(cfg, overrides: list[str]) -> None:
    """A study arm (``arm=cache3``) sets keys of its own; the same key given beside it would silently win and run
    another arm under the arm's name."""
    arm = OmegaConf.select(cfg, "hydra.runtime.choices.arm", default=None)
    if not arm or arm == "none":
        return
    settings = OmegaConf.load(CONF_DIR / "arm" / f"{arm}.yaml")
    for arg in overrides:
        key, sep, _ = arg.lstrip("+~").partition("=")
        if not sep or key in GROUPS or OmegaConf.select(settings, key, default=None) is None:
            continue
        ours, theirs = OmegaConf.select(settings, key), OmegaConf.select(cfg, key)
        if ours != theirs:
            raise ConfigError(
                f"arm={arm} sets {key}={ours} and {arg} says otherwise: give the arm alone, or arm=none with your "
                "settings"
            )


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def _composition_error(err: Exception, overrides: list[str]) -> ConfigError:
    """One line for Hydra's multi-line composition errors: an unknown key with the keys its section has, or the
    override whose value has the wrong type with what OmegaConf expected."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = err.__cause__
    key = getattr(cause, "full_key", None)
    if cause is None or not key:
        return ConfigError(str(err).splitlines()[0])
    key = key.split("[")[0]  # a list element's error names the list, as it was given
    given = next((o for o in reversed(overrides) if o.lstrip("+~").partition("=")[0] == key), key)
    if isinstance(cause, ConfigAttributeError | ConfigKeyError):
        section, _, name = key.rpartition(".")
        base = _compose([o for o in overrides if o.partition("=")[0] in GROUPS])
        node = OmegaConf.select(base, section) if section else base
        keys = sorted(k for k in node if k != "hydra" and not str(k).startswith("_")) if node is not None else []
        where = section or "the config"
        return ConfigError(f"{given}: unknown key {name!r} in {where}; allowed are {', '.join(map(str, keys))}")
    message = plain_message(getattr(cause, "msg", None) or str(cause))
    if message.startswith("is a group"):
        return ConfigError(f"{given}: {key} {message}")
    return ConfigError(f"{given}: {message}")


def compose_job(overrides: list[str], job_num: int | None) -> tuple[RunConfig, Path | None]:
    """The validated run of one job and the dir Hydra will give it (None where it cannot be known here)."""
    from hydra.errors import ConfigCompositionException

    try:
        cfg = _compose(overrides)
    except ConfigCompositionException as err:
        raise _composition_error(err, overrides) from None
    run_dir = None
    check_launcher(cfg, job_num is not None)
    check_arm(cfg, overrides)
    try:
        with open_dict(cfg):
            cfg.hydra.job.num = job_num or 0
        hydra = cfg.hydra
        key, value = ("hydra.sweep.dir", hydra.sweep.dir) if job_num is not None else ("hydra.run.dir", hydra.run.dir)
        run_dir = Path(f"{value}/{hydra.sweep.subdir}" if job_num is not None else value)
    except OmegaConfBaseException:  # a dir pattern built from runtime-only values (Hydra resolves it later)
        key, value = None, None
    if key is not None and not str(value).strip():  # Path("") is the working dir: the run would land among its files
        raise ConfigError(f"{key} is empty: give a directory (default outputs/<date>/<time>)")
    with open_dict(cfg):
        del cfg["hydra"]
    run = validate(cfg)
    check_gpus(run.eval.gpus)
    return run, run_dir


def check_launcher(cfg, multirun: bool) -> None:
    """submitit's SLURM launcher off a SLURM submit node fails with a traceback after Hydra wrote the sweep dir."""
    target = str(OmegaConf.select(cfg, "hydra.launcher._target_", default="") or "")
    if multirun and target.endswith("SlurmLauncher") and shutil.which("srun") is None:
        raise ConfigError(
            "hydra/launcher=slurm: no srun on PATH, so this is not a SLURM submit node; hydra/launcher=local runs "
            "the same launcher path on this machine"
        )


def check_gpus(gpus: list[int] | None) -> None:
    """``eval.gpus`` against the CUDA devices this machine has, without importing torch (``sim_eval.runtime.devices``
    checks again against torch's count where the workers are planned)."""
    if not gpus:
        return
    from sim_eval.runtime.devices import cuda_device_count_hint

    count = cuda_device_count_hint()
    if count is not None and any(g >= count for g in gpus):
        raise ConfigError(
            f"eval.gpus={list(gpus)}: this machine shows {count} CUDA device(s)"
            + (" (CPU only): leave eval.gpus unset" if count == 0 else f": allowed are 0..{count - 1}")
        )


def check_writable(path: Path, what: str = "run dir") -> None:
    """Raise ``ConfigError`` unless ``path`` is, or can be made, a writable directory; leaves nothing behind."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: exists and is not a directory")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{what} {path}: {ancestor} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".sim_eval-write-check-"))
    except OSError as err:
        raise ConfigError(f"{what} {path}: cannot create directories in {ancestor} ({err.strerror})") from None


def check_writable_file(path: Path, what: str) -> None:
    """Raise ``ConfigError`` unless the file ``path`` can be written (its dir exists or can be made, and it is not
    a directory), before a tool computes what it would write there."""
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a directory, give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{what} {path}: not writable")
    check_writable(path.parent, what=f"{what} {path}: its directory")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (exit 2), like every other bad input: argparse prints the usage
    block first, which buries the one thing that is wrong."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help shows the usage)\n")


def check_job(run: RunConfig, run_dir: Path | None) -> None:
    if run_dir is None:
        return
    check_writable(run_dir)
    if run_dir.is_dir():
        from sim_eval.records.manifest import check_resume, identity

        check_resume(run_dir, lambda: identity(run), run.eval.force_resume)


def preflight(argv: list[str]) -> list[Path]:
    """Compose, validate and check every job of ``argv`` (see the module docstring). Returns the run dirs that do
    not exist yet: Hydra will create them, and a run that then cannot start (its policy cannot be built) removes
    them again rather than leave an empty dir behind."""
    split = parse_run_argv(argv)
    if split is None:
        return []
    multirun, overrides = split
    check_group_choices(overrides)
    swept_overrides = expand_suites(overrides, multirun)
    jobs = job_overrides(swept_overrides, multirun)
    fresh, runs = [], []
    for num, job in enumerate(jobs):
        swept = " ".join(o for o in job if o not in swept_overrides) or "defaults"  # the swept keys' values
        try:
            run, run_dir = compose_job(job, num if multirun else None)
            check_job(run, run_dir)
        except ConfigError as err:
            if not multirun:
                raise
            raise ConfigError(f"job {num} ({swept}): {err}") from None
        same = next((k for k, (other, _) in enumerate(runs) if other == run), None)
        if same is not None:  # e.g. policy.cache=full,full, or arm=full beside policy.cache=full
            raise ConfigError(f"job {num} ({swept}) runs the same settings as job {same} ({runs[same][1]}): "
                              "give each value once")  # fmt: skip
        runs.append((run, swept))
        if run_dir is not None and not run_dir.exists():
            fresh.append(run_dir.resolve())
    return fresh


def print_help() -> None:
    """``--help``: the groups a user can pick (not the internal ``*_schema`` entries) and the default settings."""
    cfg = _compose([])
    with open_dict(cfg):
        del cfg["hydra"]
    print("python -m sim_eval [-m] [KEY=VALUE ...]: closed-loop LIBERO evaluation (README.md).\n")
    print("Groups (GROUP=CHOICE; -m with CHOICE1,CHOICE2 sweeps):")
    for group in GROUPS:
        choices = group_choices(group)
        if group == "suite":  # the refused ones are registered too, but listing them invites a run that cannot start
            runnable = [name for name in choices if benchmarks.get(name).runnable]
            refused = len(choices) - len(runnable)
            choices = [*runnable, f"({refused} more registered and refused: docs/benchmarks.md section 4)"]
        print(f"  {group}: {', '.join(choices)}")
    print("\nSettings and their defaults (KEY=VALUE, e.g. policy.cache=adaptive3 eval.episodes_per_task=5):\n")
    print(OmegaConf.to_yaml(cfg), end="")
    print("\nHydra's own options: python -m sim_eval --hydra-help")

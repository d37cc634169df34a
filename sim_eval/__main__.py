"""``python -m sim_eval``: compose the config, check it, evaluate, return the metrics.

Bad input stops here with one line on stderr (exit code 2) before any simulator, model or logger starts.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from sim_eval.config import ConfigError, register_configs, validate

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("suite", "protocol", "policy", "logger")
log = logging.getLogger("sim_eval")


def check_group_choices(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Hydra reports an unknown group option as a multi-line error; name the bad value and the choices in one line
    instead. Sweeps (``suite=a,b``) are checked value by value."""
    for arg in argv:
        name, sep, value = arg.lstrip("+~").partition("=")
        if not sep or name not in GROUPS:
            continue
        choices = sorted(p.stem for p in (conf_dir / name).glob("*.yaml"))
        for choice in value.split(","):
            if choice.strip() not in choices:
                raise ConfigError(f"unknown {name} {choice.strip()!r}: allowed are {', '.join(choices)}")


def _fail(err: Exception) -> None:
    print(f"sim_eval: error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    try:
        run = validate(cfg)
    except ConfigError as err:
        _fail(err)
    from sim_eval.app import build_policy, evaluate
    from sim_eval.loggers import build_logger

    policy = None
    if run.eval.num_workers == 0:  # spawned workers build their own
        try:
            policy = build_policy(cfg.policy)
        except (InstantiationException, ValueError, OSError, RuntimeError) as err:  # tokenizer, sizes, engine...
            cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
            _fail(f"policy: {str(cause).splitlines()[0]}")

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    sweep_dir = hydra_cfg.sweep.dir if hydra_cfg.mode.name == "MULTIRUN" else None
    logger = build_logger(**OmegaConf.to_container(cfg.logger, resolve=True))
    logger.start(
        config=OmegaConf.to_container(cfg, resolve=True),
        name=",".join(overrides) or "defaults",
        group=str(sweep_dir) if sweep_dir else str(run_dir),
        run_dir=str(run_dir),
    )
    summary = evaluate(run, cfg, run_dir, logger, policy=policy)
    from sim_eval.app import closing_summary

    print(closing_summary(run, run_dir), flush=True)
    return summary


def cli() -> None:
    register_configs()
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as err:
        _fail(err)
    main()


if __name__ == "__main__":
    cli()

"""``python -m sim_eval``: check the whole command line, compose the config, evaluate, return the metrics.

Bad input stops with one line on stderr (exit code 2) before Hydra writes anything and before any simulator, model
or logger starts (``sim_eval.preflight``); a sweep is checked job by job before its first job runs.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from sim_eval.config import ConfigError, register_configs, validate
from sim_eval.preflight import CONF_DIR, GROUPS, check_group_choices, preflight, print_help

__all__ = ["CONF_DIR", "GROUPS", "check_group_choices", "cli", "main"]
log = logging.getLogger("sim_eval")
FRESH_DIRS: list[Path] = []  # run dirs that did not exist before this command (sim_eval.preflight)
HYDRA_ONLY = {".hydra", "sim_eval.log"}  # what Hydra writes into a run dir before the task function starts


def _fail(err: Exception | str) -> None:
    print(f"sim_eval: error: {err}", file=sys.stderr)
    sys.exit(2)


def _fail_to_start(err: Exception | str, run_dir: Path) -> None:
    """A run that cannot start: remove the dir Hydra made for it (only one this command made, holding nothing but
    Hydra's files), then the one error line."""
    if run_dir.resolve() in FRESH_DIRS and {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY:
        logging.shutdown()  # close the log file before its dir goes
        shutil.rmtree(run_dir, ignore_errors=True)
    _fail(err)


def _interrupted(run_dir: Path) -> NoReturn:
    """Ctrl-C: the episode in flight is not recorded (neither a failure nor a crash); the rest resumes.

    After the one line the ``KeyboardInterrupt`` goes on, without its traceback: Python then cleans up and ends the
    process by SIGINT, as an interrupted Unix program should, so a calling shell loop stops too (the shell shows 130).
    ``sys.exit(130)`` would not be a fixed answer: CPython still ends by SIGINT when an extension's import was
    interrupted before."""
    from sim_eval.records.episodes import EPISODES_FILE, read_records

    done = len(read_records(run_dir / EPISODES_FILE))
    print(
        f"sim_eval: interrupted: {done} episodes recorded in {run_dir}; run the same command with "
        f"hydra.run.dir={run_dir} to resume",
        file=sys.stderr,
        flush=True,
    )
    default_hook = sys.excepthook
    sys.excepthook = lambda kind, value, tb: None if kind is KeyboardInterrupt else default_hook(kind, value, tb)
    raise KeyboardInterrupt from None


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    try:
        run = validate(cfg)
    except ConfigError as err:
        _fail(err)
    from sim_eval.runtime.job import evaluate
    from sim_eval.runtime.loggers import build_logger
    from sim_eval.runtime.runner import build_policy
    from sim_eval.runtime.workers import WorkerStartError

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    policy = None
    if run.eval.num_workers == 0:  # spawned workers build their own
        try:
            policy = build_policy(cfg.policy)
        except (InstantiationException, ValueError, OSError, RuntimeError) as err:  # tokenizer, sizes, engine...
            cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
            _fail_to_start(f"policy: {str(cause).splitlines()[0]}", run_dir)

    overrides = list(hydra_cfg.overrides.task)
    sweep_dir = hydra_cfg.sweep.dir if hydra_cfg.mode.name == "MULTIRUN" else None
    logger = build_logger(**OmegaConf.to_container(cfg.logger, resolve=True))
    logger.start(
        config=OmegaConf.to_container(cfg, resolve=True),
        name=",".join(overrides) or "defaults",
        group=str(sweep_dir) if sweep_dir else str(run_dir),
        run_dir=str(run_dir),
    )
    try:
        summary = evaluate(run, cfg, run_dir, logger, policy=policy)
    except ConfigError as err:  # the run dir holds other settings (checked again where Hydra put the job)
        _fail(err)
    except WorkerStartError as err:
        _fail_to_start(f"policy: {err}", run_dir)
    except KeyboardInterrupt:
        _interrupted(run_dir)
    from sim_eval.analysis.summary import closing_summary, crash_failure
    from sim_eval.records.episodes import EPISODES_FILE, dedupe, read_records
    from sim_eval.records.manifest import identity, matches

    print(closing_summary(run, run_dir), flush=True)
    ident = identity(run)
    crashed = crash_failure(dedupe(r for r in read_records(run_dir / EPISODES_FILE) if matches(r, ident)))
    if crashed and hydra_cfg.mode.name != "MULTIRUN":  # a sweep goes on to its other jobs; its end says (callbacks)
        print(f"sim_eval: error: {crashed}; records: {run_dir / EPISODES_FILE}; fix the cause and run the same "
              "command again (crashed episodes are run again)", file=sys.stderr)  # fmt: skip
        sys.exit(1)
    return summary


def cli() -> None:
    register_configs()
    argv = sys.argv[1:]
    if any(arg in ("--help", "-h") for arg in argv):
        print_help()
        return
    try:
        FRESH_DIRS.extend(preflight(argv))
    except ConfigError as err:
        _fail(err)
    main()
    from sim_eval.callbacks import FAILED_JOBS

    if FAILED_JOBS:  # a sweep whose jobs ended without a finished episode must not exit as if it had run
        print(f"sim_eval: error: {'; '.join(FAILED_JOBS)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()

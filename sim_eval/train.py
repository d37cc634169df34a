"""``python -m sim_eval.train data=DIR [out=DIR] [optim.steps=N] [model.vlm.width=N] ...``: train a small Pi0.5.

``data`` is a training set made by ``python -m sim_eval.export``. The result is a directory of LeRobot-format
checkpoints that ``python -m sim_eval policy.checkpoint=DIR/checkpoints/step_NNNNNN`` evaluates. Bad input stops
with one line (exit 2) before any data is read.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sim_eval.config import ConfigError
from sim_eval.training.config import TrainConfig, register_train_config


def _fail(err: Exception) -> None:
    print(f"sim_eval.train: error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    try:
        run = OmegaConf.to_object(cfg)
    except ConfigError as err:
        _fail(err)
    except Exception as err:  # OmegaConf type / missing-value errors name the key on their first line
        _fail(ConfigError(str(err).splitlines()[0]))
    assert isinstance(run, TrainConfig)
    if not (Path(run.data) / "meta.json").is_file():
        _fail(
            ConfigError(
                f"data={run.data!r}: not a training set (no meta.json; make one with python -m sim_eval.export)"
            )
        )
    from sim_eval.training.train import train

    out = Path(run.out) if run.out else Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = train(run, out)
    except ConfigError as err:  # a warm start that does not fit (init_from): its path, tokenizer or sizes
        _fail(err)
    print(
        f"trained {metrics['steps']} steps ({metrics['params'] / 1e6:.2f} M parameters) in {metrics['train_s']} s; "
        f"loss {metrics['first_loss']:.4f} -> {metrics['final_loss']:.4f}; checkpoints in {out / 'checkpoints'}"
    )
    return metrics


def cli() -> None:
    register_train_config()
    main()


if __name__ == "__main__":
    cli()

"""A warm start (``init_from=DIR``): training continues from a checkpoint that ``sim_eval.train`` wrote, with its
weights, its tokenizer and its normalizer, so the network keeps reading prompts and actions on the scales it learned.
The optimizer, its schedule and the data loader start fresh (a checkpoint holds the EMA weights only); the new
``training.json`` names the checkpoint it started from, by path, step and weights digest."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim_eval.config import ConfigError
from sim_eval.policies.pi05.checkpoint import copy_weights, plan_checkpoint, read_checkpoint_info
from sim_eval.policies.pi05.config import CheckpointInfo
from sim_eval.training.export_checkpoint import STATS


@dataclass
class WarmStart:
    info: CheckpointInfo
    training: dict[str, Any]  # the checkpoint's training.json

    @classmethod
    def open(cls, path: str | Path) -> WarmStart:
        path = Path(path).expanduser()
        file = path / "training.json"
        if not file.is_file():
            raise ConfigError(f"init_from={str(path)!r}: not a checkpoint written by sim_eval.train (no training.json)")
        return cls(read_checkpoint_info(path), json.loads(file.read_text()))

    def tokenizer(self, out: Path, instructions: list[str]) -> Path:
        """The checkpoint's tokenizer, copied to ``out``; refused when an instruction of the new data has a word it
        does not know (the prompt would carry an unknown piece the network never saw)."""
        import sentencepiece as spm

        from sim_eval.policies.pi05.processing import clean_task

        src = self.info.path / "tokenizer" / "tokenizer.model"
        sp = spm.SentencePieceProcessor(model_file=str(src))
        words = {w for t in instructions for w in clean_task(t).split()}
        unknown = sorted(w for w in words if sp.unk_id() in sp.encode(w))
        if unknown:
            raise ConfigError(f"init_from={str(self.info.path)!r}: its tokenizer does not know the words "
                              f"{unknown[:5]} of the training set's instructions")  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
        return out

    def stats(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(state, action) statistics as the checkpoint's normalizer holds them."""
        norm = self.info.norm

        def arrays(part: dict[str, list[float]]) -> dict[str, np.ndarray]:
            return {k: np.asarray(part[k], dtype=np.float32) for k in STATS}

        return arrays(norm["state"]), arrays(norm["action"])

    def load_into(self, model: torch.nn.Module) -> None:
        """Copy the weights; a model of other sizes is refused in one line naming the mismatching tensors."""
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        try:
            plan, _ = plan_checkpoint(self.info, expected)
        except ValueError as err:
            raise ConfigError(f"init_from: {err} (the model.* settings must be the checkpoint's)") from None
        copy_weights(model, self.info, plan)

    def origin(self) -> dict[str, Any]:
        """What ``training.json`` records about the start."""
        return {"path": str(self.info.path), "step": self.training.get("step"),
                "weights_sha256": self.training.get("weights_sha256")}  # fmt: skip

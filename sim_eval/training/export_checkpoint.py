"""Write a trained ``Pi05Model`` as a LeRobot Pi0.5 checkpoint directory, the format the engine (and users) load:

config.json                         type pi05, features, chunk / steps, LeRobot's training fields, and
                                    ``model_sizes`` (the small widths; the variant names stay LeRobot's)
model.safetensors                   ``model.``-prefixed LeRobot key names (``sim_eval.policies.pi05.checkpoint`` maps
them) policy_preprocessor.json            rename, to-batch, normalizer (state QUANTILES), tokenizer, device steps
policy_preprocessor_step_3_normalizer_processor.safetensors
policy_postprocessor.json           unnormalizer (action QUANTILES), device
policy_postprocessor_step_0_unnormalizer_processor.safetensors
tokenizer/tokenizer.model           the SentencePiece model the prompt is tokenized with
training.json                       how it was trained (data, config, step, seed, sha256 of the weights)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim_eval.policies.pi05.checkpoint import _PREFIXES
from sim_eval.policies.pi05.config import ModelSizes

CAMERA_KEYS = {"agentview": "observation.images.base_0_rgb", "wrist": "observation.images.left_wrist_0_rgb"}
STATS = ("min", "max", "mean", "std", "q01", "q10", "q50", "q90", "q99")


def lerobot_key(name: str) -> str:
    """Our module name -> LeRobot's state-dict key (the inverse of ``sim_eval.policies.pi05.checkpoint.map_key``)."""
    for src, dst in _PREFIXES:
        if name.startswith(dst):
            return "model." + src + name[len(dst) :]
    return "model." + name


def feature_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    q = np.quantile(x, [0.01, 0.10, 0.50, 0.90, 0.99], axis=0)
    values = [x.min(0), x.max(0), x.mean(0), x.std(0), *q]
    return {name: np.asarray(v, dtype=np.float32) for name, v in zip(STATS, values, strict=True)}


def _sizes_dict(sizes: ModelSizes) -> dict[str, Any]:
    def part(p) -> dict[str, int]:
        return {k: int(getattr(p, k)) for k in p.__dataclass_fields__}

    return {"vlm": part(sizes.vlm), "expert": part(sizes.expert), "vision": part(sizes.vision),
            "vocab_size": sizes.vocab_size, "max_action_dim": sizes.max_action_dim}  # fmt: skip


def write_checkpoint(
    out: str | Path,
    model: torch.nn.Module,
    sizes: ModelSizes,
    *,
    state_stats: dict[str, np.ndarray],
    action_stats: dict[str, np.ndarray],
    tokenizer_model: str | Path,
    chunk_size: int,
    max_token_len: int,
    dtype: torch.dtype = torch.bfloat16,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights (cast to ``dtype``) and processors to ``out`` (created; an existing one is
    replaced)."""
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "tokenizer").mkdir(parents=True)
    tensors = {lerobot_key(k): v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(tokenizer_model, out / "tokenizer" / "tokenizer.model")
    res = sizes.vision.image_size
    visual = {"type": "VISUAL", "shape": [3, res, res]}
    features_in = {key: dict(visual) for key in CAMERA_KEYS.values()}
    features_in["observation.state"] = {"type": "STATE", "shape": [int(len(state_stats["q01"]))]}
    features_out = {"action": {"type": "ACTION", "shape": [int(len(action_stats["q01"]))]}}
    config = {
        "type": "pi05",
        "n_obs_steps": 1,
        "input_features": features_in,
        "output_features": features_out,
        "device": "cpu",
        "use_amp": False,
        "paligemma_variant": "gemma_2b",
        "action_expert_variant": "gemma_300m",
        "model_sizes": _sizes_dict(sizes),
        "dtype": "float32",
        "chunk_size": int(chunk_size),
        "n_action_steps": int(chunk_size),
        "max_state_dim": 32,
        "max_action_dim": int(sizes.max_action_dim),
        "num_inference_steps": 10,
        "time_sampling_beta_alpha": 1.5,
        "time_sampling_beta_beta": 1.0,
        "time_sampling_scale": 0.999,
        "time_sampling_offset": 0.001,
        "min_period": sizes.min_period,
        "max_period": sizes.max_period,
        "image_resolution": [res, res],
        "empty_cameras": 0,
        "tokenizer_max_length": int(max_token_len),
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "QUANTILES", "ACTION": "QUANTILES"},
    }
    (out / "config.json").write_text(json.dumps(config, indent=4))
    norm_file = "policy_preprocessor_step_3_normalizer_processor.safetensors"
    unnorm_file = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    stats = {f"observation.state.{k}": v for k, v in state_stats.items()}
    stats |= {f"action.{k}": v for k, v in action_stats.items()}
    save_numpy(stats, str(out / norm_file))
    save_numpy(stats, str(out / unnorm_file))
    all_features = {**features_in, **features_out}
    norm_map = config["normalization_mapping"]
    pre = {
        "name": "policy_preprocessor",
        "steps": [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}},
            {"registry_name": "relative_actions_processor", "config": {"enabled": False}},
            {"registry_name": "normalizer_processor",
             "config": {"eps": 1e-08, "features": all_features, "norm_map": norm_map}, "state_file": norm_file},
            {"registry_name": "tokenizer_processor",
             "config": {"max_length": int(max_token_len), "task_key": "task", "padding_side": "right",
                        "padding": "max_length", "truncation": True, "tokenizer_name": "tokenizer"}},
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
        ],
    }  # fmt: skip
    post = {
        "name": "policy_postprocessor",
        "steps": [
            {"registry_name": "unnormalizer_processor",
             "config": {"eps": 1e-08, "features": features_out, "norm_map": norm_map}, "state_file": unnorm_file},
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
        ],
    }  # fmt: skip
    (out / "policy_preprocessor.json").write_text(json.dumps(pre, indent=2))
    (out / "policy_postprocessor.json").write_text(json.dumps(post, indent=2))
    weights_sha = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    (out / "training.json").write_text(json.dumps({**(training or {}), "weights_sha256": weights_sha}, indent=1))
    return out

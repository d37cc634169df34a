"""Reading Pi0.5 checkpoints: LeRobot directories and openpi's PyTorch layout.

``read_checkpoint_info`` needs no torch; ``plan_load``/``load_weights`` map the file's keys onto ``Pi05Model``'s names,
refuse missing, unexpected and mis-shaped tensors with one error that lists them, and skip the tensors inference never
reads (both lm_heads, the final VLM norm, the last VLM layer's q/o/MLP) without reading their bytes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sim_eval.policies.pi05.config import (
    CheckpointInfo,
    ModelSizes,
    apply_size_override,
    detect_layout,
    full_size,
    load_size_override,
    read_json,
)

OPENPI_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
EMBED_KEY = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
LM_HEAD_KEY = "paligemma_with_expert.paligemma.lm_head.weight"
_PREFIXES = (
    ("paligemma_with_expert.paligemma.model.vision_tower.vision_model.", "vision."),
    ("paligemma_with_expert.paligemma.model.multi_modal_projector.linear.", "projector."),
    ("paligemma_with_expert.paligemma.model.language_model.", "llm."),
    ("paligemma_with_expert.gemma_expert.model.", "expert."),
)
_LAST_LAYER_UNUSED = re.compile(
    r"^llm\.layers\.(\d+)\.(self_attn\.q_proj|self_attn\.o_proj|post_attention_layernorm|mlp)\."
)


SHOWN = 3  # tensors named per kind of mismatch in a load error

# --------------------------------------------------------------------------------------------------------- metadata


def _lerobot_processor(path: Path, name: str) -> dict[str, Any]:
    file = path / f"{name}.json"
    if not file.is_file():
        raise ValueError(
            f"LeRobot checkpoint {str(path)!r} lacks {file.name} (normalization stats and tokenizer "
            "settings live there)"
        )
    return read_json(file)


def _step(proc: dict[str, Any], registry_name: str) -> dict[str, Any] | None:
    for step in proc.get("steps", []):
        if step.get("registry_name") == registry_name:
            return step
    return None


def _read_stats_file(file: Path, prefix: str) -> dict[str, list[float]]:
    from safetensors.numpy import load_file  # numpy backend: no torch needed to read stats

    if not file.is_file():
        raise ValueError(f"normalization stats file {str(file)!r} is missing")
    data = load_file(str(file))
    return {k[len(prefix) + 1 :]: v.astype("float32").tolist() for k, v in data.items() if k.startswith(prefix + ".")}


def _lerobot_info(path: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    pre = _lerobot_processor(path, "policy_preprocessor")
    post = _lerobot_processor(path, "policy_postprocessor")
    norm_step = _step(pre, "normalizer_processor")
    unnorm_step = _step(post, "unnormalizer_processor")
    if norm_step is None or unnorm_step is None:
        raise ValueError(f"LeRobot checkpoint {str(path)!r}: no normalizer/unnormalizer step in its processor files")
    tok_step = _step(pre, "tokenizer_processor") or {"config": {}}
    state_mode = norm_step["config"].get("norm_map", {}).get("STATE", "QUANTILES")
    action_mode = unnorm_step["config"].get("norm_map", {}).get("ACTION", "QUANTILES")
    norm = {
        "formula": "lerobot",
        "eps": float(norm_step["config"].get("eps", 1e-8)),
        "state_mode": state_mode,
        "action_mode": action_mode,
        "state": _read_stats_file(path / norm_step["state_file"], "observation.state"),
        "action": _read_stats_file(path / unnorm_step["state_file"], "action"),
    }
    features = cfg.get("input_features", {})
    cameras = tuple(k for k, v in features.items() if v.get("type") == "VISUAL")
    chunk = int(cfg.get("chunk_size", 50))
    return {
        "camera_keys": cameras,
        "chunk_size": chunk,
        "n_action_steps": min(int(cfg.get("n_action_steps", chunk)), chunk),
        "num_steps": int(cfg.get("num_inference_steps", 10)),
        "max_token_len": int(tok_step["config"].get("max_length", cfg.get("tokenizer_max_length", 200))),
        "state_in_prompt": _step(pre, "pi05_prepare_state_tokenizer_processor_step") is not None,
        "tokenizer_name": tok_step["config"].get("tokenizer_name"),
        "norm": norm,
        "max_action_dim": int(cfg.get("max_action_dim", 32)),
    }


def _openpi_info(path: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    found = sorted((path / "assets").glob("**/norm_stats.json")) if (path / "assets").is_dir() else []
    if not found and (path / "norm_stats.json").is_file():
        found = [path / "norm_stats.json"]
    if len(found) > 1:
        libero = [f for f in found if "libero" in str(f.relative_to(path))]
        found = libero if len(libero) == 1 else found
    if len(found) != 1:
        raise ValueError(
            f"openpi checkpoint {str(path)!r}: expected exactly one assets/<asset_id>/norm_stats.json, "
            f"found {[str(f) for f in found]}"
        )
    raw = read_json(found[0]).get("norm_stats", {})
    if "state" not in raw or "actions" not in raw:
        raise ValueError(f"{found[0]}: norm_stats must hold 'state' and 'actions'")
    norm = {
        "formula": "openpi",
        "eps": 1e-6,
        "state_mode": "QUANTILES",
        "action_mode": "QUANTILES",
        "state": raw["state"],
        "action": raw["actions"],
    }
    chunk = int(cfg["action_horizon"])
    return {
        "camera_keys": tuple(cfg.get("camera_keys", OPENPI_CAMERAS)),
        "chunk_size": chunk,
        "n_action_steps": chunk,
        "num_steps": int(cfg.get("num_steps", 10)),
        "max_token_len": int(cfg.get("max_token_len", 200)),
        "state_in_prompt": bool(cfg.get("discrete_state_input", False)),
        "tokenizer_name": None,
        "norm": norm,
        "max_action_dim": int(cfg.get("action_dim", 32)),
    }


def read_checkpoint_info(path: str | Path, model_sizes: str | dict | None = None) -> CheckpointInfo:
    """Sizes and pre/post-processing settings of a checkpoint directory (no tensors read)."""
    path = Path(path).expanduser()
    layout = detect_layout(path)
    cfg = read_json(path / "config.json")
    meta = _lerobot_info(path, cfg) if layout == "lerobot" else _openpi_info(path, cfg)
    sizes: ModelSizes = full_size(
        cfg.get("paligemma_variant", "gemma_2b"), cfg.get("action_expert_variant", "gemma_300m")
    )
    max_action_dim = meta.pop("max_action_dim")
    sizes = apply_size_override(
        sizes, {"max_action_dim": max_action_dim, **{k: cfg[k] for k in ("min_period", "max_period") if k in cfg}}
    )
    override = load_size_override(model_sizes)
    if override is None and isinstance(cfg.get("model_sizes"), dict):
        override = cfg["model_sizes"]
    if override is not None:
        sizes = apply_size_override(sizes, override)
    return CheckpointInfo(
        path=path,
        layout=layout,
        weights=path / "model.safetensors",
        sizes=sizes,
        sizes_from_variants=override is None,
        **meta,
    )


# ------------------------------------------------------------------------------------------------------ key mapping
def _bare(key: str, layout: str) -> str:
    return key[len("model.") :] if layout == "lerobot" and key.startswith("model.") else key


def map_key(bare: str) -> str:
    for src, dst in _PREFIXES:
        if bare.startswith(src):
            return dst + bare[len(src) :]
    return bare


def unused_reason(name: str, vlm_depth: int) -> str | None:
    """Why a (mapped) tensor is never read at inference, or None if it is used."""
    if name in (LM_HEAD_KEY, "paligemma_with_expert.gemma_expert.lm_head.weight"):
        return "lm_head (no token is decoded)"
    if name == "llm.norm.weight":
        return "final VLM norm (the prefix pass only keeps K/V)"
    m = _LAST_LAYER_UNUSED.match(name)
    if m and int(m.group(1)) == vlm_depth - 1:
        return "last VLM layer beyond K/V (its output is never read)"
    return None


def plan_load(
    expected: Mapping[str, tuple[int, ...]],
    source: Mapping[str, tuple[int, ...]],
    layout: str,
    metadata: Mapping[str, str] | None,
    vlm_depth: int,
    where: str = "checkpoint",
    hint: str = "",
) -> tuple[dict[str, str], list[str]]:
    """Map source keys (with shapes) onto the model's (``expected``). Returns ({model_key: source_key}, skipped
    source keys). Raises ValueError listing every missing, unexpected and mis-shaped tensor."""
    bare = {_bare(k, layout): k for k in source}
    tied_embed = (metadata or {}).get(EMBED_KEY) == LM_HEAD_KEY or layout == "openpi"
    plan: dict[str, str] = {}
    skipped, unexpected, misshaped = [], [], []
    if EMBED_KEY not in bare and LM_HEAD_KEY in bare and tied_embed:
        # openpi's save_model keeps only the lm_head copy of the tied token embedding
        plan["llm.embed_tokens.weight"] = bare.pop(LM_HEAD_KEY)
    for name, key in bare.items():
        mapped = map_key(name)
        if mapped in expected:
            plan[mapped] = key
        elif unused_reason(name, vlm_depth) or unused_reason(mapped, vlm_depth):
            skipped.append(key)
        else:
            unexpected.append(key)
    missing = sorted(k for k in expected if k not in plan)
    for mapped, key in plan.items():
        if tuple(source[key]) != tuple(expected[mapped]):
            misshaped.append(f"{key}: file {list(source[key])} vs model {list(expected[mapped])}")
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("mis-shaped", misshaped), ("missing", missing), ("unexpected", sorted(unexpected))):
            if items:  # a few name the problem; hundreds of shapes on one line bury it (and the hint after them)
                shown = "; ".join(items[:SHOWN]) + (f"; ... ({len(items) - SHOWN} more)" if len(items) > SHOWN else "")
                parts.append(f"{len(items)} {label}: {shown}")
        raise ValueError(f"{where} does not fit the Pi0.5 model: " + " | ".join(parts) + (f". {hint}" if hint else ""))
    return plan, sorted(skipped)


def safetensors_header(file: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Key -> shape and the metadata dict, from the header alone."""
    import struct

    with open(file, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    meta = header.pop("__metadata__", None) or {}
    return {k: tuple(v["shape"]) for k, v in header.items()}, meta


def plan_checkpoint(info: CheckpointInfo, expected: Mapping[str, tuple[int, ...]]) -> tuple[dict[str, str], list[str]]:
    """Check the checkpoint's header against the model's expected shapes before any memory is allocated."""
    shapes, meta = safetensors_header(info.weights)
    hint = ""
    if info.sizes_from_variants:
        hint = (
            "Sizes came from the variant names in config.json; if the checkpoint holds other sizes, set "
            "policy.model_sizes=<json with vlm/expert/vision/vocab_size>"
        )
    return plan_load(
        expected, shapes, info.layout, meta, info.sizes.vlm.depth, where=f"checkpoint {str(info.path)!r}", hint=hint
    )


def copy_weights(model, info: CheckpointInfo, plan: Mapping[str, str]) -> None:
    """Copy the planned tensors into ``model`` (cast to its dtype); the skipped ones are never read."""
    import torch
    from safetensors import safe_open

    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    with safe_open(str(info.weights), framework="pt") as fh, torch.no_grad():
        for name, key in plan.items():
            target = params[name]
            target.copy_(fh.get_tensor(key).to(target.dtype))


def iter_manifest(manifest: Mapping[str, Any]) -> Iterable[tuple[str, tuple[int, ...]]]:
    for key, spec in manifest["params"].items():
        yield key, tuple(spec["shape"])

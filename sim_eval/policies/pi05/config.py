"""Model sizes and checkpoint metadata for Pi0.5, read without importing torch.

Sizes come from the checkpoint's own config (variant names such as ``gemma_2b``), optionally overridden by an explicit
size file: tiny test checkpoints name the real variants while holding tiny tensors, and only an override makes them
loadable (a mismatch otherwise fails at load time naming the tensor and both shapes)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GemmaSizes:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class VisionSizes:
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int = 14
    image_size: int = 224

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class ModelSizes:
    vlm: GemmaSizes
    expert: GemmaSizes
    vision: VisionSizes
    vocab_size: int = 257152
    max_action_dim: int = 32
    rms_norm_eps: float = 1e-6
    layer_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    min_period: float = 4e-3
    max_period: float = 4.0


# the denoise step's implementations (Pi05Engine(kernels=...), policy.kernels): "auto" = triton where it runs
KERNELS = ("auto", "torch", "triton")

GEMMA_VARIANTS = {
    "gemma_2b": GemmaSizes(width=2048, depth=18, mlp_dim=16384, num_heads=8, num_kv_heads=1, head_dim=256),
    "gemma_300m": GemmaSizes(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
}
SIGLIP_SO400M = VisionSizes(width=1152, depth=27, num_heads=16, mlp_dim=4304, patch_size=14, image_size=224)


def variant_sizes(name: str) -> GemmaSizes:
    if name not in GEMMA_VARIANTS:
        raise ValueError(
            f"unknown Gemma variant {name!r}: known {sorted(GEMMA_VARIANTS)}; set policy.model_sizes=<json>"
        )
    return GEMMA_VARIANTS[name]


def full_size(vlm: str = "gemma_2b", expert: str = "gemma_300m") -> ModelSizes:
    return ModelSizes(vlm=variant_sizes(vlm), expert=variant_sizes(expert), vision=SIGLIP_SO400M)


def apply_size_override(sizes: ModelSizes, override: dict[str, Any]) -> ModelSizes:
    """Overlay a size dict (the ``tiny_config.json`` layout: ``vlm``/``expert``/``vision`` dicts, ``vocab_size``...)
    on ``sizes``; unknown keys inside those dicts are ignored so the fixture's own file can be passed as is."""
    changes: dict[str, Any] = {}
    for key, cls in (("vlm", GemmaSizes), ("expert", GemmaSizes), ("vision", VisionSizes)):
        if key in override:
            part = override[key]
            if not isinstance(part, dict):
                raise ValueError(f"model_sizes[{key!r}] must be a dict, got {type(part).__name__}")
            known = {f for f in cls.__dataclass_fields__ if f in part}
            changes[key] = replace(getattr(sizes, key), **{f: int(part[f]) for f in known})
    if "image_resolution" in override and "vision" in changes:
        changes["vision"] = replace(changes["vision"], image_size=int(override["image_resolution"]))
    for key in ("vocab_size", "max_action_dim"):
        if key in override:
            changes[key] = int(override[key])
    for key in ("rms_norm_eps", "layer_norm_eps", "rope_theta", "min_period", "max_period"):
        if key in override:
            changes[key] = float(override[key])
    return replace(sizes, **changes)


def load_size_override(spec: str | dict | None) -> dict[str, Any] | None:
    """A size override: a dict, a JSON file, or ``"pi05"``: the real Pi0.5's sizes (SigLIP So400m, gemma_2b,
    gemma_300m, 224 px), e.g. to time real-size arithmetic with ``random_weights`` behind a small checkpoint."""
    if spec is None or isinstance(spec, dict):
        return spec
    if spec == "pi05":
        sizes = full_size()
        return {
            "vlm": asdict(sizes.vlm),
            "expert": asdict(sizes.expert),
            "vision": asdict(sizes.vision),
            "vocab_size": sizes.vocab_size,
        }
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(f"model_sizes file {str(path)!r} does not exist (expected a JSON file with vlm/expert/vision)")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class CheckpointInfo:
    """Everything about a checkpoint except its tensors."""

    path: Path
    layout: str  # "lerobot" or "openpi"
    weights: Path
    sizes: ModelSizes
    sizes_from_variants: bool  # True when no override was applied (so a shape mismatch hints at model_sizes)
    camera_keys: tuple[str, ...]  # prefix order
    chunk_size: int  # actions the model produces per inference
    n_action_steps: int  # actions returned per inference (<= chunk_size)
    num_steps: int
    max_token_len: int
    state_in_prompt: bool
    tokenizer_name: str | None
    norm: dict[str, Any] = field(default_factory=dict)  # {"state": {...}, "action": {...}, "mode": ..., "formula": ...}


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


def check_safetensors(file: Path) -> None:
    """Raise ValueError naming ``file`` unless it is a whole safetensors file: an 8-byte header length, a JSON header
    of that length, and tensor data that ends where the file does. Reading a garbage file's "header length" as a size
    asks for exabytes; a truncated one fails deep in the loader with a message that names no file."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        head = handle.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or 8 + n > size or n > 100 << 20:  # headers of real checkpoints are well under 100 MiB
            raise ValueError(f"{file} is not a safetensors file ({size} bytes, no valid header): re-copy it")
        header = handle.read(n)
    try:
        entries = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{file} is not a safetensors file (its header is not JSON): re-copy it") from None
    if not isinstance(entries, dict):
        raise ValueError(f"{file} is not a safetensors file (its header is not a JSON object): re-copy it")
    ends = [e["data_offsets"][1] for k, e in entries.items() if k != "__metadata__" and isinstance(e, dict)]
    if max(ends, default=0) != size - 8 - n:
        raise ValueError(
            f"{file} is truncated or damaged: its header describes {max(ends, default=0)} bytes of tensors, the file "
            f"holds {size - 8 - n}: re-copy it"
        )


def detect_layout(path: Path) -> str:
    """``lerobot`` or ``openpi``; raises ValueError with one line naming the path otherwise."""
    expected = (
        "a LeRobot Pi0.5 directory (config.json with type 'pi05' + model.safetensors) or an openpi PyTorch "
        "Pi0.5 directory (config.json with paligemma_variant + model.safetensors)"
    )
    if not path.is_dir():
        raise ValueError(f"checkpoint {str(path)!r} is not a directory: expected {expected}")
    cfg_path, weights = path / "config.json", path / "model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise ValueError(f"checkpoint {str(path)!r} lacks config.json or model.safetensors: expected {expected}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        msg = f"checkpoint {str(path)!r} has an unreadable config.json ({exc}): expected {expected}"
        raise ValueError(msg) from exc
    if not isinstance(cfg, dict):
        raise ValueError(f"checkpoint {str(path)!r} config.json is not an object: expected {expected}")
    if cfg.get("type") == "pi05":
        return "lerobot"
    if "type" not in cfg and "paligemma_variant" in cfg and "action_horizon" in cfg:
        return "openpi"
    kind = cfg.get("type", "unknown")
    raise ValueError(f"checkpoint {str(path)!r} is not a Pi0.5 checkpoint (config type {kind!r}): expected {expected}")

"""Structured config of ``python -m sim_eval.train`` (``sim_eval/conf/train.yaml``): one dataclass per part, checked in
``__post_init__`` so a bad value is one line before any data is read."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from sim_eval.config import ConfigError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class GemmaPart:
    width: int = 256
    depth: int = 4
    mlp_dim: int = 768
    num_heads: int = 4
    num_kv_heads: int = 1
    head_dim: int = 64


@dataclass
class VisionPart:
    width: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_dim: int = 768
    patch_size: int = 16
    image_size: int = 128


@dataclass
class ModelConfig:
    """The small Pi0.5: the same network as the real one (``Pi05Model``) at these sizes."""

    vision: VisionPart = field(default_factory=VisionPart)
    vlm: GemmaPart = field(default_factory=GemmaPart)
    expert: GemmaPart = field(default_factory=lambda: GemmaPart(width=128, mlp_dim=512))
    chunk_size: int = 10
    max_action_dim: int = 32
    max_token_len: int = 48

    def __post_init__(self) -> None:
        v = self.vision
        _require(v.image_size % v.patch_size == 0,
                 f"model.vision.image_size={v.image_size} must be a multiple of patch_size={v.patch_size}")  # fmt: skip
        _require(v.width % v.num_heads == 0, f"model.vision.width={v.width}: must be a multiple of num_heads")
        for name, part in (("vlm", self.vlm), ("expert", self.expert)):
            _require(part.depth >= 1 and part.width >= 8, f"model.{name}: depth >= 1 and width >= 8 needed")
            _require(part.num_heads % part.num_kv_heads == 0, f"model.{name}.num_heads must divide by num_kv_heads")
        for key in ("depth", "head_dim", "num_kv_heads"):
            same = getattr(self.vlm, key) == getattr(self.expert, key)
            _require(same, f"model.vlm.{key} and model.expert.{key} must be equal (the expert reads the VLM's K/V)")
        _require(self.chunk_size >= 1, f"model.chunk_size={self.chunk_size}: must be >= 1")
        _require(self.max_action_dim >= 7, f"model.max_action_dim={self.max_action_dim}: must be >= 7")


@dataclass
class OptimConfig:
    """Defaults: the shipped checkpoint's run (its 6,163 steps were what a 495 s budget on one H200 fitted)."""

    steps: int = 6163
    batch_size: int = 512
    lr: float = 4e-4
    final_lr: float = 1e-5
    warmup: int = 300
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    noise_samples: int = 2  # (noise, time) draws per prefix and step

    def __post_init__(self) -> None:
        _require(self.steps >= 1, f"optim.steps={self.steps}: must be >= 1")
        _require(self.batch_size >= 1, f"optim.batch_size={self.batch_size}: must be >= 1")
        _require(self.lr > 0 and self.final_lr >= 0, "optim.lr must be > 0 and optim.final_lr >= 0")
        _require(0 <= self.warmup < self.steps or self.steps == 1, f"optim.warmup={self.warmup}: must be < steps")
        _require(0.0 <= self.ema_decay < 1.0, f"optim.ema_decay={self.ema_decay}: allowed are [0, 1)")
        _require(len(self.betas) == 2, f"optim.betas={list(self.betas)}: needs 2 values")
        _require(self.noise_samples >= 1, f"optim.noise_samples={self.noise_samples}: must be >= 1")


@dataclass
class AugmentConfig:
    """Per sample and view: a random shift of up to ``shift`` pixels (edge-replicated pad, then crop back) and
    brightness / contrast / saturation jitter by up to the given fractions."""

    shift: int = 8
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        _require(self.shift >= 0, f"augment.shift={self.shift}: must be >= 0")
        for key in ("brightness", "contrast", "saturation"):
            _require(0.0 <= getattr(self, key) < 1.0, f"augment.{key}={getattr(self, key)}: allowed are [0, 1)")


@dataclass
class TrainConfig:
    data: str = MISSING  # a training set directory (python -m sim_eval.export)
    out: str | None = None  # None = Hydra's run dir
    seed: int = 0
    device: str = "auto"
    compile: bool = True  # torch.compile the training step on CUDA
    save_at: list[int] = field(default_factory=lambda: [3000, 6163])  # EMA checkpoints at these steps (and the last)
    checkpoint_dtype: str = "bfloat16"  # storage dtype of the written weights (the engine casts to its own)
    log_every: int = 100
    # a compute budget: after 200 timed steps the schedule is shortened (once) to end within it; a hard stop with the
    # EMA weights saved if it still runs over
    time_limit_s: float | None = None
    # a checkpoint written by sim_eval.train to start from (its weights, tokenizer and normalizer; a fresh optimizer):
    # sim_eval/training/warm_start.py
    init_from: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                 f"device={self.device!r}: allowed are auto, cpu, cuda, cuda:N")  # fmt: skip
        bad = [s for s in self.save_at if not 1 <= s <= self.optim.steps]
        _require(not bad, f"save_at has steps {bad}: allowed are 1..optim.steps={self.optim.steps}")
        _require(self.log_every >= 1, f"log_every={self.log_every}: must be >= 1")
        _require(self.checkpoint_dtype in ("float32", "bfloat16"),
                 f"checkpoint_dtype={self.checkpoint_dtype!r}: allowed are float32, bfloat16")  # fmt: skip


def register_train_config() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)

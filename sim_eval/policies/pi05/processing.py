"""Pre- and post-processing as each checkpoint expects: images, prompt, tokenizer, state and action normalization."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from sim_eval.policies.pi05.config import CheckpointInfo

OPENPI_TOKENIZER = "big_vision/paligemma_tokenizer.model"
DEFAULT_HF_TOKENIZER = "google/paligemma-3b-pt-224"


# ------------------------------------------------------------------------------------------------------------ images
def resize_with_pad(image: np.ndarray, size: int = 224):
    """uint8 (H, W, 3) -> float32 torch (3, size, size) in [0, 1].

    LeRobot's path: scale to [0, 1], bilinear resize (align_corners=False) keeping the aspect ratio so the image fits,
    clamp, then centred zero padding. A frame already at ``size`` passes through untouched."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return x
    ratio = max(w / size, h / size)
    rh, rw = int(h / ratio), int(w / ratio)
    x = F.interpolate(x[None], size=(rh, rw), mode="bilinear", align_corners=False)[0].clamp(0.0, 1.0)
    top, left = (size - rh) // 2, (size - rw) // 2
    return F.pad(x, (left, size - rw - left, top, size - rh - top), value=0.0)


def to_uint8(image01) -> np.ndarray:
    """Model-input image in [0, 1] (3, H, W) -> uint8 (H, W, 3): what the adaptive refresh compares frames on."""
    return (image01.permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(dtype=__import__("torch").uint8).numpy()


def model_input_u8(image: np.ndarray, size: int) -> np.ndarray:
    """The uint8 (size, size, 3) picture a model of input ``size`` sees of ``image``: what the engine's ``prepare``
    computes (and the adaptive refresh compares), and what demonstrations are recorded as."""
    return to_uint8(resize_with_pad(image, size))


# ------------------------------------------------------------------------------------------------------------ prompt
def clean_task(task: str) -> str:
    return task.strip().replace("_", " ").replace("\n", " ")


def discretize_state(normalized: np.ndarray) -> np.ndarray:
    """256 bins over [-1, 1], not clipped (below -1 gives -1, above +1 gives 255), as the reference does."""
    return np.digitize(normalized, np.linspace(-1, 1, 256 + 1)[:-1]) - 1


def state_prompt(task: str, normalized_state: np.ndarray) -> str:
    bins = " ".join(map(str, discretize_state(normalized_state)))
    return f"Task: {clean_task(task)}, State: {bins};\nAction: "


class PromptTokenizer:
    """PaliGemma SentencePiece tokenizer; ids are BOS + pieces, truncated to ``max_len`` (no padding: the engine
    drops padding instead of computing it)."""

    def __init__(self, model_file: Path, max_len: int):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        self.max_len = max_len
        self.path = model_file
        self._cache: dict[tuple[str, bool], list[int]] = {}

    def encode(self, task: str, state_string: str | None = None) -> list[int]:
        key = (state_string if state_string is not None else task, state_string is not None)
        if key not in self._cache:
            if state_string is not None:
                ids = [self.sp.bos_id()] + self.sp.encode(state_string)
            else:  # openpi: BOS + cleaned task + "\n" encoded separately
                ids = [self.sp.bos_id()] + self.sp.encode(clean_task(task)) + self.sp.encode("\n")
            if len(self._cache) > 4096:  # state prompts change every frame; keep the memo bounded
                self._cache.clear()
            self._cache[key] = ids[: self.max_len]
        return self._cache[key]


def find_tokenizer(configured: str | None, hf_name: str | None, checkpoint_dir: Path | None = None) -> Path:
    """Locate ``tokenizer.model`` offline: a configured file or directory; ``hf_name`` as a directory inside the
    checkpoint (a checkpoint that ships its own tokenizer) or on disk; the Hugging Face cache of ``hf_name`` (default
    PaliGemma); then openpi's cache. Raises ValueError naming every place looked at."""
    tried: list[str] = []
    if configured:
        p = Path(configured).expanduser()
        cand = p / "tokenizer.model" if p.is_dir() else p
        if cand.is_file():
            return cand
        raise ValueError(
            f"tokenizer {configured!r} not found (expected a SentencePiece tokenizer.model or a directory holding one)"
        )
    names = [n for n in (hf_name, DEFAULT_HF_TOKENIZER) if n and "/" in n and not Path(n).is_dir()]
    local = (
        [Path(checkpoint_dir) / hf_name]
        if hf_name and checkpoint_dir and (Path(checkpoint_dir) / hf_name).is_dir()
        else []
    )
    local += [Path(n) for n in (hf_name,) if n and Path(n).is_dir()]
    for d in local:
        tried.append(str(d / "tokenizer.model"))
        if (d / "tokenizer.model").is_file():
            return d / "tokenizer.model"
    hub_dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        hub_dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub_dirs.append(hf_home / "hub")
    for hub in hub_dirs:
        for name in dict.fromkeys(names):
            repo = hub / ("models--" + name.replace("/", "--")) / "snapshots"
            tried.append(str(repo / "*" / "tokenizer.model"))
            for cand in sorted(repo.glob("*/tokenizer.model")) if repo.is_dir() else []:
                return cand
    openpi_home = Path(os.environ.get("OPENPI_DATA_HOME", Path.home() / ".cache" / "openpi"))
    cand = openpi_home / OPENPI_TOKENIZER
    tried.append(str(cand))
    if cand.is_file():
        return cand
    raise ValueError(
        "PaliGemma tokenizer not found offline; looked at "
        + ", ".join(tried)
        + "; set policy.tokenizer=<path to tokenizer.model or its directory> (e.g. from google/paligemma-3b-pt-224)"
    )


# ----------------------------------------------------------------------------------------------------- normalization
class Normalizer:
    """State normalization and action un-normalization from a checkpoint's stats.

    ``formula`` picks the reference: ``lerobot`` (QUANTILES: ``2*(x-q01)/(q99-q01)-1``, a zero range replaced by eps;
    MEAN_STD: ``(x-mean)/(std+eps)``) or ``openpi`` (quantile with ``+1e-6`` in the range)."""

    def __init__(self, norm: dict[str, Any]):
        self.formula = norm["formula"]
        self.eps = float(norm.get("eps", 1e-8))
        self.state_mode, self.action_mode = norm["state_mode"], norm["action_mode"]
        self.state = {k: np.asarray(v, dtype=np.float32) for k, v in norm["state"].items()}
        self.action = {k: np.asarray(v, dtype=np.float32) for k, v in norm["action"].items()}
        for name, mode, stats in (("state", self.state_mode, self.state), ("action", self.action_mode, self.action)):
            need = {"QUANTILES": ("q01", "q99"), "MEAN_STD": ("mean", "std"), "IDENTITY": ()}.get(mode)
            if need is None:
                raise ValueError(f"unsupported {name} normalization {mode!r} (QUANTILES, MEAN_STD, IDENTITY)")
            if any(k not in stats for k in need):
                raise ValueError(f"{name} normalization {mode} needs stats {need}, checkpoint has {sorted(stats)}")

    def _normalize(self, x: np.ndarray, mode: str, stats: dict[str, np.ndarray]) -> np.ndarray:
        """One formula for state and actions (stats truncated to x's last dimension)."""
        x = np.asarray(x, dtype=np.float32)
        d = x.shape[-1]
        if mode == "IDENTITY":
            return x
        if mode == "MEAN_STD":
            return (x - stats["mean"][:d]) / (stats["std"][:d] + np.float32(self.eps))
        q01, q99 = stats["q01"][:d], stats["q99"][:d]
        if self.formula == "openpi":
            return (x - q01) / (q99 - q01 + np.float32(1e-6)) * np.float32(2.0) - np.float32(1.0)
        denom = q99 - q01
        denom = np.where(denom == 0, np.float32(self.eps), denom).astype(np.float32)
        return np.float32(2.0) * (x - q01) / denom - np.float32(1.0)

    def normalize_state(self, x: np.ndarray) -> np.ndarray:
        return self._normalize(x, self.state_mode, self.state)

    def normalize_actions(self, x: np.ndarray) -> np.ndarray:
        """The inverse of ``unnormalize_actions`` (what a training target is)."""
        return self._normalize(x, self.action_mode, self.action)

    def unnormalize_actions(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        a = self.action
        d = x.shape[-1]
        if self.action_mode == "IDENTITY":
            return x
        if self.action_mode == "MEAN_STD":
            return x * (a["std"][:d] + np.float32(self.eps)) + a["mean"][:d]
        q01, q99 = a["q01"][:d], a["q99"][:d]
        if self.formula == "openpi":
            return (x + np.float32(1.0)) / np.float32(2.0) * (q99 - q01 + np.float32(1e-6)) + q01
        denom = q99 - q01
        denom = np.where(denom == 0, np.float32(self.eps), denom).astype(np.float32)
        return (x + np.float32(1.0)) * denom / np.float32(2.0) + q01


# ----------------------------------------------------------------------------------------------------- observations
@dataclass(frozen=True)
class Prepared:
    """One observation after pre-processing. ``images_u8``: view -> uint8 (S, S, 3) model-input image (S: the
    checkpoint's input size, 224 for Pi0.5, 128 for the embedded model); empty where the pixel MAE was measured
    elsewhere (a batched server's worker)."""

    images_u8: dict[str, np.ndarray]
    images: torch.Tensor  # (n_present, 3, S, S) float32 in [-1, 1], checkpoint camera order, on CPU
    tokens: list[int]


class Preparer:
    """Observation -> ``Prepared``: the checkpoint's cameras resized with padding (``camera_map``: our view -> its
    camera key), the prompt (with the normalized, discretized state where the checkpoint wants it) tokenized. It
    holds no model: the engine runs it, and so do simulator workers of the batched server (it pickles)."""

    def __init__(
        self, info: CheckpointInfo, camera_map: dict[str, str], normalizer: Normalizer, tokenizer: PromptTokenizer
    ):
        self.camera_keys, self.size = tuple(info.camera_keys), info.sizes.vision.image_size
        self.state_in_prompt = info.state_in_prompt
        self.camera_map = dict(camera_map)
        self.key_to_view = {k: v for v, k in camera_map.items()}
        self.normalizer, self.tokenizer = normalizer, tokenizer

    def __call__(self, obs: dict[str, Any]) -> Prepared:
        import torch

        images = obs.get("images", {})
        u8, tensors = {}, []
        for key in self.camera_keys:
            view = self.key_to_view.get(key)
            if view is None or view not in images:
                continue  # absent camera: masked in the reference, so simply not part of the prefix
            x01 = resize_with_pad(np.asarray(images[view]), self.size)
            u8[view] = to_uint8(x01)
            tensors.append(x01 * 2.0 - 1.0)
        if not tensors:
            raise ValueError(
                f"no camera of the checkpoint ({list(self.camera_keys)}) is in the observation "
                f"(views {sorted(images)}; camera_map {self.camera_map})"
            )
        instruction = str(obs.get("instruction", ""))
        if self.state_in_prompt:
            normalized = self.normalizer.normalize_state(np.asarray(obs["state"], dtype=np.float32))
            tokens = self.tokenizer.encode(instruction, state_prompt(instruction, normalized))
        else:
            tokens = self.tokenizer.encode(instruction)
        return Prepared(u8, torch.stack(tensors), tokens)

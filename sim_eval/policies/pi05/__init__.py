"""Pi0.5 for sim_eval: a native PyTorch engine (``engine``), checkpoint loading and the policy factory.

Importing this package pulls in no torch: ``check_checkpoint`` runs in config validation, where bad input must fail in
well under a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def check_checkpoint(path: str) -> None:
    """Raise ``ValueError`` (one line naming the path and what is expected) unless ``path`` is a LeRobot or openpi
    Pi0.5 checkpoint directory with a whole safetensors file of weights. Reads ``config.json`` and the weights'
    header, not the weights."""
    from sim_eval.policies.pi05.config import check_safetensors, detect_layout

    path = Path(str(path)).expanduser()
    detect_layout(path)
    check_safetensors(path / "model.safetensors")


def chunk_length(path: str) -> int:
    """Actions the checkpoint returns per inference (``n_action_steps``), from its config; no tensors read."""
    from sim_eval.policies.pi05.checkpoint import read_checkpoint_info

    return read_checkpoint_info(Path(str(path)).expanduser()).n_action_steps


def build_policy(
    checkpoint: str | None = None,
    cache: str = "full",
    replan_steps: int = 5,
    refresh: dict[str, Any] | None = None,
    engine: str = "native",
    device: str = "auto",
    dtype: str = "float32",
    tokenizer: str | None = None,
    model_sizes: str | None = None,
    camera_map: dict[str, str] | None = None,
    shadow: bool = False,
    num_steps: int = 10,
    cpu_threads: int | None = 1,
    kernels: str = "auto",
    pad_multiple: int = 1,
    random_weights: bool = False,
):
    """The Hydra ``_target_``: a ``CacheController``-wrapped Pi0.5 policy.

    ``checkpoint``: a LeRobot or openpi Pi0.5 directory; None = the embedded small model (``checkpoints``);

    ``cache``: ``full`` | ``cache<N>`` | ``adaptive<N>`` | ``replay<N>`` (a ``full`` policy wrapped in
    ``sim_eval.policies.replay.ReplayPolicy``, which plays ``replan_steps`` more actions of the stored chunk between
    full inferences; refused when N x ``replan_steps`` exceeds the chunk);
    ``refresh``: ``{"threshold": 6.5, "views": [...]}`` for adaptive modes;
    ``engine``: ``native`` (this package) or ``flashrt`` (the FlashRT frontend, CUDA only);
    ``model_sizes``: JSON size override for checkpoints whose tensors differ from their named variants;
    ``cpu_threads``: torch intra-op CPU threads (None leaves torch's default);
    ``kernels``: the denoise step's implementation, ``torch``, ``triton`` (CUDA, bf16) or ``auto``;
    ``pad_multiple``: with CUDA graphs, pad prompts to a multiple of this many tokens (1: exact lengths);
    ``random_weights``: the checkpoint's processors and tokenizer with random weights of its (or ``model_sizes``')
    sizes -- ``model_sizes=pi05`` gives the real Pi0.5's, to measure real-size throughput in closed loop;
    ``camera_map``: our view name -> checkpoint camera key; ``shadow``: also compute, on cached frames, what a full
    frame would have given (for analysis; not executed, not timed)."""
    arguments = dict(locals())  # first statement: exactly this call's arguments (the inner policy of replay<N>)
    from sim_eval.checkpoints import resolve
    from sim_eval.policies.cache import CacheController
    from sim_eval.policies.cache_mode import DEFAULT_THRESHOLD, CacheMode

    mode = CacheMode.parse(cache)
    if mode.kind == "replay":
        from sim_eval.policies.replay import ReplayPolicy

        inner = build_policy(**{**arguments, "cache": "full"})
        return ReplayPolicy(inner, mode, replan_steps, chunk_length(resolve(checkpoint)))
    camera_map = camera_map or None  # {} (the config's default) = the checkpoint's own camera order
    refresh = dict(refresh or {})
    unknown = set(refresh) - {"threshold", "views"}
    if unknown:
        raise ValueError(f"refresh: unknown keys {sorted(unknown)} (expected threshold, views)")
    checkpoint = resolve(checkpoint)
    check_checkpoint(checkpoint)
    if engine == "native":
        import torch

        from sim_eval.policies.pi05.engine import load_engine

        if cpu_threads is not None:
            # Simulation runs beside the model (and often several workers per machine): with more than one intra-op
            # thread, torch's spinning workers fight the renderer and other processes; measured 57 ms per tiny-model
            # inference at 1 thread vs ~2 s at 2 threads on a loaded 2-core machine.
            torch.set_num_threads(int(cpu_threads))

        impl = load_engine(
            checkpoint,
            model_sizes=model_sizes,
            device=device,
            dtype=dtype,
            tokenizer=tokenizer,
            camera_map=camera_map,
            num_steps=num_steps,
            kernels=kernels,
            pad_multiple=pad_multiple,
            random_weights=random_weights,
        )
    elif engine == "flashrt":
        from sim_eval.policies.flashrt import FlashRTPolicy

        if shadow:
            raise ValueError("shadow=True needs the native engine (FlashRT exposes no prefix cache to compare with)")
        return FlashRTPolicy.from_checkpoint(
            checkpoint, mode=mode, refresh=refresh, tokenizer=tokenizer, camera_map=camera_map, num_steps=num_steps
        )
    else:
        raise ValueError(f"unknown engine {engine!r}: expected 'native' or 'flashrt'")
    threshold = float(refresh.get("threshold", DEFAULT_THRESHOLD))
    return CacheController(impl, mode, threshold=threshold, views=refresh.get("views"), shadow=shadow)


__all__ = ["build_policy", "check_checkpoint", "chunk_length"]

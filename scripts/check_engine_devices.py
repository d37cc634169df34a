"""Do the engine's CUDA variants give the CPU's actions? One checkpoint, the same observation and noise, every variant:
CPU fp32 (the reference), then on CUDA: eager fp32, compiled fp32 (no graphs), graphs + compile fp32 (the default on
CUDA), and the default in bf16. Prints the max |difference| of the prefix keys and of the un-normalized action chunk
against the reference, for a few observations (random images and states: this checks arithmetic, not behaviour).

    python scripts/check_engine_devices.py [--checkpoint DIR] [--obs 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_eval.policies.pi05.engine import load_engine  # noqa: E402

VARIANTS = {
    "cpu-fp32": dict(device="cpu", dtype="float32"),
    "cuda-fp32-eager": dict(device="cuda", dtype="float32", cuda_graphs=False, compile=False),
    "cuda-fp32-compiled": dict(device="cuda", dtype="float32", cuda_graphs=False, compile=True),
    "cuda-fp32-graphs-eagerstep": dict(device="cuda", dtype="float32", cuda_graphs=True, compile=False),
    "cuda-fp32-default": dict(device="cuda", dtype="float32"),
    "cuda-bf16-default": dict(device="cuda", dtype="bfloat16"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "sim_eval" / "checkpoints" / "pi05_small_libero"))
    p.add_argument("--obs", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    observations = [
        {
            "images": {v: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for v in ("agentview", "wrist")},
            "state": rng.normal(0, 0.3, 8).astype(np.float32),
            "instruction": "pick up the alphabet soup and place it in the basket",
        }
        for _ in range(args.obs)
    ]
    reference = None
    for name, kwargs in VARIANTS.items():
        if kwargs["device"] == "cuda" and not torch.cuda.is_available():
            print(f"{name}: skipped (no CUDA)")
            continue
        try:
            engine = load_engine(args.checkpoint, **kwargs)
        except Exception as exc:  # a variant that cannot be built is reported and the others still run
            print(f"{name}: cannot build ({type(exc).__name__}: {exc})")
            continue
        out = []
        for k, obs in enumerate(observations):
            noise = engine.sample_noise(torch.Generator().manual_seed(k))
            cache = engine.encode_prefix(obs)
            keys = cache.keys[..., : cache.n_valid, :].float().cpu()
            out.append((keys, engine.denoise(cache, noise)))
        if reference is None:
            reference = out
            print(f"{name}: reference; kernels={engine.kernels}; actions[0] row 0 = {np.round(out[0][1][0], 4)}")
            continue
        dk = max(float((a[0] - b[0]).abs().max()) for a, b in zip(out, reference, strict=True))
        da = max(float(np.abs(a[1] - b[1]).max()) for a, b in zip(out, reference, strict=True))
        print(f"{name}: kernels={engine.kernels}; max |d keys| {dk:.3g}, max |d actions| {da:.3g}")
        del engine
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

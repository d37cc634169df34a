"""Batched against batch-1 Pi0.5 inference on one device: how far the actions differ, and what a batch costs.

For B in ``--batches``: B observations with different prompts (so different prefix lengths), random images and
states, and fixed noise per slot. The batch-1 reference runs ``encode_prefix`` + ``denoise`` per slot; the batched
path ``encode_prefix_batch`` + ``denoise_batch`` (``sim_eval.policies.pi05.batched``, what ``eval.server=batched``
runs: under ``kernels=triton`` the Triton expert kernels over the batch). Prints per B: max |Δaction| batched vs
batch-1 (and with the batched prefix but batch-1 denoise, to tell the two halves apart), the median time of a batched
prefix and a batched denoise (after warm-up, synchronized) against a batch-1 denoise, hence the engine's ceiling in
observations/s for full frames (prefix + denoise) and cached frames (denoise only), and the GPU memory torch peaked at.

    python scripts/check_batched.py --device cuda --dtype bfloat16 --model-sizes pi05 --random-weights
    python scripts/check_batched.py --device cuda --dtype bfloat16 --model-sizes pi05 --random-weights --kernels torch
    python scripts/check_batched.py --device cuda --dtype bfloat16 --model-sizes pi05 --random-weights --baseline

On the CPU in fp32 (``tests/test_bench_scripts.py`` runs it on the fixtures' tiny model) batched equals batch 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_engine import time_calls  # noqa: E402

from sim_eval.checkpoints import path as embedded_checkpoint  # noqa: E402
from sim_eval.policies.pi05.batched import _velocity, denoise_batch, encode_prefix_batch  # noqa: E402
from sim_eval.policies.pi05.engine import Pi05Engine, load_engine  # noqa: E402

PROMPTS = [
    "pick up the alphabet soup and place it in the basket",
    "pick up the ketchup and place it in the basket",
    "pick up the chocolate pudding and place it in the basket",
    "put both the alphabet soup and the tomato sauce in the basket",
]


def observations(n: int, rng: np.random.Generator) -> list[dict]:
    return [
        {
            "images": {v: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for v in ("agentview", "wrist")},
            "state": rng.normal(size=8).astype(np.float32),
            "instruction": PROMPTS[i % len(PROMPTS)],
        }
        for i in range(n)
    ]


def timed(fn, reps: int) -> float:
    """Median ms of ``reps`` synchronized calls (the first of each shape, which captures its graph, ran before)."""
    return statistics.median(time_calls(lambda _: fn(), 0, reps))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(embedded_checkpoint()))
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--model-sizes", default=None)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--kernels", default="auto", help="the engine's denoise kernels: auto, torch or triton")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--baseline", action="store_true",
                   help="also time the batched denoise as it ran before the batched Triton step: the model's eager "
                        "torch ops under CUDA graphs (an engine on the same weights)")  # fmt: skip
    args = p.parse_args()
    engine = load_engine(args.checkpoint, model_sizes=args.model_sizes, random_weights=args.random_weights,
                         tokenizer=args.tokenizer, device=args.device, dtype=args.dtype, max_graphs=64,
                         kernels=args.kernels)  # fmt: skip
    step = type(getattr(_velocity(engine), "__self__", None)).__name__
    print(f"engine: {args.device} {args.dtype}, kernels {engine.kernels} (batched step: {step}), graphs "
          f"{engine.cuda_graphs}, sizes {args.model_sizes or 'checkpoint'}, torch {torch.__version__}",
          flush=True)  # fmt: skip
    cuda = engine.device.type == "cuda"
    eager = None
    if args.baseline:
        eager = Pi05Engine(engine.info, device=args.device, dtype=args.dtype, model=engine.model, load=False,
                           tokenizer_obj=engine.tokenizer, kernels="torch", compile=False, max_graphs=64)  # fmt: skip
    rng = np.random.default_rng(0)
    for b in args.batches:
        if cuda:  # the peak printed is this batch size's
            torch.cuda.reset_peak_memory_stats(engine.device)
        obs = observations(b, rng)
        preps = [engine.prepare(o) for o in obs]
        noises = [torch.randn(engine.noise_shape, generator=torch.Generator().manual_seed(i)) for i in range(b)]
        ref_caches = [engine.encode_prefix(pr) for pr in preps]
        ref = [engine.denoise(c, n) for c, n in zip(ref_caches, noises, strict=True)]
        caches = encode_prefix_batch(engine, preps)
        got = denoise_batch(engine, caches, noises)
        mixed = [engine.denoise(c, n) for c, n in zip(caches, noises, strict=True)]
        d_all = max(float(np.abs(g - r).max()) for g, r in zip(got, ref, strict=True))
        d_prefix = max(float(np.abs(m - r).max()) for m, r in zip(mixed, ref, strict=True))
        scale = max(float(np.abs(r).max()) for r in ref)
        prefix_ms = timed(lambda p=preps: encode_prefix_batch(engine, p), args.reps)
        denoise_ms = timed(lambda c=caches, n=noises: denoise_batch(engine, c, n), args.reps)
        one = (preps[0], noises[0])
        one_ms = timed(lambda o=one: engine.denoise(engine.encode_prefix(o[0]), o[1]), args.reps)
        one_denoise_ms = timed(lambda c=ref_caches[0], n=noises[0]: engine.denoise(c, n), args.reps)
        peak = f"{torch.cuda.max_memory_allocated(engine.device) / 2**20:.0f} MiB" if cuda else "-"
        base = ""
        if eager is not None:
            before = denoise_batch(eager, caches, noises)
            d_base = max(float(np.abs(g - r).max()) for g, r in zip(before, got, strict=True))
            base_ms = timed(lambda c=caches, n=noises: denoise_batch(eager, c, n), args.reps)
            base = f"; baseline (eager torch step) denoise {base_ms:.2f} ms per batch, max|Δa| vs batched {d_base:.2e}"
        print(
            f"B={b:2d}: max|Δa| batched vs batch-1 {d_all:.2e} (batched prefix + batch-1 denoise {d_prefix:.2e}; "
            f"|a| max {scale:.2f}); prefix {prefix_ms:.2f} ms, denoise {denoise_ms:.2f} ms per batch "
            f"({denoise_ms / b:.2f} ms a slot; batch-1 denoise {one_denoise_ms:.2f} ms); "
            f"ceiling full {b / (prefix_ms + denoise_ms) * 1000:.0f} obs/s, cached {b / denoise_ms * 1000:.0f} obs/s; "
            f"batch-1 full frame {one_ms:.2f} ms; torch peak {peak}{base}",
            flush=True,
        )


if __name__ == "__main__":
    main()

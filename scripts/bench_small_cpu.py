"""CPU latency of a Pi0.5 checkpoint through the evaluator's engine: full frame (prefix + denoise) and cached frame
(denoise against a kept prefix), one intra-op thread (as ``policy.cpu_threads=1`` runs it beside the simulator).

    python scripts/bench_small_cpu.py --checkpoint sim_eval/checkpoints/pi05_small_libero --iters 200

Prints p50 / p95 / mean in ms and the parameter count; with ``--json`` also writes them to a file."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from sim_eval.policies.pi05.engine import load_engine

    torch.set_num_threads(args.threads)
    engine = load_engine(str(args.checkpoint), device="cpu", dtype="float32")
    rng = np.random.default_rng(0)
    obs = {
        "images": {v: rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for v in ("agentview", "wrist")},
        "state": np.zeros(8, np.float32),
        "instruction": "pick up the alphabet soup and place it in the basket",
    }
    noise = engine.sample_noise(torch.Generator().manual_seed(0))

    def full():
        engine.denoise(engine.encode_prefix(engine.prepare(obs)), noise)

    cache = engine.encode_prefix(engine.prepare(obs))

    def cached():
        engine.prepare(obs)  # a cached frame still pre-processes its images (the adaptive rule reads them)
        engine.denoise(cache, noise)

    result = {"checkpoint": str(args.checkpoint), "threads": args.threads,
              "params": sum(p.numel() for p in engine.model.parameters())}  # fmt: skip
    for name, fn in (("full", full), ("cached", cached)):
        for _ in range(args.warmup):
            fn()
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        result[name] = {"p50_ms": round(float(np.percentile(times, 50)), 2),
                        "p95_ms": round(float(np.percentile(times, 95)), 2),
                        "mean_ms": round(float(np.mean(times)), 2)}  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

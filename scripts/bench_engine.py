"""GPU latency benchmark of the native Pi0.5 engine: full frame (prefix + denoise) and cached frame (denoise only).

Random full-size weights (SigLIP So400m + gemma_2b + gemma_300m), bf16, batch 1, two 224x224 views, 10 Euler steps,
chunk 10 and 50. Variants timed in one run on the same weights:

* ``eager``         -- the engine without CUDA graphs or compile (exact prompt length, torch step): the baseline;
* ``triton-exact``  -- the engine's default on CUDA + bf16: the prefix compiled once with a dynamic prompt length
                       and captured per exact prompt length (nothing padded), the denoise loop's step as the Triton
                       kernels of ``sim_eval/policies/pi05/triton_expert.py`` (one kernel per GEMM / attention / norm,
                       chained by programmatic dependent launch), all 10 steps in one CUDA graph;
* ``triton-pad32``  -- the same with the prompt padded to a multiple of 32 and the padding masked by key (one graph
                       serves prompts of similar length: ``pad_multiple=32``, the default before ``a923104``);
* ``triton-persistent-pad32`` -- the padded variant with the step as one persistent launch (``schedule="persistent"``);
* ``graph-pad32`` / ``graph-exact`` -- the torch step compiled by torch.compile instead of the Triton kernels (the
                       previous default), same graphs.

Each call is timed on the host around ``synchronize`` (what the policy sees, including the image upload, the K/V
clone and the action download); p50/p95 over ``--iters`` calls after ``--warmup``. Optionally (``--fixtures DIR``)
first checks fp32 CUDA-graph parity against the LeRobot fixtures.

    PYTHONUNBUFFERED=1 python3 scripts/bench_engine.py --iters 300 --out $OUT/bench.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_eval.policies.pi05.config import CheckpointInfo, apply_size_override, full_size  # noqa: E402
from sim_eval.policies.pi05.engine import DTYPES, Pi05Engine, Prepared, build_model, randomize_weights  # noqa: E402

CAMERAS = ("observation.images.base_0_rgb", "observation.images.left_wrist_0_rgb")


class FixedTokens:
    """Stands in for the tokenizer: a fixed prompt of ``n`` ids (a LIBERO instruction is ~15-30 PaliGemma tokens)."""

    def __init__(self, n: int, vocab: int):
        self.ids = [2] + list(np.random.default_rng(0).integers(3, vocab, n - 1))

    def encode(self, task, state_string=None):
        return self.ids


def synthetic_info(chunk: int, sizes) -> CheckpointInfo:
    norm = {"formula": "lerobot", "state_mode": "IDENTITY", "action_mode": "IDENTITY", "state": {}, "action": {}}
    return CheckpointInfo(
        path=Path("random"),
        layout="lerobot",
        weights=Path("random"),
        sizes=sizes,
        sizes_from_variants=True,
        camera_keys=CAMERAS,
        chunk_size=chunk,
        n_action_steps=chunk,
        num_steps=10,
        max_token_len=200,
        state_in_prompt=False,
        tokenizer_name=None,
        norm=norm,
    )


@torch.no_grad()
def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "min_ms": round(float(a.min()), 3),
        "n": int(a.size),
    }


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_calls(fn, warmup: int, iters: int) -> list[float]:
    for i in range(warmup):
        fn(i)
    sync()
    out = []
    for i in range(iters):
        t0 = time.perf_counter()
        fn(i)
        sync()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def make_inputs(n: int, seed: int = 1) -> list[Prepared]:
    rng = np.random.default_rng(seed)
    preps = []
    for _ in range(n):
        imgs = torch.from_numpy(rng.uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32))
        preps.append(Prepared(images_u8={}, images=imgs, tokens=[]))
    return preps


VARIANTS = [  # (name, CUDA graphs, prompt padding multiple, denoise-step kernels, TritonExpert options)
    ("eager", False, 1, "torch", None),
    ("triton-exact", True, 1, "triton", None),
    ("triton-pad32", True, 32, "triton", None),
    ("triton-persistent-pad32", True, 32, "triton", {"schedule": "persistent"}),  # one launch a step
    ("graph-pad32", True, 32, "torch", None),
    ("graph-exact", True, 1, "torch", None),
    ("graph-exact-autotune", True, 1, "torch", None),
]


def bench(args) -> dict:
    dev = torch.device(args.device)
    sizes = full_size()
    if args.sizes is not None:  # plumbing check on small sizes (e.g. the fixtures' tiny_config.json on CPU)
        sizes = apply_size_override(sizes, json.loads(Path(args.sizes).read_text()))
    t0 = time.perf_counter()
    model = build_model(sizes, dev, DTYPES[args.dtype])
    randomize_weights(model)
    model.prepare_inference()
    sync()
    print(
        f"model built + randomized in {time.perf_counter() - t0:.1f} s; "
        f"{sum(p.numel() for p in model.parameters()) / 1e9:.3f} B params (used at inference)",
        flush=True,
    )
    tok = FixedTokens(args.prompt_tokens, sizes.vocab_size)
    card = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    results: dict = {
        "card": card,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "prompt_tokens": args.prompt_tokens,
        "iters": args.iters,
        "warmup": args.warmup,
        "runs": [],
    }
    t_start = time.perf_counter()
    inputs = make_inputs(4)
    noises_by_chunk = {
        c: [torch.randn(1, c, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)] for c in args.chunks
    }
    references: dict[int, torch.Tensor] = {}
    # variants outermost, in priority order, so a --budget-s cut-off only drops the last (optional) ones
    for name, graphs, pad, kernels, triton_options in VARIANTS:
        for chunk in args.chunks:
            info = synthetic_info(chunk, sizes)
            noises = noises_by_chunk[chunk]
            reference = references.get(chunk)
            if name not in args.variants or (graphs and dev.type != "cuda"):
                continue
            if time.perf_counter() - t_start > args.budget_s:
                results["runs"].append({"variant": name, "chunk": chunk, "error": "skipped: --budget-s exhausted"})
                continue
            try:
                eng = Pi05Engine(
                    info,
                    device=args.device,
                    dtype=args.dtype,
                    tokenizer_obj=tok,
                    cuda_graphs=graphs,
                    compile=graphs and not args.no_compile,
                    compile_mode="max-autotune-no-cudagraphs" if name.endswith("autotune") else None,
                    pad_multiple=pad,
                    load=False,
                    model=model,
                    kernels=kernels,
                    triton_options=triton_options,
                )
                preps = [Prepared({}, p.images, tok.ids) for p in inputs]
                iters = args.iters if graphs else args.eager_iters
                t_first = time.perf_counter()
                cache0 = eng.encode_prefix(preps[0])
                acts = eng.denoise_normalized(cache0, noises[0])[0, :, :7].float().cpu()
                if reference is None:
                    reference = references[chunk] = acts
                diff = float((acts - reference).abs().max())
                caches = [eng.encode_prefix(p) for p in preps]
                first_call_s = round(time.perf_counter() - t_first, 1)  # includes compilation and graph capture

                def full(i, eng=eng, preps=preps, noises=noises):
                    c = eng.encode_prefix(preps[i % 4])
                    return eng.denoise_normalized(c, noises[i % 4])[0, :, :7].cpu()

                def cached(i, eng=eng, caches=caches, noises=noises):
                    return eng.denoise_normalized(caches[i % 4], noises[i % 4])[0, :, :7].cpu()

                def prefix_only(i, eng=eng, preps=preps):
                    return eng.encode_prefix(preps[i % 4])

                row = {
                    "variant": name,
                    "kernels": eng.kernels,
                    "chunk": chunk,
                    "prefix_len": int(caches[0].keys.shape[3]),
                    "finite": bool(torch.isfinite(acts).all()),
                    "max_abs_vs_eager": round(diff, 5),
                    "first_call_s": first_call_s,
                    "full": percentiles(time_calls(full, args.warmup, iters)),
                    "cached": percentiles(time_calls(cached, args.warmup, iters)),
                    "prefix_only": percentiles(time_calls(prefix_only, args.warmup, max(iters // 2, 50))),
                }
                # a prompt 7 tokens longer: a new exact length (graph capture) but the same multiple of 32
                longer = Prepared({}, inputs[0].images, tok.ids + tok.ids[1:8])
                t_new = time.perf_counter()
                eng.denoise_normalized(eng.encode_prefix(longer), noises[0]).cpu()
                row["new_length_first_call_s"] = round(time.perf_counter() - t_new, 2)
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
                if args.out is not None:  # keep what is done if a later variant runs past the time limit
                    args.out.write_text(json.dumps(results, indent=2))
            except Exception as exc:  # one failing variant must not lose the others' numbers
                row = {"variant": name, "chunk": chunk, "error": f"{type(exc).__name__}: {exc}"[:500]}
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
                continue
            del eng, caches
    if dev.type == "cuda":
        results["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return results


def check_fixtures(fix: Path) -> dict:
    """fp32 on CUDA with graphs and compile, exact prompt length (the default) and padded, against LeRobot's
    outputs."""
    from sim_eval.policies.pi05.engine import load_engine

    out = {}
    for (case, state), pad in itertools.product((("case_state", True), ("case_nostate", False)), (1, 32)):
        z = np.load(fix / f"{case}.npz")
        eng = load_engine(
            str(fix / "tiny_lerobot"),
            model_sizes=str(fix / "tiny_config.json"),
            tokenizer=str(fix / "tokenizer"),
            device="cuda",
            dtype="float32",
            cuda_graphs=True,
            state_in_prompt=state,
            pad_multiple=pad,
        )
        obs = {
            "images": {"agentview": z["images_uint8"][0], "wrist": z["images_uint8"][1]},
            "state": z["state_raw"],
            "instruction": str(z["prompt_raw"]),
        }
        for _ in range(2):  # second call replays the captured graphs
            cache = eng.encode_prefix(obs)
            got = eng.denoise_normalized(cache, torch.from_numpy(z["noise"])).cpu().numpy()
        out[f"{case} pad{pad}"] = float(np.abs(got - z["actions_normalized"]).max())
    print("fixture parity on CUDA (fp32, graphs), max abs:", out, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--eager-iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--chunks", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--prompt-tokens", type=int, default=48)
    ap.add_argument(
        "--variants",
        nargs="+",
        choices=[v[0] for v in VARIANTS],
        default=["eager", "triton-exact", "triton-pad32", "triton-persistent-pad32", "graph-pad32", "graph-exact"],
    )
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip remaining variants after this many seconds")
    ap.add_argument("--fixtures", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true", help="CUDA graphs without torch.compile")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--sizes", default=None, help="JSON size override (plumbing checks on small models)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_engine.py needs a CUDA GPU (or --device cpu --sizes <tiny json> for a dry run)")
    torch.backends.cuda.matmul.allow_tf32 = False
    report = {"command": " ".join(sys.argv)}
    if args.fixtures is not None:
        report["fixture_parity_cuda_fp32"] = check_fixtures(args.fixtures)
    report.update(bench(args))
    print("\n| variant | chunk | full p50 / p95 ms | cached p50 / p95 ms | prefix p50 ms |")
    print("|---|---|---|---|---|")
    for r in report["runs"]:
        if "error" in r:
            print(f"| {r['variant']} | {r['chunk']} | error: {r['error'][:80]} | | |")
            continue
        print(
            f"| {r['variant']} | {r['chunk']} | {r['full']['p50_ms']} / {r['full']['p95_ms']} | "
            f"{r['cached']['p50_ms']} / {r['cached']['p95_ms']} | {r['prefix_only']['p50_ms']} |"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

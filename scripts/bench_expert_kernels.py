"""Kernel-level benchmark of ``sim_eval.policies.pi05.triton_expert`` on a CUDA GPU (full-size expert, random bf16
weights).

1. Accuracy: ``TritonExpert.velocity`` (both the ``kernels`` and the ``persistent`` schedule) and the torch
   ``Pi05Model.velocity`` (bf16) against the same model in fp32, as ||out - ref|| / ||ref||, on random prefix K/V
   (padded and unpadded) and random x_t.
1b. Whole step (unless ``--no-step``): us per denoise step replayed from a CUDA graph for each schedule (the per-kernel
   one with and without PDL), the torch.compile'd torch step, and a kernel profile; with ``--persistent-sweep``, the
   persistent schedule's settings and ablations (``persistent_sweep``); with ``--kernels-sweep``, the per-kernel
   schedule's defaults against the same kernels without register preloading (``kernels_sweep``).
2. Per-GEMM sweep: every launch configuration in the grid below, for each of the expert's four GEMMs and each chunk,
   against cuBLAS (``F.linear``). Each timing replays a CUDA graph of calls that rotate over enough weight copies
   (> L2) that every call streams its weight from HBM, as in the real loop; reports us per call and the weight
   bandwidth it reaches.
3. Attention: the split-K/V Triton attention against SDPA on the concatenated K/V (what the torch step does).
4. Batches (``--batch-sweep B ...``): the per-kernel step over B slots of different prefix lengths (the batched
   server's denoise), for each ``--max-block-m`` (GEMM rows per program): us per step and per slot against batch 1,
   and the max abs difference of every slot's velocity from its batch-1 velocity.

    PYTHONUNBUFFERED=1 python3 scripts/bench_expert_kernels.py --out $OUT/kernels.json
    PYTHONUNBUFFERED=1 python3 scripts/bench_expert_kernels.py --step-only --persistent-sweep --out $OUT/k.json
    PYTHONUNBUFFERED=1 python3 scripts/bench_expert_kernels.py --step-only --no-step --kernels-sweep --out $OUT/k.json
    PYTHONUNBUFFERED=1 python3 scripts/bench_expert_kernels.py --step-only --no-step --batch-sweep 2 4 8 16 \\
        --out $OUT/k.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_eval.policies.pi05 import triton_expert  # noqa: E402
from sim_eval.policies.pi05.config import full_size  # noqa: E402
from sim_eval.policies.pi05.engine import build_model  # noqa: E402
from sim_eval.policies.pi05.model import Pi05Model  # noqa: E402
from sim_eval.policies.pi05.triton_expert import (  # noqa: E402
    MODE_GELU,
    MODE_PARTIAL,
    MODE_QKV,
    AttnConfig,
    GemmConfig,
    StepLaunch,
    TritonExpert,
    default_configs,
    default_step_configs,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_eval.policies.pi05.engine import randomize_weights as randomize  # noqa: E402


def graph_time_us(fn, calls: int, replays: int = 30) -> float:
    """us per call: ``fn(i)`` for i in range(calls) captured in one CUDA graph, replayed; median over replays."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(calls):
            fn(i)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            fn(i)
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000.0 / calls)
    times.sort()
    return times[len(times) // 2]


def accuracy(model: Pi05Model, model32: Pi05Model, te: TritonExpert, chunk: int, prefix: int, n_valid: int) -> dict:
    dev = model.action_in_proj.weight.device
    e = model.sizes.expert
    g = torch.Generator(device=dev).manual_seed(chunk * 1000 + prefix)
    keys = torch.randn(e.depth, 1, 1, prefix, e.head_dim, device=dev, generator=g).to(torch.bfloat16)
    values = torch.randn(e.depth, 1, 1, prefix, e.head_dim, device=dev, generator=g).to(torch.bfloat16)
    key_mask = None
    if n_valid < prefix:
        key_mask = torch.zeros(1, prefix, dtype=torch.bool, device=dev)
        key_mask[0, :n_valid] = True
    x_t = torch.randn(1, chunk, model.sizes.max_action_dim, device=dev, generator=g)
    mods = model.time_modulations(torch.tensor([0.7], device=dev))
    with torch.inference_mode():
        tri = te.velocity(keys, values, key_mask, n_valid, x_t, mods)
        bf = model.velocity(keys, values, key_mask, n_valid, x_t, mods)
        mods32 = model32.time_modulations(torch.tensor([0.7], device=dev))
        ref = model32.velocity(keys.float(), values.float(), key_mask, n_valid, x_t, mods32).double()

    def rel(a):
        return float((a.double() - ref).norm() / ref.norm())

    return {
        "chunk": chunk,
        "prefix": prefix,
        "n_valid": n_valid,
        "rel_err_triton": rel(tri),
        "schedule": te.schedule,
        "rel_err_torch_bf16": rel(bf),
        "finite": bool(torch.isfinite(tri).all()),
    }


GRID = {
    "block_n": (16, 32),
    "block_k": (64, 128, 256),
    "split_k": (1, 2, 4, 8),
    "num_stages": (3, 4),
    "num_warps": (4,),
}


def sweep_one(te: TritonExpert, name: str, mode: int, ws: list[torch.Tensor], chunk: int) -> list[dict]:
    dev, copies = te.cos.device, len(ws)
    shape = ws[0].shape
    mbytes = shape[0] * shape[1] * 2
    x = torch.randn(chunk, shape[1], device=dev, dtype=torch.bfloat16)
    q = torch.empty(chunk, te.heads * te.head_dim, device=dev, dtype=torch.bfloat16)
    ks = torch.empty(chunk, te.head_dim, device=dev, dtype=torch.bfloat16)
    vs = torch.empty_like(ks)
    act = torch.empty(chunk, te.mlp_dim, device=dev, dtype=torch.bfloat16)
    pos = torch.tensor([560], device=dev)
    us = graph_time_us(lambda i: F.linear(x, ws[i % copies]), copies * 4)
    rows = [{"gemm": name, "chunk": chunk, "impl": "cublas", "us": round(us, 2), "tb_s": round(mbytes / us / 1e6, 2)}]
    print(json.dumps(rows[-1]), flush=True)
    splits = GRID["split_k"] if mode == MODE_PARTIAL else (1,)
    for bn, bk, sk, st, nw in itertools.product(
        GRID["block_n"], GRID["block_k"], splits, GRID["num_stages"], GRID["num_warps"]
    ):
        cfg = GemmConfig(block_n=bn, block_k=bk, split_k=sk, num_stages=st, num_warps=nw)

        def call(i, cfg=cfg):
            te._gemm(x, ws[i % copies], cfg, mode, chunk, out=act, qkv=(q, ks, vs), cos_pos=(te.cos, te.sin, pos))

        try:
            us = graph_time_us(call, copies * 4)
        except Exception as exc:  # a configuration that does not tile or does not fit: skip it, say why
            print(f"skip {name} {chunk} {cfg}: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            continue
        rows.append({"gemm": name, "chunk": chunk, "impl": "triton", "cfg": cfg.__dict__, "us": round(us, 2),
                     "tb_s": round(mbytes / us / 1e6, 2)})  # fmt: skip
    best = min((r for r in rows if r["impl"] == "triton"), key=lambda r: r["us"], default=None)
    print("BEST", json.dumps(best), flush=True)
    return rows


def sweep(te: TritonExpert, chunks: list[int], copies: int, only: list[str]) -> list[dict]:
    w = te.weights[0]
    gemms = {"qkv": (w[0].shape, MODE_QKV), "o": (w[1].shape, MODE_PARTIAL),
             "gate_up": (w[2].shape, MODE_GELU), "down": (w[3].shape, MODE_PARTIAL)}  # fmt: skip
    rows = []
    for name, (shape, mode) in gemms.items():
        if name not in only:
            continue
        ws = [torch.randn(shape, device=te.cos.device, dtype=torch.bfloat16) * shape[1] ** -0.5 for _ in range(copies)]
        for chunk in chunks:
            rows += sweep_one(te, name, mode, ws, chunk)
    return rows


def attention_one(te: TritonExpert, chunk: int, prefix: int) -> list[dict]:
    """The split-K/V attention (+ combine) over a grid of launch configurations, against cat + SDPA."""
    dev, hd, nh = te.cos.device, te.head_dim, te.heads
    kp = torch.randn(prefix, hd, device=dev, dtype=torch.bfloat16)
    vp = torch.randn_like(kp)
    ks = torch.randn(chunk, hd, device=dev, dtype=torch.bfloat16)
    vs = torch.randn_like(ks)
    q = torch.randn(chunk * nh, hd, device=dev, dtype=torch.bfloat16)
    o = torch.empty_like(q)
    nv = torch.tensor([prefix], device=dev)

    def sdpa(i):
        k = torch.cat([kp, ks])[None, None]
        v = torch.cat([vp, vs])[None, None]
        return F.scaled_dot_product_attention(q[None, None], k, v)

    rows = [{"chunk": chunk, "prefix": prefix, "impl": "cat+sdpa", "us": round(graph_time_us(sdpa, 16), 2)}]
    print(json.dumps(rows[-1]), flush=True)
    ref = sdpa(0)[0, 0].float()
    params = itertools.product((16, 32), (32, 64), (2, 4, 8, 16), (4, 8))
    main_grid = [AttnConfig(br, bkv, ms, nw) for br, bkv, ms, nw in params]

    def run(cfg: AttnConfig) -> None:
        try:
            # one slot: the kernels' leading axis runs over a batch's slots
            us = graph_time_us(lambda i: te._attention(q[None], kp[None], vp[None], ks[None], vs[None], nv, o[None],
                                                       cfg), 16)  # fmt: skip
        except Exception as exc:  # does not fit (registers / shared memory): skip, say why
            print(f"skip attention {cfg}: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            return
        err = float((o.float() - ref).norm() / ref.norm())
        rows.append({"chunk": chunk, "impl": "triton", "cfg": cfg.__dict__, "us": round(us, 2), "rel_err": err})

    for cfg in main_grid:
        run(cfg)
    top = AttnConfig(**min((r for r in rows if r["impl"] == "triton"), key=lambda r: r["us"])["cfg"])
    for cr, cd in ((1, 256), (2, 128), (8, 64), (16, 256)):  # then the combine kernel's tiling, on the best
        run(AttnConfig(top.block_r, top.block_kv, top.max_split, top.num_warps, top.num_stages, cr, cd))
    best = min((r for r in rows if r["impl"] == "triton"), key=lambda r: r["us"], default=None)
    print("BEST attention", json.dumps(best), flush=True)
    return rows


def step_inputs(model: Pi05Model, chunk: int, prefix: int) -> tuple:
    """Random prefix K/V (bf16), x_t and one step's modulations: the inputs of a velocity call."""
    dev = model.action_in_proj.weight.device
    e = model.sizes.expert
    keys = torch.randn(e.depth, 1, 1, prefix, e.head_dim, device=dev, dtype=torch.bfloat16)
    values = torch.randn_like(keys)
    x_t = torch.randn(1, chunk, model.sizes.max_action_dim, device=dev)
    mods = model.time_modulations(torch.tensor([0.7], device=dev))
    return keys, values, x_t, mods, torch.tensor([prefix], device=dev)


def batch_sweep(model: Pi05Model, chunk: int, prefix: int, batches: list[int], block_ms: list[int]) -> list[dict]:
    """The per-kernel step over B slots whose valid prefixes differ (``prefix`` down to ``prefix`` - 31, padded to
    ``prefix``), for each ``max_block_m``: us per step replayed from a CUDA graph, per slot, and the max abs
    difference of each slot's velocity from its own batch-1 velocity."""
    keys, values, x_t, mods, full = step_inputs(model, chunk, prefix)
    one = TritonExpert(model, schedule="kernels")
    with torch.inference_mode():
        us = graph_time_us(lambda i: one.velocity(keys, values, None, full, x_t, mods), 4)
    rows = [{"chunk": chunk, "slots": 1, "us": round(us, 1)}]
    print(json.dumps(rows[-1]), flush=True)
    for b in batches:
        kb, vb = keys.expand(-1, b, -1, -1, -1).contiguous(), values.expand(-1, b, -1, -1, -1).contiguous()
        xb = torch.randn(b, chunk, model.sizes.max_action_dim, device=keys.device)
        n_valid = torch.tensor([prefix - (7 * s) % 32 for s in range(b)], device=keys.device)
        with torch.inference_mode():
            ref = torch.cat([one.velocity(kb[:, s : s + 1], vb[:, s : s + 1], None, n_valid[s : s + 1], xb[s : s + 1],
                                          mods) for s in range(b)])  # fmt: skip
        inputs = (kb, vb, None, n_valid, xb, mods)
        for mb in block_ms:
            te = TritonExpert(model, schedule="kernels", max_block_m=mb)
            try:
                with torch.inference_mode():
                    diff = float((te.velocity(*inputs) - ref).abs().max())
                    us = graph_time_us(lambda i, te=te, inputs=inputs: te.velocity(*inputs), 4)
                row = {"chunk": chunk, "slots": b, "max_block_m": mb, "us": round(us, 1),
                       "us_per_slot": round(us / b, 1), "max_abs_vs_batch1": diff}  # fmt: skip
            except Exception as exc:  # a tile that does not fit: say why, go on
                row = {"chunk": chunk, "slots": b, "max_block_m": mb, "error": f"{type(exc).__name__}: {exc}"[:300]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def step_times(model: Pi05Model, chunk: int, prefix: int) -> dict:
    """us per velocity call (one denoise step, all 18 layers) replayed from a CUDA graph: Triton with and without
    programmatic dependent launch, and the torch.compile'd torch step."""
    keys, values, x_t, mods, n_valid = step_inputs(model, chunk, prefix)
    persistent = TritonExpert(model, schedule="persistent")
    fns = {
        "persistent": persistent.velocity,
        "kernels_pdl": TritonExpert(model, pdl=True, schedule="kernels").velocity,
        "kernels_no_pdl": TritonExpert(model, pdl=False, schedule="kernels").velocity,
        "torch_compiled": torch.compile(model.velocity, dynamic=False),
    }
    out = {"chunk": chunk, "prefix": prefix}
    with torch.inference_mode():
        ref = fns["kernels_no_pdl"](keys, values, None, n_valid, x_t, mods)
        for name, fn in fns.items():
            out[name + "_us"] = round(graph_time_us(lambda i, fn=fn: fn(keys, values, None, n_valid, x_t, mods), 4), 1)
            got = fn(keys, values, None, n_valid, x_t, mods)
            out[name + "_max_abs_vs_kernels_no_pdl"] = float((got - ref).abs().max())
    out["persistent_barrier_timed_out"] = persistent.barrier_timed_out()
    print(json.dumps(out), flush=True)
    with torch.inference_mode():  # kernel durations of one step, launched eagerly (no overlap), in launch order
        fn = TritonExpert(model, pdl=False, schedule="kernels").velocity
        fn(keys, values, None, n_valid, x_t, mods)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            fn(keys, values, None, n_valid, x_t, mods)
            torch.cuda.synchronize()
    kernels = [(ev.name, ev.device_time) for ev in prof.events() if ev.device_time > 0]
    out["kernels_first_24"] = [(n[:40], round(t, 2)) for n, t in kernels[:24]]
    out["kernels_total_us"] = round(sum(t for _, t in kernels), 1)
    out["kernels_count"] = len(kernels)
    print(json.dumps({k: out[k] for k in ("kernels_total_us", "kernels_count")}), flush=True)
    for name, t in out["kernels_first_24"]:
        print(f"  {t:8.2f} us  {name}", flush=True)
    return out


def persistent_sweep(model: Pi05Model, chunk: int, prefix: int) -> list[dict]:
    """us per step of the persistent schedule, changing one setting at a time from the defaults (tiles, stages, L2
    prefetch, barrier fences), each checked against the default's output; then ablations that skip phases' work
    (wrong outputs, timings only): barriers alone, GEMM phases alone, everything but the GEMMs."""
    keys, values, x_t, mods, n_valid = step_inputs(model, chunk, prefix)
    base = default_step_configs(chunk)
    trials: list[tuple[str, dict, AttnConfig | None, StepLaunch]] = [("default", base, None, StepLaunch())]
    for name, option in (  # the runners-up of earlier sweeps
        ("qkv", GemmConfig(block_n=16, block_k=256)),
        ("o", GemmConfig(block_n=32, block_k=128, split_k=4)),
        ("down", GemmConfig(block_n=64, block_k=128, split_k=8)),
    ):
        label = f"{name}={option.block_n}x{option.block_k}/{option.split_k}"
        trials.append((label, {**base, name: option}, None, StepLaunch()))
    for label, launch in (
        ("sector_prefetch", StepLaunch(prefetch=True)),
        ("bulk_prefetch", StepLaunch(prefetch=True, bulk_prefetch=True)),
        ("fences", StepLaunch(fences=True)),
        ("stages=4/2", StepLaunch(gemm_stages=4)),
        ("stages=3/1", StepLaunch(attn_stages=1)),
    ):
        trials.append((label, base, None, launch))
    trials.append(("attn_rows=32", base, AttnConfig(block_r=32), StepLaunch()))
    # ablations (wrong results, timing only): which phases cost what
    for label, mask in (("barriers_only", 0), ("gemms_only", 0b01101001), ("no_gemms", 0b10010110)):
        trials.append((label, base, None, StepLaunch(work_mask=mask)))
    experts = (
        (label, lambda cfg=cfg, acfg=acfg, launch=launch: TritonExpert(
            model, configs=cfg, attn_config=acfg, schedule="persistent", step_launch=launch))
        for label, cfg, acfg, launch in trials
    )  # fmt: skip
    return time_trials(experts, (keys, values, None, n_valid, x_t, mods), chunk)


def time_trials(experts, inputs: tuple, chunk: int) -> list[dict]:
    """For each (label, expert factory): us per step replayed from a CUDA graph and the max abs difference of its
    output from the first trial's (``max_abs_vs_default``); a trial that does not compile or fit says why and the
    rest go on."""
    rows, ref = [], None
    with torch.inference_mode():
        for label, make in experts:
            try:
                te = make()
                got = te.velocity(*inputs)
                ref = got if ref is None else ref
                us = graph_time_us(lambda i, te=te: te.velocity(*inputs), 4)
                diff = float((got - ref).abs().max())
                row = {"chunk": chunk, "trial": label, "us": round(us, 1), "max_abs_vs_default": diff,
                       "finite": bool(got.isfinite().all()), "timed_out": te.barrier_timed_out()}  # fmt: skip
            except Exception as exc:  # a configuration that does not tile or does not fit: say why, go on
                row = {"chunk": chunk, "trial": label, "error": f"{type(exc).__name__}: {exc}"[:300]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def kernel_trials(chunk: int) -> list[tuple[str, dict, AttnConfig | None]]:
    """(label, GEMM configs, attention config) for ``kernels_sweep``: the defaults against the same kernels without
    register preloading (the defaults before ``a6bd2aa``), and preloading one part at a time."""
    base = default_configs(chunk)
    if chunk <= 16:
        no_pre = {  # the chunk-10 defaults before preloading (a6bd2aa)
            "qkv": GemmConfig(block_n=32, block_k=128, num_stages=4),
            "o": GemmConfig(block_n=64, block_k=128, split_k=8, num_stages=4),
            "gate_up": GemmConfig(block_n=32, block_k=128, num_stages=4),
            "down": GemmConfig(block_n=32, block_k=128, split_k=8, num_warps=2, num_stages=4),
        }
        gate_up_512 = dataclasses.replace(base["gate_up"], num_warps=8, preload_k=512)
        return [
            ("defaults", base, None),
            ("no_preload", no_pre, AttnConfig(block_r=16)),
            ("preload_gemms_only", base, AttnConfig(block_r=16)),
            ("preload_attention_only", no_pre, None),
            ("defaults+gate_up_preload_512_8warps", {**base, "gate_up": gate_up_512}, None),
        ]
    return [
        ("defaults", base, None),
        ("preload_o_128", {**base, "o": dataclasses.replace(base["o"], preload_k=128)}, None),
        ("preload_down_256", {**base, "down": dataclasses.replace(base["down"], preload_k=256)}, None),
    ]


def tile_trials(chunk: int) -> list[tuple[str, dict, AttnConfig | None]]:
    """(label, GEMM configs, attention config) for ``kernels_sweep(..., tiles=True)``: one GEMM's or the attention's
    launch configuration changed at a time from the defaults, timed in the whole chain (the first sweep timed each
    GEMM alone). Register-preloading tiles are ones that ptxas fits without spills on sm_90 (Triton 3.6)."""
    base = default_configs(chunk)
    rep = dataclasses.replace
    if chunk <= 16:
        changes = {
            "qkv=16x64_pre256": ("qkv", rep(base["qkv"], block_k=64)),
            "qkv=32x128_pre256_8warps": ("qkv", rep(base["qkv"], block_n=32, num_warps=8)),
            "qkv=32x128_pre128": ("qkv", rep(base["qkv"], block_n=32, preload_k=128)),
            "gate_up=16x128_pre256": ("gate_up", rep(base["gate_up"], block_n=16)),
            "gate_up=32x128_pre256_8warps": ("gate_up", rep(base["gate_up"], num_warps=8)),
            "down=64x128/8_pre512": ("down", rep(base["down"], block_n=64)),
            "down=16x128/8_pre512": ("down", rep(base["down"], block_n=16)),
            "down=32x128/4_pre512": ("down", rep(base["down"], split_k=4)),
            "o=64x128/4_pre512_8warps": ("o", rep(base["o"], split_k=4, preload_k=512, num_warps=8)),
        }
        attn = {"attn_rows=32": AttnConfig(block_r=32, num_warps=8, preload=True),
                "attn_4warps": AttnConfig(block_r=16, preload=True)}  # fmt: skip
    else:
        changes = {
            "qkv=16x128": ("qkv", rep(base["qkv"], block_k=128)),
            "gate_up=16x128": ("gate_up", rep(base["gate_up"], block_n=16)),
            "down=32x128/8": ("down", rep(base["down"], block_n=32)),
            "o=32x128/8": ("o", rep(base["o"], split_k=8)),
        }
        attn = {"attn_rows=16": AttnConfig(block_r=16), "attn_rows=64": AttnConfig(block_r=64)}
    trials: list[tuple[str, dict, AttnConfig | None]] = [("defaults", base, None)]
    trials += [(label, {**base, name: cfg}, None) for label, (name, cfg) in changes.items()]
    trials += [(label, base, cfg) for label, cfg in attn.items()]
    return trials


def kernels_sweep(model: Pi05Model, chunk: int, prefix: int, tiles: bool = False) -> list[dict]:
    """us per step of the per-kernel schedule for each of ``kernel_trials`` (``tile_trials`` with ``tiles``), each
    checked against the first trial's output (``time_trials``; the same sums in another order)."""
    keys, values, x_t, mods, n_valid = step_inputs(model, chunk, prefix)
    experts = (
        (label, lambda cfg=cfg, acfg=acfg: TritonExpert(model, configs=cfg, attn_config=acfg, schedule="kernels"))
        for label, cfg, acfg in (tile_trials if tiles else kernel_trials)(chunk)
    )
    return time_trials(experts, (keys, values, None, n_valid, x_t, mods), chunk)


def kernels_ablation(model: Pi05Model, chunk: int, prefix: int) -> list[dict]:
    """What each kind of kernel adds to a step of the default per-kernel chain: us per step with that kind not
    launched at all (the outputs are wrong; timings only). The bench swaps the expert's launch helpers for no-ops on
    its own instance, so nothing of this exists in the engine."""
    keys, values, x_t, mods, n_valid = step_inputs(model, chunk, prefix)
    rows = []

    def skip_gemm(te):
        partials = {}

        def gemm(x, w, cfg, mode, rows_, out=None, qkv=None, cos_pos=None):
            if mode == MODE_PARTIAL:  # the residual kernel after it still reads partials: hand it zeros
                key = (w.shape[0], rows_)
                partials.setdefault(key, torch.zeros(1, rows_, w.shape[0], device=x.device, dtype=torch.float32))
                return partials[key]
            return out

        te._gemm = gemm

    def skip_norms(te):
        te._ada = lambda *args, **kwargs: None

    def skip_attention(te):
        te._attention = lambda *args, **kwargs: None

    def one_layers_weights(te):  # layer 0's 34.6 MB, mostly L2-resident: what any weight prefetch could gain
        te.weights = [te.weights[0]] * len(te.weights)

    ablations = {
        "all": (),
        "no_norm_kernels": (skip_norms,),
        "no_attention": (skip_attention,),
        "no_gemms": (skip_gemm,),
        "gemms_only": (skip_norms, skip_attention),
        "one_layers_weights": (one_layers_weights,),
        "one_layers_weights_gemms_only": (one_layers_weights, skip_norms, skip_attention),
    }
    with torch.inference_mode():
        for label, ablate in ablations.items():
            te = TritonExpert(model, schedule="kernels")
            for skip in ablate:
                skip(te)
            te.velocity(keys, values, None, n_valid, x_t, mods)
            us = graph_time_us(lambda i, te=te: te.velocity(keys, values, None, n_valid, x_t, mods), 4)
            rows.append({"chunk": chunk, "ablation": label, "us": round(us, 1)})
            print(json.dumps(rows[-1]), flush=True)
        merge = triton_expert._attn_combine_kernel
        triton_expert._attn_combine_kernel = _NoLaunch()  # the split-merge kernel alone
        try:
            te = TritonExpert(model, schedule="kernels")
            us = graph_time_us(lambda i, te=te: te.velocity(keys, values, None, n_valid, x_t, mods), 4)
        finally:
            triton_expert._attn_combine_kernel = merge
        rows.append({"chunk": chunk, "ablation": "no_attention_merge", "us": round(us, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


class _NoLaunch:
    """Stands in for a Triton kernel: ``kernel[grid](...)`` launches nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--copies", type=int, default=8, help="weight copies per GEMM (their total must exceed L2)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the GEMM sweep")
    ap.add_argument("--step-only", action="store_true", help="accuracy and whole-step timings only")
    ap.add_argument("--no-attention", action="store_true", help="skip the attention sweep")
    ap.add_argument("--no-step", action="store_true", help="skip the whole-step timings")
    ap.add_argument("--persistent-sweep", action="store_true", help="sweep the persistent step's settings")
    ap.add_argument("--kernels-sweep", action="store_true", help="preload trials and ablation, per-kernel step")
    ap.add_argument("--tile-sweep", action="store_true", help="launch tiles timed in the whole per-kernel step")
    ap.add_argument("--gemms", nargs="+", default=["qkv", "o", "gate_up", "down"])
    ap.add_argument("--batch-sweep", type=int, nargs="+", default=[], help="slots of the batched step to time")
    ap.add_argument("--max-block-m", type=int, nargs="+", default=[32, 64, 128], help="batched GEMM rows per program")
    for key in GRID:  # override the sweep grid, e.g. --num_warps 2 4 8
        ap.add_argument(f"--{key}", type=int, nargs="+", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    model = build_model(full_size(), torch.device("cuda"), torch.bfloat16)
    randomize(model)
    model.prepare_inference()
    te = TritonExpert(model, schedule="kernels")  # the per-GEMM and attention sweeps time its kernels
    model32 = build_model(full_size(), torch.device("cuda"), torch.float32)  # the same weights, in fp32
    model32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    model32.prepare_inference()
    report: dict = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "command": " ".join(sys.argv)}
    import triton

    report["triton"] = triton.__version__
    report["accuracy"] = []
    for schedule in ("persistent", "kernels"):
        expert = TritonExpert(model, schedule=schedule)
        for chunk, prefix, n_valid in ((10, 560, 560), (10, 576, 560), (50, 560, 560)):
            report["accuracy"].append(accuracy(model, model32, expert, chunk, prefix, n_valid))
            print(json.dumps(report["accuracy"][-1]), flush=True)
    del model32
    torch.cuda.empty_cache()
    if not args.no_step:
        report["step"] = [step_times(model, chunk, 560) for chunk in args.chunks]
    if args.kernels_sweep:
        report["kernels_sweep"] = [r for chunk in args.chunks for r in kernels_sweep(model, chunk, 560)]
        report["kernels_ablation"] = [r for chunk in args.chunks for r in kernels_ablation(model, chunk, 560)]
    if args.tile_sweep:
        report["tile_sweep"] = [r for chunk in args.chunks for r in kernels_sweep(model, chunk, 560, tiles=True)]
    if args.batch_sweep:
        sweeps = (batch_sweep(model, chunk, 560, args.batch_sweep, args.max_block_m) for chunk in args.chunks)
        report["batch_sweep"] = [r for rows in sweeps for r in rows]
    if args.persistent_sweep:
        report["persistent_sweep"] = [r for chunk in args.chunks for r in persistent_sweep(model, chunk, 560)]
    if args.step_only:
        if args.out is not None:
            args.out.write_text(json.dumps(report, indent=2))
        return
    if not args.no_attention:
        report["attention"] = [r for chunk in args.chunks for r in attention_one(te, chunk, 560)]
    if not args.no_sweep:
        for key in GRID:
            if getattr(args, key) is not None:
                GRID[key] = tuple(getattr(args, key))
        report["grid"] = GRID
        report["sweep"] = sweep(te, args.chunks, args.copies, args.gemms)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

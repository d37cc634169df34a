"""The Triton denoise-step kernels (``sim_eval/policies/pi05/triton_expert.py``) compute ``Pi05Model.velocity``.

CI has no GPU: the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, numpy on the CPU) in fp32 on the
fixture checkpoint, so every index, mask, split and epilogue is checked against the torch model, which itself matches
LeRobot (test_pi05_parity.py). bf16 numerics and speed on a GPU: scripts/bench_expert_kernels.py, bench_engine.py."""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys

import pytest

# Triton fixes the mode of every @triton.jit function -- its own tl.sum/tl.max included -- when it is decorated, so the
# interpreter must be on before triton is first imported (conftest imports it first, with the interpreter on).
if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from conftest import FIXTURES as FIX  # noqa: E402
from conftest import tiny_engine  # noqa: E402

TOL = 1e-5


def _interpreter_shim() -> None:
    """Triton's interpreter turns one-element numpy arrays into loop bounds with ``int(array)``, which NumPy >= 2.4
    rejects for arrays of one dimension; take the element explicitly (interpreter only, tests only)."""
    import triton.runtime.interpreter as interp

    if getattr(interp, "_sim_eval_shim", False):
        return
    original = interp._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    interp._patch_lang_tensor = patched
    interp._sim_eval_shim = True


@pytest.fixture(scope="module")
def tx():
    """``sim_eval.policies.pi05.triton_expert`` with its kernels decorated for the interpreter."""
    _interpreter_shim()
    return importlib.import_module("sim_eval.policies.pi05.triton_expert")


@pytest.fixture(scope="module")
def engine():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    eng = tiny_engine(state_in_prompt=False)
    yield eng
    torch.set_num_threads(old)


def _cache(engine, pad_multiple: int):
    z = np.load(FIX / "case_nostate.npz")
    obs = {"images": {"agentview": z["images_uint8"][0], "wrist": z["images_uint8"][1]}, "instruction": "pick it up"}
    engine.pad_multiple = pad_multiple
    try:
        return engine.encode_prefix(obs)
    finally:
        engine.pad_multiple = 1


def _small_tiles(tx):
    """Tiles small enough that the tiny model's GEMMs run several K steps and several K splits (the defaults, sized
    for the full model, would cover each tiny GEMM in one tile)."""
    return {
        "qkv": tx.GemmConfig(block_n=16, block_k=16),
        "o": tx.GemmConfig(block_n=16, block_k=16, split_k=4),
        "gate_up": tx.GemmConfig(block_n=32, block_k=16),
        "down": tx.GemmConfig(block_n=16, block_k=16, split_k=4),
    }


def _preloading_tiles(tx):
    """``_small_tiles`` with part of each program's weight slice preloaded (q/k/v, o) or all of it (gate/up, down)."""
    tiles = _small_tiles(tx)
    return {
        name: dataclasses.replace(cfg, preload_k=pre)
        for (name, cfg), pre in zip(tiles.items(), (16, 16, 32, 16), strict=True)
    }


@pytest.mark.parametrize("schedule", ["kernels", "phased", "kernels-preload", "kernels-defaults"])
@pytest.mark.parametrize("pad_multiple", [1, 32])
def test_velocity_matches_torch_with_key_splits(tx, engine, pad_multiple, schedule):
    """Chunk 10, keys split over many programs (as on a 132-SM GPU), K split in the partial GEMMs; with and without
    prompt padding (padding must be masked by ``n_valid`` alone). ``phased`` runs the persistent step kernel's code
    (every phase, work items strided over 3 programs) one phase per launch: the grid barrier is the only part of the
    persistent launch not run here. ``kernels-preload``: the per-kernel schedule with weights and each split's first
    prefix K/V block loaded ahead of the rest (what a GPU does before waiting for the kernel before);
    ``kernels-defaults``: the chunk-10 defaults (preloading, sized for the full model)."""
    cache = _cache(engine, pad_multiple)
    assert (cache.key_mask is not None) == (pad_multiple > 1)
    preload = schedule == "kernels-preload"
    attn = tx.AttnConfig(block_r=16, block_kv=32, max_split=16, combine_rows=16, combine_dims=16, preload=preload)
    configs = _preloading_tiles(tx) if preload else _small_tiles(tx)
    if schedule == "kernels-defaults":
        configs, attn = None, None
        assert tx.default_attn_config(10).preload and tx.default_configs(10)["down"].preload_k > 0
    expert = tx.TritonExpert(
        engine.model,
        configs=configs,
        sm_count=3 if schedule == "phased" else 132,
        attn_config=attn,
        schedule=schedule.split("-")[0],
    )
    x_t = torch.randn(1, 10, engine.model.sizes.max_action_dim, generator=torch.Generator().manual_seed(pad_multiple))
    mods = engine.modulations()[4]
    got = expert.velocity(cache.keys, cache.values, cache.key_mask, cache.n_valid, x_t, mods)
    ref = engine.model.velocity(cache.keys, cache.values, cache.key_mask, cache.n_valid, x_t, mods)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=TOL, rtol=0)


@pytest.mark.parametrize("schedule", ["kernels", "phased"])
def test_denoise_with_triton_step_matches_lerobot(tx, engine, schedule):
    """The whole 10-step denoise with the Triton step as ``velocity_fn`` reproduces LeRobot's actions (chunk 50: the
    64-row tile; one key split, default tiles)."""
    z = np.load(FIX / "case_nostate.npz")
    images = {"agentview": z["images_uint8"][0], "wrist": z["images_uint8"][1]}
    cache = engine.encode_prefix({"images": images, "instruction": str(z["prompt_raw"])})
    attn = tx.AttnConfig(block_r=64, block_kv=128, combine_rows=64, combine_dims=16)  # few programs: fast interpreter
    expert = tx.TritonExpert(engine.model, attn_config=attn, schedule=schedule)
    assert expert.sm_count == 1 and not expert.pdl  # CPU: fewest programs, no programmatic dependent launch
    actions = engine.model.denoise(
        cache, torch.from_numpy(z["noise"]), 10, modulations=engine.modulations(), velocity_fn=expert.velocity
    )
    np.testing.assert_allclose(actions.numpy(), z["actions_normalized"], atol=TOL, rtol=0)


def test_unsupported_models_are_named(tx, engine):
    from sim_eval.policies.pi05.engine import build_model

    unfused = build_model(engine.model.sizes, torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="projections are not fused"):
        tx.TritonExpert(unfused)
    with pytest.raises(ValueError, match="schedule 'phased' runs batch 1, got 2"):
        tx.TritonExpert(engine.model, schedule="phased").velocity(None, None, None, 0, torch.zeros(2, 10, 32), [])
    with pytest.raises(ValueError, match="prefix of batch 1 for 2 action chunks"):
        tx.TritonExpert(engine.model).velocity(torch.zeros(3, 1, 1, 8, 16), None, None, 0, torch.zeros(2, 10, 32), [])
    with pytest.raises(ValueError, match="max_block_m 48 must be a power of two >= 16"):
        tx.TritonExpert(engine.model, max_block_m=48)
    with pytest.raises(ValueError, match="schedule 'fused' not supported: kernels, persistent, phased"):
        tx.TritonExpert(engine.model, schedule="fused")
    with pytest.raises(ValueError, match="preload_k 24 must be 0 or a power of two >= 16"):
        tx.GemmConfig(preload_k=24)
    with pytest.raises(ValueError, match=r"schedule 'persistent' needs CUDA \(device is cpu\)"):
        tx.TritonExpert(engine.model, schedule="persistent")
    assert tx.TritonExpert(engine.model).schedule == "kernels"


def test_engine_kernel_choice_on_cpu():
    """``auto`` takes the torch step where Triton cannot run (CPU here); asking for triton there is a clear error."""
    assert tiny_engine(kernels="auto").kernels == "torch"
    with pytest.raises(ValueError, match=r"kernels='triton': needs CUDA \(device is cpu\)"):
        tiny_engine(kernels="triton")
    with pytest.raises(ValueError, match="kernels 'cuda' not supported: auto, torch, triton"):
        tiny_engine(kernels="cuda")
    with pytest.raises(ValueError, match=r"triton_options \{'schedule': 'persistent'\} given, but the denoise step"):
        tiny_engine(kernels="auto", triton_options={"schedule": "persistent"})


def test_stacked_weights_are_the_models_own(tx, engine):
    """The step kernel reads every layer's weights from four stacked tensors; the model's parameters become views of
    them (nothing held twice), with unchanged values, and a second expert on the same model reuses the stacks."""
    model = engine.model
    layers = model.expert.layers
    before = [la.mlp.up_proj.weight.clone() for la in layers]
    w_qkv, w_o, w_gate_up, w_down = tx.TritonExpert(model, schedule="phased").stacks
    assert w_qkv.shape[0] == w_o.shape[0] == w_gate_up.shape[0] == w_down.shape[0] == len(layers)
    for i, la in enumerate(layers):
        assert la.self_attn.fused[0].data_ptr() == w_qkv[i].data_ptr() == la.self_attn.q_proj.weight.data_ptr()
        assert la.self_attn.o_proj.weight.data_ptr() == w_o[i].data_ptr()
        assert la.mlp.down_proj.weight.data_ptr() == w_down[i].data_ptr()
        assert la.mlp.up_proj.weight.data_ptr() == w_gate_up[i, la.mlp.gate_proj.weight.shape[0] :].data_ptr()
        assert torch.equal(la.mlp.up_proj.weight, before[i])
    assert tx.TritonExpert(model, schedule="phased").stacks[0] is w_qkv


def _slot_caches(engine) -> list:
    """Three slots' prefixes of different lengths (their prompts differ), one of them padded (``pad_multiple``)."""
    z = np.load(FIX / "case_nostate.npz")
    images = {"agentview": z["images_uint8"][0], "wrist": z["images_uint8"][1]}
    caches = []
    for prompt, pad in (("pick it up", 1), ("put the bowl on the plate and the cream cheese in it", 32), ("go", 1)):
        engine.pad_multiple = pad
        try:
            caches.append(engine.encode_prefix({"images": images, "instruction": prompt}))
        finally:
            engine.pad_multiple = 1
    assert len({int(c.n_valid) for c in caches}) == 3 and caches[1].key_mask is not None
    return caches


def test_batched_velocity_matches_batch_one_per_slot(tx, engine):
    """Three slots with prefixes of different lengths (one padded per slot, all padded to the longest) in one call:
    each slot's velocity equals its batch-1 velocity (Triton and torch). GEMM tiles of 16 rows, so a tile holds
    the rows of two slots (each row's RoPE position from its own slot); keys split over many programs."""
    from sim_eval.policies.pi05.batched import stack_prefixes

    caches = _slot_caches(engine)
    batch = stack_prefixes(caches, max(c.keys.shape[3] for c in caches) + 5)
    attn = tx.AttnConfig(block_r=16, block_kv=32, max_split=16, combine_rows=16, combine_dims=16)
    expert = tx.TritonExpert(engine.model, configs=_small_tiles(tx), sm_count=132, attn_config=attn, max_block_m=16)
    x_t = torch.randn(3, 10, engine.model.sizes.max_action_dim, generator=torch.Generator().manual_seed(3))
    mods = engine.modulations()[7]
    got = expert.velocity(batch.keys, batch.values, batch.key_mask, batch.n_valid, x_t, mods)
    assert got.shape == (3, 10, engine.model.sizes.max_action_dim)
    for s, c in enumerate(caches):
        one = expert.velocity(c.keys, c.values, c.key_mask, c.n_valid, x_t[s : s + 1], mods)
        ref = engine.model.velocity(c.keys, c.values, c.key_mask, c.n_valid, x_t[s : s + 1], mods)
        np.testing.assert_allclose(got[s : s + 1].numpy(), one.numpy(), atol=TOL, rtol=0)
        np.testing.assert_allclose(got[s : s + 1].numpy(), ref.numpy(), atol=TOL, rtol=0)


def test_batched_denoise_runs_the_triton_step_and_matches_batch_one():
    """``denoise_batch`` of an engine whose step is Triton (forced here: on the CPU ``auto`` picks torch) runs the
    batched Triton step and gives every slot its batch-1 actions (one denoise step: the interpreter is slow)."""
    from sim_eval.policies.pi05 import batched

    eng = tiny_engine(state_in_prompt=False, num_steps=1)
    caches = _slot_caches(eng)[:2]
    noises = [eng.sample_noise(torch.Generator().manual_seed(s)) for s in range(2)]
    want = [eng.denoise(c, n) for c, n in zip(caches, noises, strict=True)]
    eng.kernels = "triton"
    got = batched.denoise_batch(eng, caches, noises)
    assert type(batched._velocity(eng).__self__).__name__ == "TritonExpert"
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=TOL, rtol=0)

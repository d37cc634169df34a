"""Parity of the native Pi0.5 engine with LeRobot's PI05 on tests/fixtures/pi05 (fp32, CPU, <= 1e-5 max abs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES as FIX
from conftest import tiny_engine

TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    # one thread: deterministic reductions, and the README's 2-thread first-call RoPE glitch cannot occur
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def lerobot_state():
    return tiny_engine("lerobot")


@pytest.fixture(scope="module")
def lerobot_nostate():
    return tiny_engine("lerobot", state_in_prompt=False)


@pytest.fixture(scope="module")
def openpi():
    return tiny_engine("openpi")


def _obs(images, state, prompt):
    return {"images": {"agentview": images[0], "wrist": images[1]}, "state": state, "instruction": str(prompt)}


def _check_prefix(engine, z, prefix=""):
    obs = _obs(
        z[prefix + "images_uint8"] if prefix + "images_uint8" in z else z["A_images_uint8"],
        z["state_raw"] if "state_raw" in z else z["A_state_raw"],
        z["prompt_raw"],
    )
    prep = engine.prepare(obs)
    n_tok = int(z["token_mask"].sum())
    assert prep.tokens == z["tokens"][0, :n_tok].tolist()
    return prep


@pytest.mark.parametrize("case", ["case_state", "case_nostate"])
def test_prefix_and_actions_match_lerobot(case, lerobot_state, lerobot_nostate):
    engine = lerobot_state if case == "case_state" else lerobot_nostate
    z = np.load(FIX / f"{case}.npz")
    prep = _check_prefix(engine, z)
    np.testing.assert_allclose(prep.images.numpy(), z["images_model_input"], atol=TOL, rtol=0)
    if case == "case_state":
        from sim_eval.policies.pi05.processing import discretize_state

        norm = engine.normalizer.normalize_state(z["state_raw"])
        np.testing.assert_allclose(norm, z["state_normalized"], atol=1e-6, rtol=0)
        assert discretize_state(norm).tolist() == z["state_discretized"].tolist()
    with torch.inference_mode():
        emb = engine.model.embed_prefix(prep.images, torch.tensor([prep.tokens]))
    valid = z["prefix_pad_mask"][0]
    np.testing.assert_allclose(emb[0].numpy(), z["prefix_embs"][0][valid], atol=TOL, rtol=0)
    cache = engine.encode_prefix(prep)
    assert cache.n_valid == int(valid.sum())
    for layer, name in ((0, "layer0"), (-1, "layer_last")):
        np.testing.assert_allclose(cache.keys[layer, 0, 0].numpy(), z[f"k_{name}"][0, 0][valid], atol=TOL, rtol=0)
        np.testing.assert_allclose(cache.values[layer, 0, 0].numpy(), z[f"v_{name}"][0, 0][valid], atol=TOL, rtol=0)
    noise = torch.from_numpy(z["noise"])
    trajectory = []
    with torch.inference_mode():
        x = engine.model.denoise(cache, noise, 10, trajectory=trajectory)
    assert [float(t) for t, _, _ in trajectory] == z["denoise_timesteps"].tolist()
    for k, (_, x_t, v_t) in enumerate(trajectory):
        np.testing.assert_allclose(x_t.numpy(), z["denoise_x_t"][k], atol=TOL, rtol=0)
        np.testing.assert_allclose(v_t.numpy(), z["denoise_v_t"][k], atol=TOL, rtol=0)
    np.testing.assert_allclose(x.numpy(), z["actions_normalized"], atol=TOL, rtol=0)
    # the engine's public path (precomputed adaRMS modulations) gives the same, un-normalized
    actions = engine.denoise(cache, noise)
    assert actions.shape == (50, 7)
    np.testing.assert_allclose(actions, z["actions_unnormalized"][0], atol=TOL, rtol=0)


def test_cached_frame_reuses_prefix_unchanged(lerobot_nostate):
    engine = lerobot_nostate
    z = np.load(FIX / "case_cached_frame.npz")
    cache_a = engine.encode_prefix(_obs(z["A_images_uint8"], z["A_state_raw"], z["prompt_raw"]))
    keys_before, values_before = cache_a.keys.clone(), cache_a.values.clone()
    noise = torch.from_numpy(z["noise"])
    np.testing.assert_allclose(
        engine.denoise_normalized(cache_a, noise).numpy(), z["actions_cached_prefix_A"], atol=TOL, rtol=0
    )
    np.testing.assert_allclose(
        engine.denoise(cache_a, noise), z["actions_cached_prefix_A_unnormalized"][0], atol=TOL, rtol=0
    )
    assert torch.equal(cache_a.keys, keys_before) and torch.equal(cache_a.values, values_before)
    prep_b = engine.prepare(_obs(z["B_images_uint8"], z["B_state_raw"], z["prompt_raw"]))
    np.testing.assert_allclose(prep_b.images.numpy(), z["B_images_model_input"], atol=TOL, rtol=0)
    cache_b = engine.encode_prefix(prep_b)
    valid = z["B_prefix_pad_mask"][0]
    np.testing.assert_allclose(cache_b.keys[0, 0, 0].numpy(), z["B_k_layer0"][0, 0][valid], atol=TOL, rtol=0)
    np.testing.assert_allclose(cache_b.values[-1, 0, 0].numpy(), z["B_v_layer_last"][0, 0][valid], atol=TOL, rtol=0)
    np.testing.assert_allclose(
        engine.denoise(cache_b, noise), z["actions_fresh_prefix_B_unnormalized"][0], atol=TOL, rtol=0
    )


def test_openpi_layout_matches(openpi):
    assert openpi.info.layout == "openpi" and not openpi.info.state_in_prompt
    for case in ("case_nostate", "case_cached_frame"):
        z = np.load(FIX / f"{case}.npz")
        images = z["images_uint8"] if "images_uint8" in z else z["A_images_uint8"]
        state = z["state_raw"] if "state_raw" in z else z["A_state_raw"]
        cache = openpi.encode_prefix(_obs(images, state, z["prompt_raw"]))
        noise = torch.from_numpy(z["noise"])
        ref = z["actions_normalized"] if case == "case_nostate" else z["actions_cached_prefix_A"]
        np.testing.assert_allclose(openpi.denoise_normalized(cache, noise).numpy(), ref, atol=TOL, rtol=0)
    z = np.load(FIX / "case_nostate.npz")
    cache = openpi.encode_prefix(_obs(z["images_uint8"], z["state_raw"], z["prompt_raw"]))
    actions = openpi.denoise(cache, torch.from_numpy(z["noise"]))
    np.testing.assert_allclose(actions, z["actions_unnormalized_openpi_formula"][0], atol=TOL, rtol=0)


@pytest.mark.parametrize("size", ["256x256", "180x320"])
def test_resize_with_pad_matches(size):
    from sim_eval.policies.pi05.processing import resize_with_pad, to_uint8

    z = np.load(FIX / "case_preprocess_resize.npz")
    x01 = resize_with_pad(z[f"raw_{size}_uint8"], 224)
    np.testing.assert_allclose((x01 * 2.0 - 1.0).numpy(), z[f"model_input_{size}"], atol=TOL, rtol=0)
    u8 = to_uint8(x01)
    assert u8.shape == (224, 224, 3) and u8.dtype == np.uint8


def test_absent_camera_is_masked(lerobot_nostate):
    """Dropping a camera equals masking it: the prefix just loses its 256 tokens."""
    z = np.load(FIX / "case_nostate.npz")
    obs = _obs(z["images_uint8"], z["state_raw"], z["prompt_raw"])
    del obs["images"]["wrist"]
    cache = lerobot_nostate.encode_prefix(obs)
    assert cache.n_valid == 256 + int(z["token_mask"].sum())
    assert np.isfinite(lerobot_nostate.denoise(cache, torch.from_numpy(z["noise"]))).all()


def test_padded_prefix_equals_unpadded(lerobot_nostate):
    """Prompt padding masked by key (what the CUDA-graph path uses) leaves the actions unchanged."""
    z = np.load(FIX / "case_nostate.npz")
    engine = lerobot_nostate
    prep = engine.prepare(_obs(z["images_uint8"], z["state_raw"], z["prompt_raw"]))
    noise = torch.from_numpy(z["noise"])
    ref = engine.denoise_normalized(engine.encode_prefix(prep), noise)
    engine.pad_multiple = 32
    try:
        padded = engine.encode_prefix(prep)
    finally:
        engine.pad_multiple = 1
    assert padded.key_mask is not None and padded.keys.shape[3] % 32 == 256 * 2 % 32
    np.testing.assert_allclose(engine.denoise_normalized(padded, noise).numpy(), ref.numpy(), atol=TOL, rtol=0)


def test_bfloat16_close_to_reference():
    """bf16 runs the same code; on the tiny model it lands within bf16 rounding of LeRobot's fp32 actions."""
    engine = tiny_engine("lerobot", dtype="bfloat16")
    z = np.load(FIX / "case_state.npz")
    cache = engine.encode_prefix(_obs(z["images_uint8"], z["state_raw"], z["prompt_raw"]))
    assert cache.keys.dtype == torch.bfloat16
    got = engine.denoise_normalized(cache, torch.from_numpy(z["noise"])).numpy()
    ref = z["actions_normalized"]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-2

"""Cache-controller semantics on a recording fake engine, plus the real tiny Pi0.5 for exactness properties."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import FIXTURES as FIX
from conftest import tiny_engine

from sim_eval.policies.base import TaskContext, check_infer_result
from sim_eval.policies.cache import CacheController, paired_noise, pixel_mae


@dataclass(frozen=True)
class _Prep:
    images_u8: dict


class FakeEngine:
    """Records which frames were encoded and which noise each denoise saw."""

    views = ("agentview", "wrist")
    noise_shape = (1, 4, 8)

    def __init__(self):
        self.encoded, self.noises, self.denoised_with = [], [], []

    def sync(self):
        pass

    def prepare(self, obs):
        return _Prep({v: obs["images"][v] for v in self.views if v in obs["images"]})

    def encode_prefix(self, prep):
        self.encoded.append(prep)
        return ("prefix", len(self.encoded))

    def denoise(self, cache, noise):
        self.noises.append(noise.clone())
        self.denoised_with.append(cache)
        return np.full((4, 7), float(cache[1])) + noise[0, :, :7].numpy()


def _task(seed=7):
    return TaskContext(suite="libero_spatial", task_id=0, language="pick", episode_index=0, noise_seed=seed)


def _obs(level=0, wrist=0):
    return {
        "images": {
            "agentview": np.full((224, 224, 3), level, np.uint8),
            "wrist": np.full((224, 224, 3), wrist, np.uint8),
        },
        "state": np.zeros(8, np.float32),
        "instruction": "pick",
    }


def _run(mode, frames, **kw):
    engine = FakeEngine()
    policy = CacheController(engine, mode, **kw)
    policy.reset(_task())
    infos = []
    for obs in frames:
        result = policy.infer(obs)
        check_infer_result(result)
        json.dumps(result["info"])  # goes into every episode record line
        infos.append(result["info"])
    return engine, policy, infos


def _pattern(infos):
    return "".join(("R" if i["forced_refresh"] else "F") if i["used_full"] else "C" for i in infos)


def test_full_never_reuses():
    engine, _, infos = _run("full", [_obs()] * 5)
    assert _pattern(infos) == "FFFFF" and len(engine.encoded) == 5
    assert [i["window_pos"] for i in infos] == [0] * 5


def test_cache3_period():
    engine, _, infos = _run("cache3", [_obs()] * 8)
    assert _pattern(infos) == "FCCFCCFC"
    assert [i["window_pos"] for i in infos] == [0, 1, 2, 0, 1, 2, 0, 1]
    assert engine.denoised_with == [("prefix", 1)] * 3 + [("prefix", 2)] * 3 + [("prefix", 3)] * 2
    assert all(i["prefix_ms"] == 0.0 for i in infos if not i["used_full"])


def test_adaptive3_scene_change_forces_refresh_and_restarts_window():
    frames = [_obs(0), _obs(0), _obs(50), _obs(50), _obs(50), _obs(50), _obs(50)]
    _, _, infos = _run("adaptive3", frames)
    assert _pattern(infos) == "FCRCCFC"
    assert infos[2]["pixel_mae"] == {"agentview": 50.0, "wrist": 0.0}
    assert infos[3]["pixel_mae"]["agentview"] == 0.0  # compared with the forced full frame now


def test_adaptive_threshold_is_inclusive_and_views_configurable():
    frames = [_obs(0, 0), _obs(0, 7), _obs(0, 7)]
    _, _, infos = _run("adaptive5", frames, threshold=7.0)
    assert _pattern(infos) == "FRC"
    _, _, infos = _run("adaptive5", frames, threshold=7.0, views=["agentview"])  # wrist change ignored
    assert _pattern(infos) == "FCC"
    _, _, infos = _run("adaptive5", frames, threshold=7.5)
    assert _pattern(infos) == "FCC"
    with pytest.raises(ValueError, match="not cameras"):
        CacheController(FakeEngine(), "adaptive3", views=["left"])


def test_reset_makes_first_frame_full_and_restarts_noise():
    engine = FakeEngine()
    policy = CacheController(engine, "cache5")
    policy.reset(_task())
    for _ in range(3):
        policy.infer(_obs())
    policy.reset(_task())
    info = policy.infer(_obs())["info"]
    assert info["used_full"] and info["infer_index"] == 0 and info["pixel_mae"] is None
    assert torch.equal(engine.noises[0], engine.noises[3])


def test_paired_noise_identical_across_modes():
    noises = {}
    for mode in ("full", "cache3", "adaptive3"):
        engine, _, _ = _run(mode, [_obs(i * 20) for i in range(6)])
        noises[mode] = engine.noises
    for mode in ("cache3", "adaptive3"):
        assert all(torch.equal(a, b) for a, b in zip(noises["full"], noises[mode], strict=True))
    assert not torch.equal(noises["full"][0], noises["full"][1])  # fresh noise per inference
    assert not torch.equal(paired_noise((1, 4, 8), 7, 0), paired_noise((1, 4, 8), 8, 0))  # per episode


def test_info_fields():
    _, _, infos = _run("adaptive3", [_obs(0), _obs(1)])
    keys = {
        "infer_ms",
        "prefix_ms",
        "denoise_ms",
        "used_full",
        "forced_refresh",
        "window_pos",
        "pixel_mae",
        "infer_index",
    }
    assert keys <= set(infos[1])
    assert infos[0]["pixel_mae"] is None and infos[1]["pixel_mae"] == {"agentview": 1.0, "wrist": 0.0}
    assert pixel_mae(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)) == 255.0


def test_shadow_fields_only_on_cached_frames():
    engine, _, infos = _run("cache3", [_obs()] * 3, shadow=True)
    assert "shadow_cos" not in infos[0] and "shadow_cos" in infos[1]
    # the shadow encode does not become the cache: frame 2 still denoises against the first prefix
    assert [c[1] for c in engine.denoised_with] == [1, 1, 2, 1, 3]  # executed, shadow, executed, shadow


def test_real_engine_cached_equals_full_on_unchanged_obs():
    torch.set_num_threads(1)
    engine = tiny_engine("openpi")
    z = np.load(FIX / "case_nostate.npz")
    obs = {
        "images": {"agentview": z["images_uint8"][0], "wrist": z["images_uint8"][1]},
        "state": z["state_raw"],
        "instruction": str(z["prompt_raw"]),
    }
    full = CacheController(engine, "full")
    cached = CacheController(engine, "cache3", shadow=True)
    for p in (full, cached):
        p.reset(_task(3))
    for k in range(3):
        a, b = full.infer(obs), cached.infer(obs)
        assert b["info"]["used_full"] == (k == 0)
        np.testing.assert_array_equal(a["actions"], b["actions"])
        assert a["actions"].shape == (50, 7)
        if k:
            assert b["info"]["shadow_cos"] == 1.0 and b["info"]["shadow_max_abs"] == 0.0

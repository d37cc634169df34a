"""FlashRT adapter against a recording fake of ``flash_rt.frontends.torch.pi05_rtx.Pi05TorchFrontendRtx``."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from sim_eval.policies.base import TaskContext, check_infer_result
from sim_eval.policies.flashrt import FlashRTPolicy, FlashRTUnavailable, load_frontend_class


class FakeFrontend:
    """Mimics FlashRT 0.2.0's public surface and its frame-counter rule; records every call."""

    def __init__(self, checkpoint_dir="ckpt", num_views=2, chunk_size=10, num_steps=10, cache_frames=1):
        self.num_views, self.chunk_size, self._cache_frames = num_views, chunk_size, cache_frames
        self._frame_count = 0
        self.latency_records: list[float] = []
        self.calls: list[tuple] = []

    def set_prompt(self, text, state=None):
        self.calls.append(("set_prompt", text, None if state is None else tuple(np.round(state, 3))))

    def _run(self, observation, full):
        assert len(observation["images"]) == self.num_views
        assert all(im.shape == (224, 224, 3) and im.dtype == np.uint8 for im in observation["images"])
        self.calls.append(("infer", "full" if full else "decode"))
        self.latency_records.append(1.5 if full else 0.5)
        return {"actions": np.zeros((self.chunk_size, 7), np.float32)}

    def infer(self, observation, debug=False, noise=None):
        self._frame_count += 1
        full = self._cache_frames <= 1 or self._frame_count % self._cache_frames == 1
        self.noise = noise
        return self._run(observation, full)


class FakeFrontendForceFull(FakeFrontend):
    def infer(self, observation, debug=False, noise=None, force_full=False):
        self._frame_count += 1
        full = force_full or self._cache_frames <= 1 or self._frame_count % self._cache_frames == 1
        self.calls.append(("force_full", force_full))
        return self._run(observation, full)


def _obs(level):
    img = np.full((256, 256, 3), level, np.uint8)
    return {
        "images": {"agentview": img, "wrist": np.zeros((256, 256, 3), np.uint8)},
        "state": np.zeros(8, np.float32),
        "instruction": "pick up the bowl",
    }


def _run(frontend, mode, levels):
    policy = FlashRTPolicy(frontend, mode)
    policy.reset(TaskContext("libero_spatial", 0, "pick up the bowl", 0, noise_seed=5))
    infos = []
    for level in levels:
        result = policy.infer(_obs(level))
        check_infer_result(result)
        infos.append(json.loads(json.dumps(result["info"])))
    ran = [c[1] for c in frontend.calls if c[0] == "infer"]
    return infos, ran


def _pattern(infos):
    return "".join(("R" if i["forced_refresh"] else "F") if i["used_full"] else "C" for i in infos)


def test_cache3_call_sequence():
    frontend = FakeFrontend(cache_frames=3)
    infos, ran = _run(frontend, "cache3", [0] * 7)
    assert frontend.calls[0] == ("set_prompt", "pick up the bowl", None)
    assert ran == ["full", "decode", "decode", "full", "decode", "decode", "full"]
    assert _pattern(infos) == "FCCFCCF"  # the adapter's bookkeeping agrees with what FlashRT ran
    assert infos[0]["engine_ms"] == 1.5 and infos[1]["engine_ms"] == 0.5


@pytest.mark.parametrize("frontend_cls", [FakeFrontend, FakeFrontendForceFull])
def test_adaptive3_scene_change_forces_full(frontend_cls):
    frontend = frontend_cls(cache_frames=3)
    infos, ran = _run(frontend, "adaptive3", [0, 0, 60, 60, 60, 60, 60])
    assert ran == ["full", "decode", "full", "decode", "decode", "full", "decode"]
    assert _pattern(infos) == "FCRCCFC"
    assert infos[2]["pixel_mae"] == {"agentview": 60.0, "wrist": 0.0}
    forced = [c[1] for c in frontend.calls if c[0] == "force_full"]
    if frontend_cls is FakeFrontendForceFull:
        assert forced == [False, False, True, False, False, False, False]  # force_full used, not a counter reset


def test_reset_restarts_counter_and_paired_noise():
    frontend = FakeFrontend(cache_frames=3)
    policy = FlashRTPolicy(frontend, "cache3")
    task = TaskContext("libero_spatial", 0, "pick up the bowl", 0, noise_seed=5)
    policy.reset(task)
    policy.infer(_obs(0))
    first_noise = frontend.noise.copy()
    policy.infer(_obs(0))
    policy.reset(task)
    assert policy.infer(_obs(0))["info"]["used_full"]
    assert np.array_equal(frontend.noise, first_noise) and frontend.noise.shape == (10, 32)


def test_missing_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_rt", None)
    with pytest.raises(FlashRTUnavailable) as err:
        load_frontend_class()
    assert "flash-rt" in str(err.value) and "\n" not in str(err.value)


def test_build_policy_uses_fake_frontend(monkeypatch):
    from conftest import FIXTURES

    fix = FIXTURES / "tiny_openpi_layout"
    module = types.ModuleType("flash_rt.frontends.torch.pi05_rtx")
    module.Pi05TorchFrontendRtx = FakeFrontendForceFull
    for name in ("flash_rt", "flash_rt.frontends", "flash_rt.frontends.torch"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "flash_rt.frontends.torch.pi05_rtx", module)
    from sim_eval.policies.pi05 import build_policy

    policy = build_policy(str(fix), cache="adaptive4", engine="flashrt", refresh={"threshold": 3.0})
    assert isinstance(policy, FlashRTPolicy) and policy.frontend._cache_frames == 4
    assert policy.frontend.chunk_size == 50 and policy.refresh.threshold == 3.0

"""``sim_eval.policies.pi05.build_policy``: the Hydra target builds a working cache-wrapped policy from a checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FIXTURES as FIX

from sim_eval.policies.base import Policy, TaskContext, check_infer_result


def _build(**kw):
    from sim_eval.policies.pi05 import build_policy

    args = dict(
        checkpoint=str(FIX / "tiny_lerobot"),
        model_sizes=str(FIX / "tiny_config.json"),
        tokenizer=str(FIX / "tokenizer"),
        device="cpu",
    )
    args.update(kw)
    return build_policy(**args)


def test_build_policy_runs_libero_observation():
    torch.set_num_threads(1)
    policy = _build(cache="adaptive3", refresh={"threshold": 5.0, "views": ["agentview"]}, shadow=True)
    assert isinstance(policy, Policy)
    policy.reset(TaskContext("libero_spatial", 0, "pick up the bowl", 0, noise_seed=11))
    rng = np.random.default_rng(0)
    frame = {
        "agentview": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
    }
    obs = {"images": frame, "state": np.zeros(8, np.float32), "instruction": "pick up the bowl"}
    infos = []
    for _ in range(3):
        result = policy.infer(obs)
        assert check_infer_result(result).shape == (50, 7)
        infos.append(json.loads(json.dumps(result["info"])))
    assert [i["used_full"] for i in infos] == [True, False, False]
    assert infos[1]["shadow_cos"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cache": "cache1"}, "N >= 2"),
        ({"refresh": {"thresh": 3}}, "unknown keys"),
        ({"engine": "tensorrt"}, "unknown engine"),
        ({"dtype": "float16"}, "float32 or bfloat16"),
        ({"camera_map": {"agentview": "nope"}}, "camera_map"),
        ({"checkpoint": "/nonexistent/ckpt"}, "/nonexistent/ckpt"),
    ],
)
def test_build_policy_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _build(**kwargs)


def test_replay_mode_wraps_a_full_policy_and_replays_its_chunk():
    from sim_eval.policies.replay import ReplayPolicy

    torch.set_num_threads(1)
    policy = _build(cache="replay2", replan_steps=5)
    assert isinstance(policy, ReplayPolicy) and policy.policy.mode.kind == "full"
    policy.reset(TaskContext("libero_spatial", 0, "pick up the bowl", 0, noise_seed=11))
    rng = np.random.default_rng(0)
    frame = {v: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for v in ("agentview", "wrist")}
    obs = {"images": frame, "state": np.zeros(8, np.float32), "instruction": "pick up the bowl"}
    first, second = policy.infer(obs), policy.infer(obs)
    np.testing.assert_array_equal(check_infer_result(second), check_infer_result(first)[5:])
    assert second["info"]["replayed"] and second["info"]["infer_ms"] == 0.0
    assert policy.infer(obs)["info"]["infer_index"] == 2  # a full frame again, at the noise of its position
    with pytest.raises(ValueError, match="replay2 needs 2 x protocol.replan_steps=30 = 60 .* holds 50"):
        _build(cache="replay2", replan_steps=30)

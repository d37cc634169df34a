"""The zero-compute arm ``replay<N>``: grammar, refusal when the chunk is too short, and in the control loop the
actions of a replayed frame are the stored chunk's next ones, recorded with zero compute."""

from __future__ import annotations

import numpy as np
import pytest

from sim_eval.analysis.stats import inference_kind, latency_by_kind, parse_mode, refresh_stats
from sim_eval.config import ConfigError, Pi05PolicyConfig
from sim_eval.policies.base import TaskContext
from sim_eval.policies.cache_mode import CacheMode
from sim_eval.policies.replay import ReplayPolicy
from sim_eval.runtime.rollout import run_episode

CHUNK, REPLAN = 10, 5


class ChunkPolicy:
    """Returns chunk number c as actions c*100 + row (column 0) so every executed action names its chunk and row;
    counts its calls and the noise slots skipped."""

    def __init__(self):
        self.calls = self.skipped = 0

    def reset(self, task):
        self.calls = self.skipped = 0

    def infer(self, obs):
        actions = np.zeros((CHUNK, 7))
        actions[:, 0] = self.calls * 100 + np.arange(CHUNK)
        self.calls += 1
        return {"actions": actions, "info": {"infer_ms": 12.0, "prefix_ms": 8.0, "denoise_ms": 4.0, "used_full": True}}

    def skip(self):
        self.skipped += 1


class StepEnv:
    """A 40-step episode whose state carries the gripper opening and eef height the records keep."""

    language, env_seed = "pick", 7

    def __init__(self, limit=40):
        self.limit, self.t, self.executed = limit, 0, []

    def _obs(self):
        return {"state": np.array([0, 0, 1.0 + self.t / 1000, 0, 0, 0, 0.04, -0.04], np.float32), "images": {}}

    def reset(self, options=None):
        self.t, self.executed = 0, []
        return self._obs(), {}

    def step(self, action):
        self.executed.append(np.asarray(action).copy())
        self.t += 1
        return self._obs(), 0.0, False, self.t >= self.limit, {}


def _task():
    return TaskContext(suite="libero_object", task_id=0, language="pick", episode_index=0, noise_seed=1)


def test_grammar_has_replay_and_analysis_reads_it_with_the_same_rule():
    mode = CacheMode.parse("replay2")
    assert (mode.kind, mode.period, mode.name) == ("replay", 2, "replay2")
    assert parse_mode("replay2") == ("replay", 2)
    assert parse_mode("adaptive3@mae4.2") == ("adaptive", 3)
    assert parse_mode("-") == ("-", None)
    with pytest.raises(ValueError, match="replay needs N >= 2"):
        CacheMode.parse("replay1")


def test_refused_when_the_chunk_is_too_short():
    CacheMode.parse("replay2").check_chunk(CHUNK, REPLAN)  # 2 x 5 = 10 fits
    CacheMode.parse("cache3").check_chunk(CHUNK, REPLAN)  # modes that call the model need nothing of the chunk
    with pytest.raises(ValueError) as err:
        CacheMode.parse("replay3").check_chunk(CHUNK, REPLAN)
    assert str(err.value) == (
        "cache mode replay3 needs 3 x protocol.replan_steps=5 = 15 actions of one chunk, "
        "but the policy's chunk holds 10"
    )
    with pytest.raises(ValueError, match="replay3 needs 3 x"):
        ReplayPolicy(ChunkPolicy(), "replay3", REPLAN, CHUNK)


def test_config_refuses_replay_past_the_embedded_chunk_in_one_line():
    assert Pi05PolicyConfig(cache="replay2", replan_steps=5).cache_mode == "replay2"
    with pytest.raises(ConfigError, match=r"^policy.cache: cache mode replay2 needs 2 x protocol.replan_steps=6 = 12"):
        Pi05PolicyConfig(cache="replay2", replan_steps=6)


def test_replayed_frames_execute_the_stored_chunks_next_actions_at_zero_compute():
    inner, env = ChunkPolicy(), StepEnv()
    policy = ReplayPolicy(inner, "replay2", REPLAN, CHUNK)
    record = run_episode(env, policy, suite="libero_object", task_id=0, episode_index=0, replan_steps=REPLAN)
    assert record["error"] is None and record["steps"] == 40
    executed = np.array(env.executed)[:, 0]
    # chunk c is computed at inferences 2c; its rows 0-4 then 5-9 run: each chunk played whole, in order
    expected = np.concatenate([c * 100 + np.arange(CHUNK) for c in range(4)])
    np.testing.assert_array_equal(executed, expected)
    assert inner.calls == 4 and inner.skipped == 4  # the model ran on every other inference; noise slots kept
    infs = record["inferences"]
    assert [inference_kind(i) for i in infs] == ["full", "replayed"] * 4
    replayed = infs[1]
    assert replayed["replayed"] is True and replayed["infer_ms"] == 0.0 and replayed["used_full"] is False
    assert [row[0] for row in replayed["executed"]] == [5, 6, 7, 8, 9]  # the chunk's next actions, recorded
    assert (replayed["eef_z"], replayed["grip"]) == (1.005, 0.08)
    assert [i["infer_index"] for i in infs] == list(range(8))
    assert latency_by_kind([record])["replayed"]["p50"] == 0.0
    assert refresh_stats([record])["replayed_inferences"] == 4


def test_reset_starts_each_episode_with_a_full_inference():
    inner = ChunkPolicy()
    policy = ReplayPolicy(inner, "replay2", REPLAN, CHUNK)
    policy.reset(_task())
    policy.infer({})
    policy.reset(_task())
    assert "replayed" not in policy.infer({})["info"]


def test_mechanism_fields_are_small_and_json_safe():
    from sim_eval.runtime.rollout import _compact, mechanism_fields

    actions = np.full((CHUNK, 7), 0.123456)
    actions[0, 0] = np.nan
    obs = {"state": np.array([0, 0, 0.91234567, 0, 0, 0, 0.03, -0.03])}
    fields = _compact(mechanism_fields(obs, actions, REPLAN))
    assert len(fields["executed"]) == REPLAN and fields["executed"][1][0] == 0.1235
    assert fields["executed"][0][0] is None  # a NaN action is recorded as null: the record line stays valid JSON
    assert (fields["eef_z"], fields["grip"]) == (0.9123, 0.06)
    assert "eef_z" not in mechanism_fields({}, actions, REPLAN)  # an env without the 8-D state

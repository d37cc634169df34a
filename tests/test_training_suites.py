"""One training set and one model for several suites (issue 28): the export keys every demo by (suite, task) and
refuses sources that are not one world, training conditions on every suite's instructions with one normalizer over
all of them, and the checkpoint answers a prompt of each suite through the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO, run_cli
from conftest import synthetic_demo_dir as demo_dir

OBJECT = {0: "pick up the soup and place it in the basket", 1: "pick up the milk and place it in the basket"}
# goal task 1 says what object task 1 says: identical texts across suites are one prompt twice, not an error
GOAL = {0: "open the top drawer of the cabinet", 1: OBJECT[1]}


@pytest.fixture(scope="module")
def two_suites(tmp_path_factory):
    root = tmp_path_factory.mktemp("suites")
    obj = demo_dir(root / "object", [0, 1, 0], suite="libero_object", instruction=OBJECT)
    # goal's labels three times larger: the normalizer's range must come from both suites
    goal = demo_dir(root / "goal", [0, 1], steps=9, suite="libero_goal", instruction=GOAL, label_scale=3.0)
    return root, obj, goal


def test_export_keys_demos_by_suite_and_task(two_suites, tmp_path):
    from sim_eval.training.dataset import TrainingSet, export_dataset

    root, obj, goal = two_suites
    meta = export_dataset([obj, goal], tmp_path / "set")
    assert meta["suite"] == "libero_object,libero_goal" and "instructions" not in meta  # task ids are per suite
    assert meta["prompts"] == [["libero_object", 0, OBJECT[0]], ["libero_object", 1, OBJECT[1]],
                               ["libero_goal", 0, GOAL[0]], ["libero_goal", 1, GOAL[1]]]  # fmt: skip
    by_suite = meta["suites"]
    assert by_suite["libero_goal"]["instructions"] == {"0": GOAL[0], "1": GOAL[1]}
    assert (by_suite["libero_object"]["episodes"], by_suite["libero_goal"]["episodes"]) == (3, 2)
    assert by_suite["libero_object"]["demos_by_task"] == {"0": 2, "1": 1}
    assert (by_suite["libero_object"]["steps"], by_suite["libero_goal"]["steps"]) == (21, 18)
    assert by_suite["libero_goal"]["frames"] == 2 * 5 and meta["frames"] == 3 * 4 + 2 * 5
    assert meta["source"]["suites"] == ["libero_object", "libero_goal"] and len(meta["source"]["simulators"]) == 2
    assert meta["simulator"]["sim.mujoco"] == "3.2.3"
    data = TrainingSet.load(tmp_path / "set")
    np.testing.assert_array_equal(data.arrays["task_id"], [0, 1, 0, 0, 1])
    np.testing.assert_array_equal(data.arrays["prompt_id"], [0, 1, 0, 2, 3])  # goal's tasks are rows of their own
    assert data.prompts() == {0: OBJECT[0], 1: OBJECT[1], 2: GOAL[0], 3: GOAL[1]}
    assert list(data.frame_prompts()[-5:]) == [3] * 5 and data.suites() == ["libero_object", "libero_goal"]
    # a one-suite set reads as it always has: task-keyed instructions, rows = task ids
    one = export_dataset([obj], tmp_path / "one", per_task=1)
    assert one["suite"] == "libero_object" and one["instructions"] == {"0": OBJECT[0], "1": OBJECT[1]}
    assert TrainingSet.load(tmp_path / "one").prompts() == {0: OBJECT[0], 1: OBJECT[1]}


def test_export_refuses_sources_that_are_not_one_world_in_one_line(two_suites, tmp_path):
    root, obj, goal = two_suites
    old_sim = demo_dir(root / "goal_317", [0], suite="libero_goal", simulator={"sim.mujoco": "3.17.0"})
    big = demo_dir(root / "goal_64", [0], suite="libero_goal", image_size=64)
    for dirs, message in (
        ([obj, old_sim], "simulator differ"),
        ([obj, big], "image_size differ"),
        ([obj, goal, obj], "given twice"),
    ):
        result = run_cli([*map(str, dirs), "--out", str(tmp_path / "set")], cwd=tmp_path, module="sim_eval.export")
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "set").exists()  # refused before anything is written


STEPS = 60


@pytest.fixture(scope="module")
def trained(two_suites, tmp_path_factory):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from test_training import TINY

    from sim_eval.training.config import register_train_config
    from sim_eval.training.dataset import export_dataset
    from sim_eval.training.train import train

    _, obj, goal = two_suites
    out = tmp_path_factory.mktemp("train")
    export_dataset([obj, goal], out / "set")
    register_train_config()
    # no EMA: a few steps of raw weights, so the checkpoint is the trained model, not (nearly) its initialisation
    overrides = [f"data={out / 'set'}", f"out={out / 'run'}", f"optim.steps={STEPS}", "optim.warmup=5",
                 "optim.batch_size=32", "optim.lr=1e-3", "optim.ema_decay=0.0", f"save_at=[{STEPS}]", "log_every=10",
                 "device=cpu", "checkpoint_dtype=float32", "model.vision.image_size=32", *TINY]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO / "sim_eval" / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="train", overrides=overrides))
    train(cfg, out / "run", progress=False)
    return out / "run" / "checkpoints" / f"step_{STEPS:06d}"


def test_training_json_records_the_suites(trained):
    data = json.loads((trained / "training.json").read_text())["data"]
    assert data["suite"] == "libero_object,libero_goal"
    assert set(data["suites"]) == {"libero_object", "libero_goal"} and data["episodes"] == 5
    assert data["suites"]["libero_goal"]["instructions"]["0"] == GOAL[0]


def test_one_normalizer_over_every_suite(trained):
    from safetensors.numpy import load_file

    stats = load_file(str(trained / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"))
    # object's labels reach 0.61, goal's (9 steps, x3) 3 * 0.81: the range is the union's
    np.testing.assert_allclose(stats["action.max"], 3 * 0.81, rtol=1e-5)
    np.testing.assert_allclose(stats["action.min"], 0.01, rtol=1e-5)


def test_the_checkpoint_answers_a_prompt_of_each_suite(trained):
    import torch

    from sim_eval.policies.pi05.engine import load_engine

    engine = load_engine(str(trained), device="cpu", dtype="float32")
    assert engine.info.chunk_size == 10 and not engine.info.state_in_prompt
    rng = np.random.default_rng(0)
    images = {v: rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for v in ("agentview", "wrist")}
    answers = {}
    for text in (OBJECT[0], GOAL[0]):
        prep = engine.prepare({"images": images, "state": np.zeros(8, np.float32), "instruction": text})
        assert 3 not in prep.tokens and len(prep.tokens) == len(text.split()) + 2  # every word known: no <unk>
        noise = engine.sample_noise(torch.Generator().manual_seed(1))
        answers[text] = engine.denoise(engine.encode_prefix(prep), noise)
        assert answers[text].shape == (10, 7) and np.isfinite(answers[text]).all()
    # same images and noise: only the instruction differs, and the answer follows it toward goal's larger labels
    assert answers[GOAL[0]].mean() > answers[OBJECT[0]].mean() + 0.05


def test_a_run_on_a_suite_the_checkpoint_never_saw_is_named(trained):
    from sim_eval.checkpoints import trained_suites, unseen_suite_warning

    assert trained_suites(str(trained)) == ["libero_object", "libero_goal"]
    assert unseen_suite_warning(str(trained), "libero_goal") is None
    assert unseen_suite_warning(str(trained), "libero_goal_swap", base_suite="libero_goal") is None  # a perturbation
    assert "libero_object, libero_goal" in unseen_suite_warning(str(trained), "libero_10")
    assert unseen_suite_warning(str(trained.parent), "libero_10") is None  # no training.json: nothing claimed

"""Training the small Pi0.5 on CPU: a tiny config on a shipped recorded subset (``tests/fixtures/training_set``,
two real demonstrations exported by ``python -m sim_eval.export``) learns, and the LeRobot checkpoint it writes
loads through the engine's ordinary path and reproduces the training model's own sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli
from conftest import synthetic_demo_dir as _demo_dir

DATA = REPO / "tests" / "fixtures" / "training_set"
TINY = [
    "model.vision.width=32", "model.vision.depth=1", "model.vision.num_heads=2", "model.vision.mlp_dim=64",
    "model.vlm.width=32", "model.vlm.depth=2", "model.vlm.mlp_dim=64", "model.vlm.num_heads=2", "model.vlm.head_dim=16",
    "model.expert.width=32", "model.expert.depth=2", "model.expert.mlp_dim=64", "model.expert.num_heads=2",
    "model.expert.head_dim=16",
]  # fmt: skip


def _config(out: Path, steps: int, **extra):
    from hydra import compose, initialize_config_dir

    from sim_eval.training.config import register_train_config

    register_train_config()
    overrides = [f"data={DATA}", f"out={out}", f"optim.steps={steps}", "optim.warmup=5", "optim.batch_size=32",
                 "optim.lr=1e-3", f"save_at=[{steps}]", "log_every=10", "device=cpu", *TINY]  # fmt: skip
    overrides += [f"{k}={v}" for k, v in extra.items()]
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "sim_eval" / "conf"), version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="train", overrides=overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from sim_eval.training.train import train

    out = tmp_path_factory.mktemp("train")
    cfg = _config(out, steps=60, checkpoint_dtype="float32")
    metrics = train(cfg, out, progress=False)
    return cfg, out, metrics


def test_training_set_round_trip():
    from sim_eval.training.dataset import TrainingSet

    data = TrainingSet.load(DATA)
    meta = data.meta
    assert meta["episodes"] == 2 and meta["held_out"]["min_distance_m"] > meta["held_out"]["tolerance_m"]
    frames = meta["frames"]
    for view in ("agentview", "wrist"):
        assert data.images[view].shape == (frames, 128, 128, 3) and data.images[view].dtype == np.uint8
    chunks, valid = data.action_chunks(10)
    assert chunks.shape == (frames, 10, 7) and valid[:, 0].all() and not valid.all()  # episode ends are masked
    ends = data.arrays["step_start"][1:] - 1
    last = data.arrays["frame_step"] == ends[0] - (ends[0] % meta["frame_stride"])
    np.testing.assert_array_equal(chunks[last][0, -1], data.arrays["labels"][ends[0]])  # padded with the last label
    assert set(data.frame_tasks()) == {0, 1}


def test_a_tiny_config_learns(trained):
    _, out, metrics = trained
    history = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert len(history) == 6 and (out / "loss.png").stat().st_size > 1000
    assert np.mean([h["loss"] for h in history[-2:]]) < 0.8 * np.mean([h["loss"] for h in history[:2]])
    assert metrics["checkpoints"] == [str(out / "checkpoints" / "step_000060")]


def test_checkpoint_loads_through_the_engine_and_matches_the_training_sampler(trained):
    from sim_eval.policies.pi05.engine import load_engine
    from sim_eval.policies.pi05.model import Pi05Model
    from sim_eval.training.flow import sample_actions
    from sim_eval.training.train import model_sizes

    cfg, out, _ = trained
    ckpt = out / "checkpoints" / "step_000060"
    engine = load_engine(str(ckpt), device="cpu", dtype="float32")  # tokenizer, sizes, stats: all from the directory
    assert engine.info.sizes.vision.image_size == 128 and engine.info.sizes.vision.patch_size == 16
    assert engine.info.chunk_size == 10 and not engine.info.state_in_prompt
    # the training model's own view of the same weights
    model = Pi05Model(model_sizes(cfg.model, engine.info.sizes.vocab_size))
    from safetensors.torch import load_file

    from sim_eval.policies.pi05.checkpoint import map_key

    weights = {map_key(k[len("model.") :]): v for k, v in load_file(str(ckpt / "model.safetensors")).items()}
    model.load_state_dict(weights)
    model.eval()
    rng = np.random.default_rng(0)
    obs = {
        "images": {v: rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for v in ("agentview", "wrist")},
        "state": np.zeros(8, np.float32),
        "instruction": "pick up the cream cheese and place it in the basket",
    }
    noise = engine.sample_noise(torch.Generator().manual_seed(3))
    prep = engine.prepare(obs)
    got = engine.denoise(engine.encode_prefix(prep), noise)
    tokens = torch.tensor([prep.tokens])
    want = sample_actions(model, prep.images, tokens, noise)[0, :10, :7].numpy()
    np.testing.assert_allclose(got, engine.normalizer.unnormalize_actions(want), atol=1e-5, rtol=0)
    # the tokenizer is the checkpoint's own: BOS, the instruction's words, the line break
    assert prep.tokens[0] == 2 and len(prep.tokens) == 1 + len(obs["instruction"].split()) + 1


def test_train_cli_rejects_bad_input_in_one_line(tmp_path):
    for args, message in (
        ([f"data={tmp_path}"], "not a training set"),
        ([f"data={DATA}", "model.vision.patch_size=15"], "must be a multiple of patch_size=15"),
        ([f"data={DATA}", "model.expert.depth=3"], "model.vlm.depth and model.expert.depth must be equal"),
        ([f"data={DATA}", f"init_from={tmp_path}"], "not a checkpoint written by sim_eval.train"),
    ):
        result = run_cli(args, cwd=tmp_path, module="sim_eval.train", timeout=120)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_several_noise_draws_per_prefix_average_the_single_draw_losses():
    """With k draws per prefix, the loss is the mean over the k draws: duplicating one draw k times gives the
    one-draw loss, and two different draws give the mean of their one-draw losses."""
    from sim_eval.policies.pi05.model import Pi05Model
    from sim_eval.training.config import ModelConfig
    from sim_eval.training.flow import flow_matching_loss, init_weights
    from sim_eval.training.train import model_sizes

    cfg = _config(Path("/unused"), steps=1).model
    assert isinstance(cfg, ModelConfig)
    model = init_weights(Pi05Model(model_sizes(cfg, 32)), 0)
    for p in model.parameters():  # away from the adaLN-zero start, so every input matters
        p.data += 0.05 * torch.randn_like(p)
    g = torch.Generator().manual_seed(0)
    b, chunk = 3, cfg.chunk_size
    images = torch.rand(b, 2, 3, 128, 128, generator=g) * 2 - 1
    tokens = torch.randint(4, 32, (b, 6), generator=g)
    mask = torch.ones(b, 6, dtype=torch.bool)
    mask[0, 4:] = False
    actions = torch.rand(b, chunk, 7, generator=g) * 2 - 1
    valid = torch.ones(b, chunk, dtype=torch.bool)
    noise = [torch.randn(b, chunk, 32, generator=g) for _ in range(2)]
    t = [torch.rand(b, generator=g) for _ in range(2)]
    single = [
        flow_matching_loss(model, images, tokens, mask, actions, valid, n, tt) for n, tt in zip(noise, t, strict=True)
    ]
    same = flow_matching_loss(model, images, tokens, mask, actions, valid, noise[0].repeat_interleave(2, 0),
                              t[0].repeat_interleave(2, 0))  # fmt: skip
    both = flow_matching_loss(model, images, tokens, mask, actions, valid,
                              torch.stack(noise, 1).flatten(0, 1), torch.stack(t, 1).flatten(0, 1))  # fmt: skip
    torch.testing.assert_close(same, single[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both, (single[0] + single[1]) / 2, rtol=1e-5, atol=1e-6)


def test_a_time_limit_fixes_a_schedule_that_ends_within_it():
    from sim_eval.training.train import fit_schedule

    cfg = _config(Path("/unused"), steps=10_000, time_limit_s=100.0)
    # 50 steps took 5 s after a 20 s first step: 0.1 s a step, 75 s left (x 0.97 margin) -> 727 more steps
    assert fit_schedule(cfg, done=50, elapsed_s=25.0, timed_s=4.9) == 50 + int(75.0 * 0.97 // 0.1)
    assert fit_schedule(cfg, done=50, elapsed_s=25.0, timed_s=0.0049) == 10_000  # never beyond optim.steps
    assert fit_schedule(cfg, done=50, elapsed_s=120.0, timed_s=4.9) == 51  # already over: end at the next step


def test_export_packs_several_recordings_and_keeps_every_step(tmp_path):
    from sim_eval.training.dataset import TrainingSet, export_dataset

    a = _demo_dir(tmp_path / "a", [0, 1, 0])
    b = _demo_dir(tmp_path / "b", [1])
    meta = export_dataset([a, b], tmp_path / "set", per_task=2)
    assert meta["episodes"] == 4 and meta["steps"] == 28 and meta["frames"] == 16  # 4 frames (0, 2, 4, 6) a demo
    assert meta["source"]["successes"] == 3 + 1 and meta["dart"]["perturbed_steps"] == 4  # step 3 of each demo
    data = TrainingSet.load(tmp_path / "set")
    np.testing.assert_array_equal(data.arrays["task_id"], [0, 1, 0, 1])  # a's three, then b's task-1 demo
    np.testing.assert_array_equal(data.arrays["frame_step"][:4], [0, 2, 4, 6])
    np.testing.assert_array_equal(data.arrays["frame_step"][4:8], [7, 9, 11, 13])  # offsets into the step arrays
    np.testing.assert_allclose(data.arrays["labels"][:7, 0], 0.1 * np.arange(7) + 0.01, rtol=1e-6)
    assert np.abs(data.images["agentview"][5].astype(int) - data.images["wrist"][5][::-1].astype(int)).mean() < 6
    assert data.meta["instructions"] == {"0": "task 0 words", "1": "task 1 words"}
    with pytest.raises(ValueError, match="frame_stride differ"):
        export_dataset([a, _demo_dir(tmp_path / "c", [0], stride=3)], tmp_path / "other")


def test_a_warm_start_continues_from_the_checkpoint(trained, tmp_path):
    """``init_from``: with a learning rate of ~0 the written weights are the checkpoint's, bit for bit, with its
    tokenizer and normalizer; training.json names the start; other model sizes are refused in one line."""
    from safetensors.numpy import load_file

    from sim_eval.config import ConfigError
    from sim_eval.training.train import train

    _, out, _ = trained
    start = out / "checkpoints" / "step_000060"
    cfg = _config(tmp_path, steps=2, init_from=start, checkpoint_dtype="float32", **{"optim.lr": 1e-30,
                  "optim.final_lr": 0, "optim.warmup": 1, "optim.weight_decay": 0})  # fmt: skip
    train(cfg, tmp_path, progress=False)
    ckpt = tmp_path / "checkpoints" / "step_000002"
    before, after = load_file(str(start / "model.safetensors")), load_file(str(ckpt / "model.safetensors"))
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    for name in ("tokenizer/tokenizer.model", "policy_preprocessor_step_3_normalizer_processor.safetensors",
                 "policy_postprocessor_step_0_unnormalizer_processor.safetensors"):  # fmt: skip
        assert (ckpt / name).read_bytes() == (start / name).read_bytes(), name
    origin = json.loads((ckpt / "training.json").read_text())["init_from"]
    source = json.loads((start / "training.json").read_text())
    assert origin == {"path": str(start), "step": 60, "weights_sha256": source["weights_sha256"]}

    wider = _config(tmp_path / "w", steps=2, init_from=start, **{"model.expert.mlp_dim": 128, "optim.warmup": 1})
    with pytest.raises(ConfigError, match=r"init_from: .*mis-shaped.*mlp.*model\.\* settings") as err:
        train(wider, tmp_path / "w", progress=False)
    assert "\n" not in str(err.value)

"""Bad command lines end in one line on stderr with exit code 2, fast, before Hydra writes anything: type errors and
unknown keys, duplicate tasks and empty shards, a sweep with one bad value, unwritable run dirs, damaged weights, and
paths of ``policy=pi05_tiny`` from any working directory."""

from __future__ import annotations

import stat
import time

import pytest
from conftest import FIXTURES, compose, overrides, run_cli, writable_copy

from sim_eval.config import validate

B = ["policy=pi05_tiny", "suite=libero_object", "eval.tasks=[0]", "eval.episodes_per_task=1", "eval.max_steps=30"]


def assert_one_line(result, needle: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sim_eval: error: ") and needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        # 3: the same episode twice, and a shard that would get nothing
        (["eval.tasks=[0,0]"], "eval.tasks names task 0 twice"),
        (["eval.shard.count=5"], "eval.shard.count=5: only 1 episodes planned"),
        # 6: type errors and unknown keys, each named with what is allowed; '+' cannot smuggle a typo in
        (["eval.tasks=abc"], "eval.tasks=abc: expected a list like [a,b], got a single value"),
        (["eval.episodes_per_task=1.5"], "eval.episodes_per_task=1.5: expected a whole number, got '1.5'"),
        (["foo=1"], "foo=1: unknown key 'foo' in the config; allowed are eval, logger, policy, protocol, sim, suite"),
        (["eval.foo=1"], "eval.foo=1: unknown key 'foo' in eval; allowed are episodes_per_task"),
        (["+foo=1"], "+foo=1: '+' adds a key, and sim_eval reads no key 'foo'"),
        (["++eval.foo=1"], "'+' adds a key, and sim_eval reads no key 'eval.foo'"),
        (["policy.cache=full,cache3"], "policy.cache=full,cache3 is a sweep: add -m"),
        (["eval.tasks=[0,"], "eval.tasks=[0,: Hydra's command-line grammar cannot read this value"),
        # 11: a map from the command line is checked like any value
        (["policy.camera_map={top:base_0_rgb}"], "policy.camera_map has view 'top': allowed are agentview, wrist"),
        # 12: run dirs that cannot be written
        (["hydra.run.dir=/proc/x"], "run dir /proc/x: cannot create directories in /proc"),
        (["hydra.run.dir=/etc/hostname/run"], "run dir /etc/hostname/run: /etc/hostname is a file"),
    ],
)
def test_bad_input_is_one_line_fast_and_writes_nothing(tmp_path, args, needle):
    started = time.perf_counter()
    result = run_cli(overrides(*B, *args), cwd=tmp_path, timeout=60)
    elapsed = time.perf_counter() - started
    assert_one_line(result, needle)
    assert list(tmp_path.iterdir()) == []  # 5: no outputs/<date>/<time>/ left behind
    assert elapsed < 5.0  # loose for a loaded CI machine; well under 1 s on a quiet one


def test_sweep_is_checked_as_a_whole_before_its_first_job(tmp_path):
    """7: the bad value of job 1 stops the sweep before job 0 simulates (or Hydra creates the sweep dir)."""
    result = run_cli(["-m", *B, "policy.cache=full,adaptiv3"], cwd=tmp_path, timeout=60)
    line = assert_one_line(result, "invalid cache mode 'adaptiv3'")
    assert line.startswith("sim_eval: error: job 1 (") and "policy.cache=adaptiv3" in line
    assert list(tmp_path.iterdir()) == []


def test_a_file_as_run_dir_is_one_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    assert_one_line(run_cli([*B, f"hydra.run.dir={target}"], cwd=tmp_path, timeout=60), "exists and is not a directory")


def test_writable_copy_of_a_read_only_tree(tmp_path):
    """The damaged-weights tests edit a copy of the fixtures, which the container smoke test mounts read-only as
    another user's files: the copy must come out writable however the source's modes read (checked on the mode bits,
    since root, who runs CI, may write anyway)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "w.bin").write_bytes(b"x")
    (src / "sub" / "w.bin").chmod(0o444)
    for d in (src / "sub", src):
        d.chmod(0o555)
    try:
        dst = writable_copy(src, tmp_path / "dst")
    finally:
        for d in (src, src / "sub"):
            d.chmod(0o755)
    assert (dst / "sub" / "w.bin").read_bytes() == b"x"
    for p in (dst, dst / "sub", dst / "sub" / "w.bin"):
        assert p.stat().st_mode & stat.S_IWUSR, oct(p.stat().st_mode)


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_damaged_weights_are_one_line_naming_the_file(tmp_path, damage):
    """8: a garbage, zero-byte or truncated model.safetensors is named, before any model is read."""
    checkpoint = tmp_path / "ckpt"
    writable_copy(FIXTURES / "tiny_lerobot", checkpoint)
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"garbage": b"\xff" * 4096, "empty": b"", "truncated": data[: len(data) // 2]}[damage])
    started = time.perf_counter()
    result = run_cli([*B, f"policy.checkpoint={checkpoint}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    line = assert_one_line(result, str(weights))
    assert ("truncated" in line) == (damage == "truncated")
    assert not (tmp_path / "run").exists()
    assert time.perf_counter() - started < 5.0


def test_pi05_tiny_works_from_any_directory(tmp_path, monkeypatch):
    """13: the preset's fixture paths resolve under the repository, not the working directory."""
    monkeypatch.chdir(tmp_path)
    run = validate(compose(["policy=pi05_tiny"]))
    assert run.policy.checkpoint == str(FIXTURES / "tiny_lerobot")
    assert run.policy.tokenizer == str(FIXTURES / "tokenizer")
    assert run.policy.model_sizes == str(FIXTURES / "tiny_config.json")


def test_pi05_tiny_from_another_directory_reaches_the_checks_after_its_paths(tmp_path):
    assert_one_line(run_cli(overrides(*B, "eval.tasks=[12]"), cwd=tmp_path, timeout=60), "task id 12")


def test_camera_map_is_settable_from_the_command_line():
    """11: a map given on the command line reaches the policy config (it was a 45-line OmegaConf error)."""
    run = validate(compose([*B, "policy.camera_map={agentview:base_0_rgb,wrist:left_wrist_0_rgb}"]))
    assert run.policy.camera_map == {"agentview": "base_0_rgb", "wrist": "left_wrist_0_rgb"}
    assert validate(compose(B)).policy.camera_map is None


def test_camera_map_from_the_command_line_reaches_the_engine():
    """11: the map is what the engine feeds each checkpoint camera from (here swapped against the default order)."""
    from sim_eval.runtime.runner import build_policy

    camera_map = "{agentview:observation.images.left_wrist_0_rgb,wrist:observation.images.base_0_rgb}"
    policy = build_policy(compose([*B, f"policy.camera_map={camera_map}"]).policy)
    assert policy.engine.camera_map == {
        "agentview": "observation.images.left_wrist_0_rgb",
        "wrist": "observation.images.base_0_rgb",
    }


def test_help_lists_choices_not_internal_schemas(tmp_path):
    """16: ``--help`` names the presets a user can pick, never the ``*_schema`` nodes behind them."""
    result = run_cli(["--help"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "_schema" not in result.stdout
    assert "policy: constant, pi05, pi05_tiny, scripted" in result.stdout
    assert "force_resume: false" in result.stdout
    assert list(tmp_path.iterdir()) == []

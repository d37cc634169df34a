"""The run manifest and identity: a run dir run into again under other settings stops with one line (and writes
nothing), every record names the model that produced it, and merge and report refuse records of different models."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import FIXTURES, REPO, compose, run_cli, writable_copy
from conftest import overrides as with_changes

from sim_eval.analysis.runs import build_groups, load_runs
from sim_eval.config import ConfigError, validate
from sim_eval.merge import main as merge_main
from sim_eval.records.manifest import check_resume, identity, matches, write_manifest
from sim_eval.runtime.job import pending_episodes
from sim_eval.runtime.runner import run_meta

B = ["policy=pi05_tiny", "suite=libero_object", "eval.tasks=[0]", "eval.episodes_per_task=2", "eval.max_steps=30"]


def _record(run, episode: int, **extra) -> dict:
    return {
        "key": f"libero_object/0/{episode}",
        "suite": "libero_object",
        "task_id": 0,
        "episode_index": episode,
        **run_meta(run),
        "success": True,
        "steps": 10,
        "inferences": [{"step": 0, "infer_ms": 40.0, "used_full": True, "forced_refresh": False}],
        "error": None,
        **extra,
    }


def _recorded_run(tmp_path, overrides=B, episodes=(0,)):
    """A run dir as a finished run leaves it: manifest, records, Hydra's overrides."""
    run = validate(compose(overrides))
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    write_manifest(run_dir, identity(run), {})
    (run_dir / "episodes.jsonl").write_text("".join(json.dumps(_record(run, e)) + "\n" for e in episodes))
    return run, run_dir


def _changed_checkpoint(tmp_path) -> str:
    """A copy of the tiny checkpoint whose weights differ by one byte of tensor data (the header stays valid)."""
    checkpoint = tmp_path / "other_ckpt"
    writable_copy(FIXTURES / "tiny_lerobot", checkpoint)
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return f"policy.checkpoint={checkpoint}"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("policy.cache=cache3", "policy.cache: full -> cache3"),
        ("protocol.env_seed=8", "protocol.env_seed: 7 -> 8"),
        ("eval.max_steps=20", "eval.max_steps: 30 -> 20"),
        ("checkpoint", "policy.checkpoint: sha256:"),
    ],
)
def test_resume_under_other_settings_stops_with_one_line_and_writes_nothing(tmp_path, change, needle):
    """1: the dir's records stay, its .hydra/ still names the old settings, and the error says how to go on."""
    _, run_dir = _recorded_run(tmp_path)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    change = _changed_checkpoint(tmp_path) if change == "checkpoint" else change
    result = run_cli(with_changes(*B, change, f"hydra.run.dir={run_dir}"), cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sim_eval: error: {run_dir} holds a run with other settings")
    assert needle in lines[0] and "hydra.run.dir" in lines[0] and "eval.force_resume=true" in lines[0]
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_same_settings_resume_and_a_forced_one_runs_only_its_own_episodes(tmp_path):
    run, run_dir = _recorded_run(tmp_path)
    check_resume(run_dir, identity(run), force=False)
    assert pending_episodes(run, run_dir)[0] == [(0, 1)]
    other = validate(compose([*B, "policy.cache=cache3", "eval.force_resume=true"]))
    with pytest.raises(ConfigError, match="policy.cache: full -> cache3"):
        check_resume(run_dir, identity(other), force=False)
    check_resume(run_dir, identity(other), force=True)
    # the old settings' record is not a done episode of the new ones
    assert pending_episodes(other, run_dir)[0] == [(0, 0), (0, 1)]


def test_a_run_dir_from_before_manifests_is_checked_against_its_records(tmp_path):
    run, run_dir = _recorded_run(tmp_path)
    (run_dir / "manifest.json").unlink()
    legacy = {k: v for k, v in json.loads((run_dir / "episodes.jsonl").read_text()).items() if k != "identity"}
    (run_dir / "episodes.jsonl").write_text(json.dumps(legacy) + "\n")
    check_resume(run_dir, identity(run), force=False)
    assert matches(legacy, identity(run))
    with pytest.raises(ConfigError, match="eval.max_steps: 30 -> 20"):
        check_resume(run_dir, identity(validate(compose([*B, "eval.max_steps=20"]))), force=False)


def test_corrupt_record_in_the_middle_is_one_line_naming_file_and_line(tmp_path):
    """4: a damaged line (not the torn last one a kill leaves) stops resume, merge and report with one line."""
    _, run_dir = _recorded_run(tmp_path, episodes=(0, 1))
    lines = (run_dir / "episodes.jsonl").read_text().splitlines()
    (run_dir / "episodes.jsonl").write_text(lines[0] + "\n{not json\n" + lines[1] + "\n")
    needle = f"{run_dir / 'episodes.jsonl'}:2: corrupt episode record"
    result = run_cli([*B, f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"sim_eval: error: {needle}: fix or delete that line to resume this run"
    ]
    for module in ("sim_eval.merge", "sim_eval.report"):
        other = run_cli([str(run_dir), "--out", str(tmp_path / module)], cwd=tmp_path, timeout=60, module=module)
        assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1, other.stderr
        assert needle in other.stderr


def test_every_record_names_its_model_and_versions():
    """2: checkpoint hash, engine, dtype, kernels, cache mode, protocol, step limit and seed on every record, with
    the sim_eval version and the device beside them."""
    meta = run_meta(validate(compose([*B, "policy.dtype=bfloat16"])))
    ident = meta["identity"]
    assert ident["policy.checkpoint"].startswith("sha256:") and len(ident["policy.checkpoint"]) == 7 + 64
    assert ident["policy.engine"] == "native" and ident["policy.dtype"] == "bfloat16"
    assert ident["policy.kernels"] == "auto" and ident["policy.cache"] == "full" and ident["eval.max_steps"] == 30
    assert meta["info"]["sim_eval"] == "0.1.0" and meta["info"]["policy.device"] == "cpu"
    assert "policy.refresh.threshold" not in ident  # acts only in adaptive modes
    assert "policy.refresh.threshold" in identity(validate(compose([*B, "policy.cache=adaptive3"])))


def _two_checkpoint_runs(tmp_path):
    _, first = _recorded_run(tmp_path / "a")
    _, second = _recorded_run(tmp_path / "b", overrides=[*B, _changed_checkpoint(tmp_path)], episodes=(1,))
    return first, second


def test_merge_refuses_records_of_different_checkpoints(tmp_path, capsys):
    first, second = _two_checkpoint_runs(tmp_path)
    assert merge_main([str(first), str(second), "--out", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "come from runs with other settings (policy.checkpoint: sha256:" in err[0]
    assert not (tmp_path / "merged").exists()


def test_report_refuses_records_of_different_checkpoints_but_pairs_cache_modes(tmp_path):
    first, second = _two_checkpoint_runs(tmp_path)
    with pytest.raises(ValueError, match="policy.checkpoint: sha256:"):
        build_groups(load_runs([first, second]))
    _, cached = _recorded_run(tmp_path / "c", overrides=[*B, "policy.cache=cache3"])
    assert sorted(g.mode for g in build_groups(load_runs([first, cached]))) == ["cache3", "full"]


def test_one_model_over_two_suites_is_reported_but_not_another_model_on_the_second(tmp_path):
    """A multirun over suite= gives records whose identity differs in the suite and its step limit: one model, one
    report. A different checkpoint on the second suite is still refused."""
    from sim_eval.records.manifest import check_not_mixed

    run_a = validate(compose([*B]))
    run_b = validate(compose([*B[:1], "suite=libero_spatial", *B[2:4]]))
    a = _record(run_a, 0)
    b = {**_record(run_b, 0), "key": "libero_spatial/0/0", "suite": "libero_spatial"}
    assert a["identity"]["suite"] != b["identity"]["suite"]
    check_not_mixed([a, b], "cannot report")
    other = {**b, "identity": {**b["identity"], "policy.checkpoint": "sha256:" + "0" * 64}}
    with pytest.raises(ValueError, match="policy.checkpoint"):
        check_not_mixed([a, other], "cannot report")
    longer = {**a, "key": "libero_object/0/1", "identity": {**a["identity"], "eval.max_steps": 99}}
    with pytest.raises(ValueError, match="eval.max_steps"):
        check_not_mixed([a, longer], "cannot report")


def test_model_sizes_by_name_or_by_file():
    """policy.model_sizes names a variant (pi05: the real sizes, for random-weight throughput runs) or a JSON file:
    the name is the identity as given, a file its content hash (a run with random real-size weights could not start
    while the name was hashed as a path)."""
    named = identity(validate(compose(["policy.model_sizes=pi05", "policy.random_weights=true"])))
    assert named["policy.model_sizes"] == "pi05"
    filed = identity(validate(compose([f"policy.model_sizes={FIXTURES / 'tiny_config.json'}"])))
    assert filed["policy.model_sizes"].startswith("sha256:")


def test_run_info_names_the_code_commit():
    """Every record carries the commit of the code that made it (beside the identity: resuming under a later commit
    is allowed, and the records then say which episodes which commit ran)."""
    import subprocess

    from sim_eval.records.manifest import CODE_PATHS, code_commit

    if shutil.which("git") is None:  # the docker image has none (docker/smoke.sh runs the tests there)
        pytest.skip("no git on this machine")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    commit = code_commit()
    assert commit is not None and commit.removesuffix("+dirty") == head.stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--", *CODE_PATHS]).returncode == 1
    assert commit.endswith("+dirty") == dirty

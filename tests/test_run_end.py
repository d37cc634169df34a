"""How runs end and are put together: summary.json with latency, the line per job a sweep ends with, and the
README's merge command on a real sweep layout (Hydra's multirun.yaml beside the shards, one shard that failed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, run_cli

from sim_eval.analysis.summary import write_summary
from sim_eval.callbacks import multirun_summary
from sim_eval.merge import main as merge_main
from sim_eval.records.episodes import read_records


def _record(key: str, success: bool, kinds=("full", "cached")) -> dict:
    task, episode = (int(x) for x in key.split("/")[1:])
    infs = [{"step": 5 * i, "infer_ms": {"full": 40.0, "cached": 20.0}[k], "used_full": k == "full",
             "forced_refresh": False} for i, k in enumerate(kinds)]  # fmt: skip
    return {"key": key, "suite": "libero_object", "task_id": task, "episode_index": episode, "policy": "pi05",
            "cache_mode": "cache2", "seed": 0, "success": success, "inferences": infs, "error": None}  # fmt: skip


def _job(directory, overrides: list[str], records: list[dict] | None) -> None:
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if records is not None:  # None: a job that failed before its first record
        (directory / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        write_summary(directory, records)


def test_summary_json_has_latency_and_refresh_rate(tmp_path):
    """14: summary.json carries latency per inference kind, not only success."""
    summary = write_summary(tmp_path, [_record("libero_object/0/0", True), _record("libero_object/0/1", False)])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert on_disk["latency_ms"]["full"]["p50"] == 40.0 and on_disk["latency_ms"]["cached"]["n"] == 2
    assert on_disk["refresh"]["full_fraction"] == 0.5


def test_a_sweep_ends_with_a_line_per_job_and_the_report_command(tmp_path):
    """14: the multirun summary names each job's settings, its success with interval and latency, and the failed
    job as such."""
    _job(tmp_path / "0", ["policy.cache=cache2"], [_record("libero_object/0/0", True)])
    _job(tmp_path / "1", ["policy.cache=cache3"], None)
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    lines = multirun_summary(tmp_path).splitlines()
    assert lines[0] == f"multirun: 2 jobs in {tmp_path}"
    assert lines[1] == (
        "  job 0 (policy.cache=cache2): success 1/1 = 100% (95% CI 21%-100%), 0 crashed; "
        "latency p50: full 40.0 ms, cached 20.0 ms; full prefix on 50% of inferences"
    )
    assert lines[2] == "  job 1 (policy.cache=cache3): no summary (the job ended before it finished)"
    assert lines[3] == f"  report: python -m sim_eval.report {tmp_path}"


def test_readme_merge_command_merges_a_sweep_with_a_failed_shard(tmp_path):
    """15: the command as the README writes it, on Hydra's layout: multirun.yaml does not stop it, and a shard that
    failed before its first record is skipped with a warning instead of aborting the merge."""
    readme = (REPO / "README.md").read_text()
    command = re.search(r"`(python -m sim_eval\.merge outputs/multirun/<date>/<time>/[^`]*)`", readme).group(1)
    sweep = "outputs/multirun/2026-01-01/10-00-00"
    _job(tmp_path / sweep / "0", ["eval.shard.index=0"], [_record("libero_object/0/0", True)])
    _job(tmp_path / sweep / "1", ["eval.shard.index=1"], [_record("libero_object/0/1", False)])
    _job(tmp_path / sweep / "2", ["eval.shard.index=2"], None)
    (tmp_path / sweep / "multirun.yaml").write_text("hydra: {}\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    shell = command.replace("<date>/<time>", "2026-01-01/10-00-00")
    result = subprocess.run(shell, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "merged 2 episodes of 2 run dirs" in result.stdout
    assert f"skipping {sweep}/2: no episodes.jsonl" in result.stderr
    out = tmp_path / re.search(r"--out (\S+)", command).group(1)
    assert sorted(r["key"] for r in read_records(out / "episodes.jsonl")) == ["libero_object/0/0", "libero_object/0/1"]


def test_merge_onto_a_file_is_one_line(tmp_path, capsys):
    """12: ``--out`` naming a file is one line, not a traceback."""
    _job(tmp_path / "0", [], [_record("libero_object/0/0", True)])
    (tmp_path / "file").write_text("x")
    assert merge_main([str(tmp_path / "0"), "--out", str(tmp_path / "file")]) == 2
    line = f"sim_eval.merge: error: --out {tmp_path / 'file'}: exists and is not a directory"
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_report_onto_a_file_is_one_line(tmp_path):
    _job(tmp_path / "0", [], [_record("libero_object/0/0", True)])
    (tmp_path / "file").write_text("x")
    result = run_cli([str(tmp_path / "0"), "--out", str(tmp_path / "file")], cwd=tmp_path, module="sim_eval.report")
    assert result.returncode == 2
    line = f"report: error: --out {tmp_path / 'file'}: exists and is not a directory"
    assert result.stderr.strip().splitlines() == [line]

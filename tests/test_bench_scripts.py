"""The GPU measuring scripts start and print on the CPU, so a GPU session does not find them broken: ``check_batched``
on the fixtures' tiny model (fp32: batched equals batch 1 to 1e-5 at every batch size), ``bench_gpu_eval`` running
the real evaluator with batch-1 workers and with the batched server (a short simulator run: ``sim``), and
``compile_expert_kernels`` compiling the real-size denoise kernels for an H100 (what the interpreter cannot check)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import FAST_SIM, FIXTURES, REPO


def _script(name: str, *args: str, timeout: float = 600, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0", **env_vars}
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_check_batched_prints_each_batch_size_and_batched_equals_batch_one_in_fp32():
    proc = _script("check_batched.py", "--device", "cpu", "--dtype", "float32", "--checkpoint",
                   str(FIXTURES / "tiny_lerobot"), "--model-sizes", str(FIXTURES / "tiny_config.json"),
                   "--tokenizer", str(FIXTURES / "tokenizer"), "--batches", "1", "3", "--reps", "1",
                   "--baseline")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    diffs = {int(b): float(d) for b, d in re.findall(r"B= ?(\d+): max\|Δa\| batched vs batch-1 (\S+)", proc.stdout)}
    assert sorted(diffs) == [1, 3], proc.stdout
    assert max(diffs.values()) <= 1e-5, proc.stdout
    assert "kernels torch (batched step: Pi05Model)" in proc.stdout and "batch-1 denoise" in proc.stdout
    before = [float(d) for d in re.findall(r"baseline \(eager torch step\) .* max\|Δa\| vs batched (\S+)", proc.stdout)]
    assert len(before) == 2 and max(before) <= 1e-5, proc.stdout


@pytest.mark.sim
def test_bench_gpu_eval_runs_both_paths_and_accounts_for_every_episode(tmp_path):
    proc = _script("bench_gpu_eval.py", "--label", "smoke", "--workers", "2", "--servers", "none", "batched",
                   "--episodes", "1", "--tasks", "0", "1", "--out", str(tmp_path), "--", "policy=pi05_tiny",
                   *FAST_SIM)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for path in ("none", "batched"):
        line = next(li for li in proc.stdout.splitlines() if li.startswith(f"smoke_{path} N= 2:"))
        assert "2 episodes (" in line and "errors 0, doubled 0, lost 0" in line and "warm " in line, line
    rows = json.loads((tmp_path / "smoke.json").read_text())
    assert [(r["label"], r["episodes"]) for r in rows] == [("smoke_none", 2), ("smoke_batched", 2)]
    assert rows[1]["batch_size_mean"] is not None and rows[0]["batch_size_mean"] is None


def test_bench_gpu_eval_reports_a_failed_run_and_goes_on(tmp_path):
    """A run that cannot start (here a bad setting; on a GPU node, N batch-1 engines that do not fit) is a row that
    says so, and the next (N, path) still runs."""
    proc = _script("bench_gpu_eval.py", "--label", "bad", "--workers", "1", "--servers", "none", "batched",
                   "--out", str(tmp_path), "--", "policy=pi05_tiny", "eval.max_steps=0")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    failed = [li for li in proc.stdout.splitlines() if "failed (exit 2" in li]
    assert [li.split(" ")[0] for li in failed] == ["bad_none", "bad_batched"], proc.stdout
    assert "eval.max_steps=0" in failed[0]
    assert [r["failed"][:6] for r in json.loads((tmp_path / "bad.json").read_text())] == ["exit 2"] * 2


def test_the_expert_kernels_compile_for_an_h100_at_batch_one_and_over_a_batch():
    """Real Pi0.5 sizes, chunk 10, batch 1 (preloading tiles) and 2 (row tiles, RoPE positions per slot): every kernel
    compiles for sm_90 and fits its shared memory."""
    pytest.importorskip("triton")
    proc = _script("compile_expert_kernels.py", "--batches", "1", "2", "--chunks", "10", TRITON_INTERPRET="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    lines = [li for li in proc.stdout.splitlines() if li.startswith("B=")]
    assert [li.split(":")[0] for li in lines] == ["B= 1 chunk 10", "B= 2 chunk 10"], proc.stdout
    assert all("kernels compiled for sm_90" in li and "DOES NOT FIT" not in li for li in lines), proc.stdout

"""A run prints what it did and nothing of its dependencies' chatter: no robosuite macro-file warnings, no LIBERO
"[info] Applying task order" line, no PyOpenGL INFO; a policy without a prefix cache ends without a latency line."""

from __future__ import annotations

import pytest
from conftest import FAST_SIM, run_cli

pytestmark = pytest.mark.sim

NOISE = ("private macro file", "setup_macros", "[info] Applying task order", "OpenGL_accelerate", "latency p50")


def test_a_scripted_run_prints_no_dependency_noise(tmp_path):
    args = ["policy=scripted", "suite=libero_object", "eval.tasks=[1,2]", "eval.episodes_per_task=1", *FAST_SIM]
    result = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout + result.stderr
    assert [noise for noise in NOISE if noise in printed] == [], printed[-3000:]
    assert "libero_object scripted:-\n  success 0/2" in result.stdout  # the answer itself is still there

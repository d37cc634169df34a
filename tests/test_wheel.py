"""sim_eval installed as most users and images install it: a wheel built from the checkout, installed (not editable)
into a fresh virtual environment, run from a directory outside the checkout. ``--help`` must list the config groups
(Hydra's configs ship in the package) and one episode of the embedded model must run (its checkpoint and the LIBERO
benchmark table are package data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import FAST_SIM, REPO

pytestmark = pytest.mark.sim  # builds a wheel and runs the real simulator: slow


def _dependency_dirs() -> list[str]:
    """The site-packages directories this interpreter imports the dependencies from. The fresh venv reads them
    through a ``.pth`` file, whose listed directories join ``sys.path`` without their own ``.pth`` files being run:
    an editable install of sim_eval there (the README's ``pip install -e``) stays inert, so ``sim_eval`` can only
    come from the wheel."""
    return [p for p in sys.path if p and Path(p).is_dir() and Path(p).name in ("site-packages", "dist-packages")]


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}", "HYDRA_FULL_ERROR": "0"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the venv's python, a working directory outside the checkout) with the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "sim_eval", source / "sim_eval", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("sim_eval-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"sim_eval"}  # no generic names installed

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "_sim_eval_test_dependencies.pth").write_text("\n".join(_dependency_dirs()) + "\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
        capture_output=True, text=True, timeout=600, env=_clean_env(venv),
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    work = tmp / "elsewhere"
    work.mkdir()
    return python, work


def _run(python: Path, work: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), *args], cwd=work, env=_clean_env(python.parent.parent), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_the_import_is_the_installed_wheel(installed):
    python, work = installed
    where = _run(python, work, "-c", "import sim_eval, sim_eval.policies, sim_eval.checkpoints as c; "
                 "print(sim_eval.__file__); print(c.path())")  # fmt: skip
    assert where.returncode == 0, where.stderr
    module, checkpoint = where.stdout.split()
    venv = python.parent.parent.resolve()
    assert Path(module).resolve().is_relative_to(venv), module  # not the checkout
    assert Path(checkpoint).resolve().is_relative_to(venv) and (Path(checkpoint) / "model.safetensors").is_file()
    for name in ("policies", "checkpoints"):  # no generic top-level names beside it
        assert _run(python, work, "-c", f"import {name}").returncode != 0


def test_help_lists_the_config_groups(installed):
    python, work = installed
    result = _run(python, work, "-m", "sim_eval", "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "policy: constant, pi05, pi05_tiny, scripted" in result.stdout
    assert "protocol: lerobot, openpi" in result.stdout and "arm: adaptive3" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_one_episode_of_the_embedded_model(installed):
    python, work = installed
    run_dir = work / "run"
    result = _run(python, work, "-m", "sim_eval", "policy.cache=adaptive3", "eval.tasks=[0]",
                  "eval.episodes_per_task=1", *FAST_SIM, f"hydra.run.dir={run_dir}")  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (record,) = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    assert record["error"] is None and record["cache_mode"] == "adaptive3" and record["inferences"]
    assert Path(record["checkpoint"]).resolve().is_relative_to(python.parent.parent.resolve())
    assert "success" in result.stdout and f"python -m sim_eval.report {run_dir}" in result.stdout

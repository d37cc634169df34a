"""The bad-input probe: 150+ unusual command lines of ``python -m sim_eval`` and its analysis tools, each of which must
be refused with one clean line (exit 2, fast, nothing written): never a traceback, never a rejected command that left
files behind, never a conflicting or duplicate input run as if it were fine.

Cases run in-process (``cli()`` / ``main(argv)``) so the probe costs seconds, not minutes of interpreter starts; a
case ``python -m sim_eval`` would have run reaches the stubbed Hydra entry and counts as *accepted*. A few cold
starts in real subprocesses check the same answers from the shell. ``python tests/test_bad_input_probe.py`` prints
the table of every case (docs/bad_input_probe.md holds its counts)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIMIT_S = 1.5

# ``{tmp}`` is the probe's scratch dir, ``{file}`` a regular file, ``{corrupt}`` a run dir with an unreadable record,
# ``{nokey}`` one whose record has no ``key``.
SIM_EVAL = [
    # group choices
    "suite=libero_obj", "suite=", "protocol=foo", "policy=pi06", "logger=tensorboard", "arm=cache5",
    "-m suite=libero_object,bogus", "policy=pi05_tiny,constant",
    # unknown keys, '+' and '~'
    "foo=1", "eval.foo=1", "policy.foo=1", "protocol.foo=1", "suite.foo=1", "logger.foo=1", "+foo=1",
    "++eval.foo=1", "eval.shard.foo=1", "policy.refresh.foo=1", "policy=constant policy.cache=cache3",
    "policy=scripted policy.checkpoint=/x", "policy=scripted policy.shadow=true", "~eval.seed", "~eval.seed=0",
    # not KEY=VALUE, or not readable by Hydra's grammar
    "eval.seed", "=3", "eval.tasks=[0,", "eval.tasks=[0,1", "policy.checkpoint=~/ckpt", "policy.checkpoint=~",
    "hydra.run.dir=~/runs",
    # types (each says what the setting takes)
    "eval.tasks=3", "eval.tasks=abc", "eval.tasks=[a]", "eval.episodes_per_task=1.5", "eval.episodes_per_task=abc",
    "eval.episodes_per_task=", "eval.first_episode=x", "eval.max_steps=ten", "eval.video=yes", "eval.video=true",
    "eval.video_fps=0", "eval.num_workers=-1", "eval.num_workers=two", "eval.retry_errors=maybe", "eval.seed=x",
    "eval.seed=1.5", "eval.seed=null", "eval.lag_mae=-1", "eval.gpus=0", "eval.gpus=[a]", "eval.gpus=[-1]",
    "eval.gpus=[99]", "eval.force_resume=perhaps", "eval.shard=2", "eval=3", "protocol.env_seed=abc",
    "protocol.max_steps=3", "protocol.wait_action=1", "policy.cache=[full]", "policy.refresh=3",
    "policy.refresh.views=agentview", "policy.shadow=sometimes", "policy.name=null", "suite.name=[a]",
    "policy.camera_map=3", "policy.camera_map={agentview:3}", "policy.refresh.threshold=abc",
    # ranges and plans
    "eval.tasks=[]", "eval.tasks=[10]", "eval.tasks=[-1]", "eval.tasks=[0,0]", "eval.episodes_per_task=0",
    "eval.episodes_per_task=51", "eval.first_episode=50", "eval.first_episode=-1",
    "eval.first_episode=45 eval.episodes_per_task=10", "eval.max_steps=0", "eval.max_steps=-5",
    "eval.shard.index=3 eval.shard.count=2", "eval.shard.count=0", "eval.shard.index=-1",
    "eval.tasks=[0] eval.episodes_per_task=1 eval.shard.count=2", "eval.server=remote", "eval.server=batched",
    "eval.server=batched eval.num_workers=1 policy=constant",
    "eval.server=batched eval.num_workers=1 policy.engine=flashrt", "eval.server_max_batch=0",
    "eval.server_max_wait_ms=-1", "suite=libero_90 eval.tasks=[90]",
    # protocol
    "protocol.trials_per_task=0", "protocol.num_wait_steps=-1", "protocol.wait_action=[0,0]",
    "protocol.replan_steps=0", "protocol.render_size=8", "protocol.model_image_size=-1",
    "protocol.max_steps.libero_object=0", "protocol=openpi,lerobot",
    # the simulator
    "sim.texture_colorspace=SRGB", "sim.texture_colorspace=", "sim.mujoco=3.2.3",
    # the zero-compute arm
    "policy.cache=replay1", "policy.cache=replay3", "arm=replay2 policy.cache=cache3",
    # the Pi0.5 policy
    "policy.cache=adaptiv3", "policy.cache=cache1", "policy.cache=adaptive1", "policy.cache=cache0",
    "policy.cache=full2", "policy.cache=", "policy.cache=cache", "policy.engine=tensorrt", "policy.dtype=float16",
    "policy.device=tpu", "policy.device=cuda:x", "policy.num_steps=0", "policy.kernels=cuda", "policy.pad_multiple=0",
    "policy.cpu_threads=0", "policy.refresh.threshold=-1", "policy.refresh.views=[]", "policy.refresh.views=[top]",
    "policy.refresh.views=[agentview,agentview]", "policy.camera_map={top:base_0_rgb}", "policy.checkpoint=/no",
    "policy.checkpoint=/etc", "policy.checkpoint={file}", "policy=pi05_tiny policy.model_sizes=[1]",
    # other policies and the logger
    "policy=constant policy.action=[0]", "policy=constant policy.chunk=0", "policy=scripted policy.speed=2",
    "policy=scripted policy.max_attempts=0", "logger.mode=onlin", "logger.mode=",
    # conflicting or duplicate input
    "arm=cache3 policy.cache=full", "arm=control eval.seed=0", "arm=control eval.seed=5",
    "arm=full policy.cache=cache2",
    "-m policy.cache=full,full", "-m arm=full,none", "-m suite=libero_object,libero_object", "-m eval.tasks=[0],[0]",
    "policy.cache=full policy.cache=cache3", "eval.seed=1 eval.seed=1", "-m arm=cache3 policy.cache=full,cache3",
    "-m arm=cache3,cache3", "suite=libero_object suite=libero_10",
    # sweeps: every job is checked before the first runs
    "-m policy.cache=full,adaptiv3", "policy.cache=full,cache3", "-m eval.shard.index=range(0,3) eval.shard.count=2",
    "-m eval.episodes_per_task=1,60", "-m policy.refresh.threshold=2,-1",
    # run dirs and launchers
    "hydra.run.dir=", "-m hydra.sweep.dir=", "hydra.run.dir=/proc/x", "hydra.run.dir=/etc/hostname/run",
    "hydra.run.dir={file}", "-m hydra.sweep.dir=/proc/x policy.cache=full,cache3", "-m hydra/launcher=slurm",
    "hydra.run.dir={corrupt}", "hydra.run.dir={nokey}",
]  # fmt: skip

# (module, arguments)
TOOLS = [
    ("report", ""), ("report", "/nonexistent"), ("report", "{empty}"), ("report", "{nokey}"), ("report", "{corrupt}"),
    ("report", "{sweep} --out {file}"), ("report", "{sweep} --out /proc/x"), ("report", "{sweep} --max-traces -1"),
    ("report", "{sweep} --max-traces abc"), ("report", "{sweep} --bogus"), ("report", "{mixed_ckpt}"),
    ("report", "{mixed_steps}"), ("report", "{file}"),
    ("merge", ""), ("merge", "/nonexistent"), ("merge", "{empty}"), ("merge", "{sweep}/0 {sweep}/1 --out {tmp}/m"),
    ("merge", "{sweep}/0 {copy0} --out {copy0}"), ("merge", "{sweep}/0 --out {file}"),
    ("merge", "{sweep}/0 --out /proc/x"), ("merge", "{nokey} --out {tmp}/m"), ("merge", "{sweep}/0 --bogus"),
    ("merge", "{sweep}/0 {control} --out {tmp}/m"), ("merge", "{mixed_ckpt}/0 {mixed_ckpt}/1 --out {tmp}/m"),
    ("merge", "{corrupt} --out {tmp}/m"),
    ("calibrate", "{sweep}"), ("calibrate", "{sweep} --target-refresh 2"),
    ("calibrate", "{sweep} --target-refresh abc"),
    ("calibrate", "{sweep} --target-refresh 0.3 --views top"), ("calibrate", "{sweep} --target-refresh 0.3 --period 1"),
    ("calibrate", "{sweep} --target-refresh 0.3 --period x"), ("calibrate", "{sweep}/1 --target-refresh 0.3"),
    ("calibrate", "{scripted} --target-refresh 0.3"), ("calibrate", "{mixed_ckpt} --target-refresh 0.3"),
    ("calibrate", "{mixed_steps} --target-refresh 0.3"),
    ("calibrate", "{sweep} --target-refresh 0.3 --json /proc/x/a"),
    ("calibrate", "{sweep} --target-refresh 0.3 --json {tmp}"), ("calibrate", "{nokey} --target-refresh 0.3"),
    ("calibrate", "{sweep} --target-refresh 0.3 --suite libero_99"), ("calibrate", "/nonexistent --target-refresh 0.3"),
    ("calibrate", "{corrupt} --target-refresh 0.3"), ("calibrate", "--target-refresh 0.3"),
]  # fmt: skip


class Accepted(Exception):
    """``python -m sim_eval`` got past every check and would have started Hydra's run."""


def _edit_records(run: Path, fields: dict | None = None, **identity) -> None:
    lines = (run / "episodes.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        record.update(fields or {})
        record["identity"] = {**record["identity"], **identity}
    (run / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def make_fixtures(root: Path) -> dict[str, str]:
    """The dirs the cases name: a synthetic sweep (full, cache3, a control arm), trees mixing checkpoints or step
    limits, a scripted run, damaged records, an empty dir and a file."""
    from sim_eval.analysis.synthetic import make_sweep

    root.mkdir(parents=True, exist_ok=True)
    sweep = make_sweep(root / "sweep", modes=("full", "cache3"), tasks=2, episodes=3, missing=0, control_seed=1)
    mixed_ckpt = make_sweep(root / "mixed_ckpt", modes=("full", "cache3"), tasks=2, episodes=3, missing=0)
    _edit_records(mixed_ckpt / "1", **{"policy.checkpoint": "sha256:other"})
    mixed_steps = make_sweep(root / "mixed_steps", modes=("full", "cache3"), tasks=2, episodes=3, missing=0)
    _edit_records(mixed_steps / "1", **{"eval.max_steps": 100})
    scripted = make_sweep(root / "scripted", modes=("full",), tasks=2, episodes=3, missing=0, policy="scripted") / "0"
    _edit_records(scripted, {"cache_mode": "-"}, **{"policy.name": "scripted"})
    copy0 = shutil.copytree(sweep / "0", root / "copy0")
    corrupt, nokey, empty = root / "corrupt", root / "nokey", root / "empty"
    for run in (corrupt, nokey, empty):
        run.mkdir()
    (corrupt / "episodes.jsonl").write_text("{not json\n{}\n")
    (nokey / "episodes.jsonl").write_text(json.dumps({"suite": "libero_object", "success": True}) + "\n")
    (root / "file").write_text("x")
    paths = {"sweep": sweep, "mixed_ckpt": mixed_ckpt, "mixed_steps": mixed_steps, "scripted": scripted,
             "copy0": copy0, "control": sweep / "2", "corrupt": corrupt, "nokey": nokey, "empty": empty,
             "file": root / "file"}  # fmt: skip
    return {name: str(path) for name, path in paths.items()}


def _tree(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")}


def run_case(module: str, args: str, fixtures: dict[str, str], cwd: Path) -> dict:
    """One case in-process: exit code, stderr lines, seconds, and whether anything under ``cwd`` changed."""
    shown = args
    for name, value in {**fixtures, "tmp": str(cwd)}.items():  # not str.format: values hold braces of their own
        args = args.replace("{" + name + "}", value)
    argv = args.split()
    before = _tree(cwd)
    err, out = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    code: int | str
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            if module == "sim_eval":
                import sim_eval.__main__ as entry

                sys.argv = ["sim_eval", *argv]
                entry.cli()
                code = 0
            else:
                code = __import__(f"sim_eval.{module}", fromlist=["main"]).main(argv)
        except Accepted:
            code = "accepted"
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception as exc:  # noqa: BLE001 - a traceback is what the probe looks for
            code, err = "traceback", io.StringIO(f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - started
    lines = err.getvalue().strip().splitlines()
    return {"module": module, "args": shown, "code": code, "lines": lines, "seconds": seconds,
            "wrote": _tree(cwd) != before}  # fmt: skip


def verdict(result: dict) -> str:
    if result["code"] == "traceback" or any("Traceback" in line for line in result["lines"]):
        return "traceback"
    if result["code"] in ("accepted", 0):
        return "accepted"
    if result["wrote"]:
        return "wrote"
    if result["code"] != 2 or len(result["lines"]) != 1:
        return "not one line"
    return "slow" if result["seconds"] >= LIMIT_S else "clean"


def probe(root: Path, monkeypatch) -> list[dict]:
    import sim_eval.__main__ as entry

    fixtures = make_fixtures(root / "fixtures")
    scratch = root / "cwd"
    scratch.mkdir()
    monkeypatch.chdir(scratch)

    def accepted():
        raise Accepted

    monkeypatch.setattr(entry, "main", accepted)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    cases = [("sim_eval", args) for args in SIM_EVAL] + TOOLS
    return [run_case(module, args, fixtures, scratch) for module, args in cases]


def test_bad_input_probe(tmp_path, monkeypatch):
    results = probe(tmp_path, monkeypatch)
    counts: dict[str, int] = {}
    for result in results:
        result["verdict"] = verdict(result)
        counts[result["verdict"]] = counts.get(result["verdict"], 0) + 1
    bad = [r for r in results if r["verdict"] != "clean"]
    detail = "\n".join(f"{r['verdict']}: {r['module']} {r['args']} -> {r['code']} {r['lines'][:3]}" for r in bad)
    assert len(results) >= 150
    for verdict_ in ("traceback", "accepted", "wrote", "not one line"):
        assert counts.get(verdict_, 0) == 0, f"{counts}\n{detail}"
    assert counts["clean"] >= 0.95 * len(results), f"{counts}\n{detail}"


@pytest.mark.parametrize(("visible", "gpus", "refused"), [("", [0], True), ("0,1", [1], False), ("0,1", [2], True)])
def test_gpus_beyond_the_machine_stop_before_hydra_writes(monkeypatch, visible, gpus, refused):
    """7: eval.gpus=[0] on a CPU machine was refused only after .hydra/ and the log were written."""
    from sim_eval.config import ConfigError
    from sim_eval.preflight import check_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    if refused:
        with pytest.raises(ConfigError, match=re.escape(f"eval.gpus={gpus}: this machine shows")):
            check_gpus(gpus)
    else:
        check_gpus(gpus)


@pytest.mark.parametrize(
    ("module", "args", "needle"),
    [
        ("sim_eval", ["policy.cache=adaptiv3"], "sim_eval: error: policy.cache: invalid cache mode 'adaptiv3'"),
        ("sim_eval", ["-m", "policy.cache=full,full"], "runs the same settings as job 0"),
        ("sim_eval.calibrate", ["."], "--target-refresh F is needed"),
    ],
)
def test_cold_start_answers_in_one_line(tmp_path, module, args, needle):
    """From the shell, as a user meets them: one line, exit 2, nothing written (timing: docs/bad_input_probe.md)."""
    from conftest import run_cli

    result = run_cli(args, cwd=tmp_path, timeout=60, module=module)
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


if __name__ == "__main__":  # the table behind docs/bad_input_probe.md
    import tempfile

    class _Patch:
        def chdir(self, path):
            os.chdir(path)

        def setattr(self, obj, name, value):
            setattr(obj, name, value)

    sys.path.insert(0, str(REPO))
    from sim_eval.config import register_configs

    register_configs()
    with tempfile.TemporaryDirectory() as scratch:
        rows = probe(Path(scratch), _Patch())
        print("| verdict | seconds | command | answer |\n|---|---|---|---|")
        for row in rows:
            row["verdict"] = verdict(row)
            answer = (row["lines"] or [""])[0].replace(scratch, "<tmp>").replace("|", "\\|")
            command = f"{row['module']} {row['args']}".replace("|", "\\|")
            print(f"| {row['verdict']} | {row['seconds']:.2f} | `{command}` | {answer} |")
    tally = {v: sum(r["verdict"] == v for r in rows) for v in {r["verdict"] for r in rows}}
    print(f"\n{len(rows)} cases: {tally}; slowest {max(r['seconds'] for r in rows):.2f} s in-process")

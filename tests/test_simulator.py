"""The simulator in a run's identity, the texture colour-space setting, and the bundle keeping what MuJoCo reads.

Fast tests (no simulator); the rendering itself is checked against LIBERO's training data in test_fidelity.py."""

from __future__ import annotations

import base64
import importlib.util
import io
import json

import numpy as np
import pytest
from conftest import REPO, compose, run_cli
from PIL import Image

from sim_eval.config import ConfigError, validate
from sim_eval.envs import simulator
from sim_eval.records.manifest import check_resume, identity, write_manifest

B = ["policy=pi05_tiny", "suite=libero_object", "eval.tasks=[0]", "eval.episodes_per_task=1", "eval.max_steps=30"]

XML = (
    '<mujoco><asset><texture name="floor" type="2d" file="floor.png"/>'
    '<texture name="sky" type="skybox" builtin="gradient" rgb1="1 1 1" rgb2="0 0 0" width="8" height="8"/>'
    '<texture file="wood.png" colorspace="sRGB" name="wood"></texture></asset></mujoco>'
)


def test_linear_sets_every_file_texture_and_leaves_builtin_ones():
    out = simulator.colorspace_processor("linear", version="3.17.0")(XML)
    assert '<texture name="floor" type="2d" file="floor.png" colorspace="linear"/>' in out
    assert '<texture file="wood.png" name="wood" colorspace="linear">' in out  # an existing choice is replaced
    assert 'builtin="gradient" rgb1="1 1 1" rgb2="0 0 0" width="8" height="8"/>' in out
    assert out.count("colorspace=") == 2


def test_srgb_decodes_file_textures_where_mujoco_can():
    out = simulator.colorspace_processor("srgb", version="3.3.3")(XML)
    assert out.count('colorspace="sRGB"') == 2 and "linear" not in out


@pytest.mark.parametrize(("mode", "version"), [("auto", "3.17.0"), ("linear", "3.2.3"), ("auto", "3.2.3")])
def test_no_hook_where_nothing_is_to_set(mode, version):
    """auto is MuJoCo's own choice; before 3.3.3 textures are sampled as stored and the attribute does not exist."""
    assert simulator.colorspace_processor(mode, version=version) is None


def test_colour_space_checks_and_effective_value():
    assert simulator.check_colorspace("linear", "3.2.3") is None
    assert simulator.check_colorspace("srgb", "3.17.0") is None
    assert "allowed are linear, srgb, auto" in simulator.check_colorspace("SRGB", "3.17.0")
    refusal = simulator.check_colorspace("srgb", "3.2.3")
    assert "MuJoCo 3.2.3" in refusal and "allowed here are linear, auto" in refusal and "\n" not in refusal
    assert simulator.effective_colorspace("auto", "3.2.3") == "linear"
    assert simulator.effective_colorspace("srgb", "3.17.0") == "srgb"
    assert simulator.effective_colorspace("auto", "3.17.0") == "auto (PNG metadata)"


@pytest.mark.parametrize(
    ("version", "warned"), [("3.2.3", False), ("3.3.2", False), ("3.3.3", False), ("3.4.0", True), ("3.17.0", True)]
)
def test_reference_range_warning(version, warned):
    message = simulator.reference_warning(version)
    assert (message is not None) == warned
    if warned:
        assert "\n" not in message and "mujoco==3.2.3" in message


def test_installed_mujoco_is_the_pinned_one():
    """`pip install` gives the MuJoCo the package pins; outside the reference range a run says so."""
    pins = [d for d in _project_dependencies() if d.startswith("mujoco")]
    assert pins == [f"mujoco=={simulator.mujoco_version()}"]
    low, high = simulator.REFERENCE_RANGE
    inside = low <= simulator.version_tuple(simulator.mujoco_version()) < high
    assert (simulator.reference_warning() is None) == inside


def _project_dependencies() -> list[str]:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_identity_names_the_simulator():
    ident = identity(validate(compose(B)))
    assert ident["sim.mujoco"] == simulator.mujoco_version()
    assert ident["sim.robosuite"] == "1.4.0" and ident["sim.libero"] == "0.1.1"
    assert ident["sim.texture_colorspace"] == "linear"


def test_a_model_runs_in_the_world_it_was_trained_in_unless_told(tmp_path):
    """Unset, the colour space is the checkpoint's training one (``training.json``'s ``data.simulator``, as
    ``sim_eval.train`` writes it); a checkpoint that does not say (real Pi0.5, the tiny fixture) gets LIBERO's
    training-data look. The embedded model was trained on the reference simulator, so it runs in ``linear``."""
    import shutil

    assert validate(compose(["policy=pi05"])).sim.texture_colorspace == "linear"
    assert validate(compose(B)).sim.texture_colorspace == "linear"
    assert validate(compose(["policy=scripted"])).sim.texture_colorspace == "linear"
    trained = tmp_path / "ckpt"
    shutil.copytree(REPO / "tests/fixtures/pi05/tiny_lerobot", trained)
    (trained / "training.json").write_text(
        json.dumps({"data": {"simulator": {"sim.texture_colorspace": "auto (PNG metadata)"}}})
    )
    own = validate(compose(B + [f"policy.checkpoint={trained}"]))
    assert own.sim.texture_colorspace == "auto"
    told = validate(compose(B + [f"policy.checkpoint={trained}", "sim.texture_colorspace=linear"]))
    assert told.sim.texture_colorspace == "linear"


def test_srgb_where_mujoco_cannot_is_refused_at_config_time(monkeypatch):
    monkeypatch.setattr(simulator, "mujoco_version", lambda: "3.2.3")
    with pytest.raises(ConfigError, match="sim.texture_colorspace=srgb: MuJoCo 3.2.3"):
        validate(compose([*B, "sim.texture_colorspace=srgb"]))


def test_resume_into_a_run_made_under_another_simulator_is_one_line(tmp_path):
    run = validate(compose(B))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_manifest(run_dir, identity(run) | {"sim.mujoco": "3.1.0", "sim.texture_colorspace": "srgb"}, {})
    now = simulator.mujoco_version()
    with pytest.raises(ConfigError, match=rf"sim.mujoco: 3.1.0 -> {now}"):
        check_resume(run_dir, identity(run), force=False)
    before = sorted(p.name for p in run_dir.iterdir())
    result = run_cli([*B, f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert f"sim.mujoco: 3.1.0 -> {now}" in lines[0] and "sim.texture_colorspace: srgb -> linear" in lines[0]
    assert sorted(p.name for p in run_dir.iterdir()) == before


# ------------------------------------------------------------------------------------------------------ the bundle


def _bundle_module():
    spec = importlib.util.spec_from_file_location("bundle_libero", REPO / "scripts" / "bundle_libero.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _plain_png_as_webp(bundle) -> tuple[bytes, str, bytes]:
    """A PNG without ancillary chunks, and its lossless WebP as the bundle stores it."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    plain = buf.getvalue()
    webp, (mode, _, _) = bundle.png_as_webp(plain)
    return webp, mode, plain


def test_bundle_round_trip_keeps_the_srgb_chunk_mujoco_reads(tmp_path):
    bundle = _bundle_module()
    webp, mode, plain = _plain_png_as_webp(bundle)
    # a source PNG tagged sRGB (rendering intent 0) and with a pHYs chunk, made with the bundle's own writer
    srgb = [["sRGB", base64.b64encode(b"\x00").decode()], ["pHYs", base64.b64encode(bytes(9)).decode()]]
    (tmp_path / "t.webp").write_bytes(webp)
    bundle.webp_to_png(tmp_path / "t.webp", tmp_path / "source.png", mode, srgb)
    source = (tmp_path / "source.png").read_bytes()
    assert bundle.png_chunks(source) == srgb and bundle.png_chunks(plain) == []
    # a source PNG tagged sRGB goes through the archive's WebP and comes back tagged, with its pixels
    webp2, (mode2, digest, chunks) = bundle.png_as_webp(source)
    assert chunks == srgb
    (tmp_path / "t2.webp").write_bytes(webp2)
    bundle.webp_to_png(tmp_path / "t2.webp", tmp_path / "back.png", mode2, chunks)
    back = (tmp_path / "back.png").read_bytes()
    assert bundle.png_chunks(back) == srgb
    assert bundle.pixel_digest(Image.open(tmp_path / "back.png")) == digest
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(back))), np.asarray(Image.open(io.BytesIO(plain))))
    json.dumps(chunks)  # the index stores them as JSON


def test_merge_and_report_refuse_records_from_two_simulators(tmp_path, capsys):
    """A cache mode run under another MuJoCo is not paired with full, and two shards are not merged."""
    from sim_eval.analysis.runs import build_groups, load_runs
    from sim_eval.merge import main as merge_main
    from sim_eval.runtime.runner import run_meta

    dirs = []
    for name, cache, mujoco in (("full", "full", None), ("cached", "cache3", "3.1.0")):
        run = validate(compose([*B, f"policy.cache={cache}"]))
        meta = run_meta(run, identity(run))
        if mujoco:
            meta["identity"] = meta["identity"] | {"sim.mujoco": mujoco}
        inference = {"step": 0, "infer_ms": 40.0, "used_full": True, "forced_refresh": False}
        record = {"key": "libero_object/0/0", "suite": "libero_object", "task_id": 0, "episode_index": 0, **meta,
                  "success": True, "steps": 10, "error": None, "inferences": [inference]}  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "episodes.jsonl").write_text(json.dumps(record) + "\n")
        dirs.append(tmp_path / name)
    with pytest.raises(ValueError, match=r"sim.mujoco: .* -> 3.1.0|sim.mujoco: 3.1.0 -> "):
        build_groups(load_runs(dirs))
    assert merge_main([*map(str, dirs), "--out", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sim.mujoco" in err[0] and not (tmp_path / "merged").exists()


def test_a_split_bundle_is_put_together_only_from_every_unchanged_part(tmp_path):
    bundle = _bundle_module()
    payload = bytes(range(256)) * 9000  # 2.2 MiB: three parts of 1 MiB
    (tmp_path / "site.tar.xz").write_bytes(payload)
    (tmp_path / "manifest.json").write_text("{}")
    names = bundle.split_archive(tmp_path, 1)
    assert names == [f"site.tar.xz.part-0{k}" for k in range(3)] and not (tmp_path / "site.tar.xz").exists()
    assert all((tmp_path / n).stat().st_size <= 2**20 for n in names)
    part = tmp_path / names[1]
    good = part.read_bytes()
    part.write_bytes(good[:-1])  # a truncated transfer
    with pytest.raises(SystemExit, match="part-01: sha256 differs"):
        bundle.join_parts(tmp_path)
    part.unlink()
    with pytest.raises(SystemExit, match="part-01: missing"):
        bundle.join_parts(tmp_path)
    part.write_bytes(good)
    bundle.join_parts(tmp_path)
    assert (tmp_path / "site.tar.xz").read_bytes() == payload

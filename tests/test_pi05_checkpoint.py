"""Checkpoint loading: full-size manifests on the meta device, size override, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES as FIX
from conftest import tiny_engine, writable_copy


def _meta_model():
    from sim_eval.policies.pi05.config import full_size
    from sim_eval.policies.pi05.model import Pi05Model

    with torch.device("meta"):
        return Pi05Model(full_size("gemma_2b", "gemma_300m"))


@pytest.mark.parametrize("layout", ["lerobot", "openpi"])
def test_full_size_manifest_loads_on_meta(layout):
    from sim_eval.policies.pi05.checkpoint import plan_load

    manifest = json.loads((FIX / f"full_size_manifest_{layout}.json").read_text())
    shapes = {k: tuple(v["shape"]) for k, v in manifest["params"].items()}
    meta = manifest.get("expected_safetensors_metadata")
    model = _meta_model()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    plan, skipped = plan_load(expected, shapes, layout, meta, vlm_depth=18)
    assert set(plan) == set(expected)  # every model tensor is fed
    assert sorted(skipped) == sorted(manifest["unused_at_inference"])  # only the known-unused are skipped
    assert all(manifest["params"][k]["used_at_inference"] for k in plan.values())
    state = {name: torch.empty(shapes[key], device="meta") for name, key in plan.items()}
    result = model.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    n_used = sum(v.numel() for v in model.state_dict().values())
    n_skipped = sum(manifest["params"][k]["numel"] for k in skipped)
    assert n_used + n_skipped == manifest["n_params"]


def test_tiny_checkpoint_needs_size_override():
    from sim_eval.policies.pi05.engine import load_engine

    with pytest.raises(ValueError) as err:
        load_engine(str(FIX / "tiny_lerobot"), tokenizer=str(FIX / "tokenizer"), device="cpu")
    msg = str(err.value)
    assert "mis-shaped" in msg and "model_sizes" in msg
    assert "model.action_in_proj.weight: file [32, 32] vs model [1024, 32]" in msg
    engine = tiny_engine()
    assert engine.info.sizes.vlm.width == 64 and engine.chunk_size == 50


def test_size_override_as_config_key(tmp_path):
    from sim_eval.policies.pi05.checkpoint import read_checkpoint_info

    ckpt = tmp_path / "ckpt"
    writable_copy(FIX / "tiny_openpi_layout", ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_sizes"] = json.loads((FIX / "tiny_config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(cfg))
    info = read_checkpoint_info(ckpt)
    assert info.sizes.expert.width == 32 and info.sizes.vocab_size == 512 and not info.sizes_from_variants


def test_missing_unexpected_misshaped_listed():
    from sim_eval.policies.pi05.checkpoint import plan_load

    expected = {"a.weight": (2, 2), "b.weight": (3,), "c.weight": (4,)}
    source = {
        "a.weight": (2, 2),
        "b.weight": (5,),
        "zzz.weight": (1,),
        "paligemma_with_expert.gemma_expert.lm_head.weight": (9, 9),
    }
    with pytest.raises(ValueError) as err:
        plan_load(expected, source, "openpi", None, vlm_depth=18)
    msg = str(err.value)
    assert "1 mis-shaped: b.weight: file [5] vs model [3]" in msg
    assert "1 missing: c.weight" in msg and "1 unexpected: zzz.weight" in msg
    assert "lm_head" not in msg  # known-unused: skipped, not reported


def test_check_checkpoint(tmp_path):
    from sim_eval.policies.pi05 import check_checkpoint

    check_checkpoint(str(FIX / "tiny_lerobot"))
    check_checkpoint(str(FIX / "tiny_openpi_layout"))
    for bad in (tmp_path / "nope", tmp_path):
        with pytest.raises(ValueError) as err:
            check_checkpoint(str(bad))
        assert str(bad) in str(err.value) and "LeRobot" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "config.json").write_text('{"type": "act"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a Pi0.5 checkpoint"):
        check_checkpoint(str(tmp_path))


def test_package_import_is_light():
    code = "import sys, sim_eval.policies.pi05; assert 'torch' not in sys.modules, 'torch imported'"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
    assert time.perf_counter() - t0 < 5


def test_tokenizer_not_found_is_clear(tmp_path, monkeypatch):
    from sim_eval.policies.pi05.processing import find_tokenizer

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "openpi"))
    with pytest.raises(ValueError, match="tokenizer not found offline") as err:
        find_tokenizer(None, "google/paligemma-3b-pt-224")
    assert "paligemma_tokenizer.model" in str(err.value)
    with pytest.raises(ValueError, match="not found"):
        find_tokenizer(str(tmp_path / "missing"), None)
    # found in a simulated HF cache
    snap = tmp_path / "hf" / "hub" / "models--google--paligemma-3b-pt-224" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    shutil.copyfile(FIX / "tokenizer" / "tokenizer.model", snap / "tokenizer.model")
    assert find_tokenizer(None, "google/paligemma-3b-pt-224") == snap / "tokenizer.model"


def test_onboarding_errors_are_short_and_name_the_cli_keys(tmp_path, monkeypatch):
    """A LeRobot checkpoint of other sizes, or no tokenizer in any cache: the error names the command-line key to
    set (``policy.model_sizes`` / ``policy.tokenizer``, not the engine's argument names) and stays readable (it
    was one 2,085-character line of tensor shapes)."""
    from sim_eval.policies.pi05.engine import load_engine
    from sim_eval.policies.pi05.processing import find_tokenizer

    with pytest.raises(ValueError) as err:
        load_engine(str(FIX / "tiny_lerobot"), tokenizer=str(FIX / "tokenizer"), device="cpu")
    message = str(err.value)
    assert len(message) < 700 and "set policy.model_sizes=<json" in message and "(106 more)" in message
    for name in ("HF_HOME", "HF_HUB_CACHE", "OPENPI_DATA_HOME"):
        monkeypatch.setenv(name, str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"; set policy\.tokenizer=<path to tokenizer\.model"):
        find_tokenizer(None, "google/paligemma-3b-pt-224")

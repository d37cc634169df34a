"""A run's identity: the settings that define its results, and the manifest that pins them to a run directory.

The identity is a flat dict keyed by the setting's config name (``policy.cache``, ``protocol.env_seed``,
``eval.max_steps``...), with the checkpoint named by the sha256 of its weights rather than its path (a copied
checkpoint is the same model, an overwritten one is not). Settings that do not change what an episode does
(``policy.shadow``, ``policy.cpu_threads``, where the weights live) are not part of it; they, the device and the
versions are recorded beside it as ``info``.

``manifest.json`` is written with a run's first record and checked whenever the run dir is run into again: a resume
under other settings would otherwise skip every recorded episode and report the old results as the new ones. Every
record carries the identity too, so ``merge`` and ``report`` can refuse to pool records of different models.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sim_eval.config import ConfigError, RunConfig
from sim_eval.envs.simulator import package_version, simulator_identity

MANIFEST_FILE = "manifest.json"
# Keys a paired comparison is allowed to vary across the runs of one policy (the report pairs cache modes and
# control-arm seeds); every other identity key must agree between records that are pooled or paired.
COMPARED_KEYS_PREFIXES = ("policy.cache", "policy.refresh.", "eval.seed")
# Identity keys that differ between the suites one policy runs on (the step limit follows the suite).
_PER_SUITE_KEYS = ("suite", "eval.max_steps")
# Policy settings that change nothing an episode does, or are a path rather than a model (the weights are hashed).
# replan_steps: the protocol's, handed to the policy for replay<N> (protocol.replan_steps is in the identity)
_NOT_IDENTITY = {"_target_", "shadow", "cpu_threads", "device", "checkpoint", "tokenizer", "model_sizes", "camera_map"}
_NOT_IDENTITY |= {"replan_steps"}


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, hashed once per process for a given size and mtime (a big checkpoint takes seconds)."""
    stat = os.stat(path)
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _flatten(f"{prefix}.{key}", value[key], out)
    else:
        out[prefix] = value


def identity(run: RunConfig) -> dict[str, Any]:
    """The settings that define the results of ``run`` (see the module docstring)."""
    policy = run.policy
    fields = dataclasses.asdict(policy)
    ident: dict[str, Any] = {"suite": run.suite.name, "policy.name": policy.name}
    checkpoint = fields.get("checkpoint")
    if checkpoint is not None:
        weights = Path(os.path.expanduser(str(checkpoint))) / "model.safetensors"
        ident["policy.checkpoint"] = "sha256:" + file_sha256(weights)
    sizes = fields.get("model_sizes")
    if sizes:  # a JSON file (hashed) or the name of a known variant (e.g. pi05: the real sizes), kept as named
        sizes_file = Path(os.path.expanduser(str(sizes)))
        ident["policy.model_sizes"] = "sha256:" + file_sha256(sizes_file) if sizes_file.is_file() else str(sizes)
    if fields.get("camera_map"):
        _flatten("policy.camera_map", dict(fields["camera_map"]), ident)
    if "cache" in fields:
        ident["policy.cache"] = policy.cache_mode
        if not policy.cache_mode.startswith("adaptive"):  # the refresh rule only acts in adaptive modes
            fields.pop("refresh", None)
    for key, value in fields.items():
        if key not in _NOT_IDENTITY and key not in ("name", "cache"):
            _flatten(f"policy.{key}", value, ident)
    protocol = dataclasses.asdict(run.protocol)
    protocol.pop("max_steps")  # the limit this suite runs under, whichever of the two settings gave it
    for key, value in protocol.items():
        ident[f"protocol.{key}"] = value
    ident["eval.max_steps"] = run.max_steps
    ident["eval.seed"] = run.eval.seed
    if run.eval.server != "none":  # batched arithmetic (bf16 especially) is not batch 1's: other numbers
        ident["eval.server"] = run.eval.server
    # The simulator makes the pixels and the contacts: another MuJoCo or texture colour space is another world.
    ident.update(simulator_identity(run.sim.texture_colorspace))
    return ident


CODE_PATHS = ("sim_eval", "pyproject.toml")  # the package holds its policies, configs and shipped checkpoints


def code_commit() -> str | None:
    """The git commit of the code running (``+dirty`` when its code -- ``CODE_PATHS`` -- differs from it; records
    written into the checkout do not count), None outside a checkout. Beside the identity, not in it: a run may be
    resumed by a later commit, and each record says which made it."""
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(repo), "diff", "--quiet", "HEAD", "--", *CODE_PATHS], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 1 else "")


def run_info(run: RunConfig) -> dict[str, Any]:
    """What is recorded beside the identity: where the model is, the device asked for, the versions."""
    info: dict[str, Any] = {
        "code_commit": code_commit(),
        "sim_eval": package_version("sim_eval"),
        "torch": package_version("torch"),
        "python": sys.version.split()[0],
    }
    for key in ("checkpoint", "device", "tokenizer", "shadow"):
        if hasattr(run.policy, key):
            info[f"policy.{key}"] = getattr(run.policy, key)
    return info


def digest(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text[:19] if text.startswith("sha256:") else text  # 12 hex digits name a checkpoint well enough


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs (``(unset)`` for one side lacking it)."""
    keys = sorted(set(old) | set(new))
    return [
        f"{key}: {_show(old.get(key, '(unset)'))} -> {_show(new.get(key, '(unset)'))}"
        for key in keys
        if old.get(key, "(unset)") != new.get(key, "(unset)")
    ]


def _legacy_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The part of the identity a record written before records carried one still tells (no checkpoint hash)."""
    ident = {"suite": record.get("suite"), "policy.name": record.get("policy"), "eval.seed": record.get("seed", 0)}
    if record.get("cache_mode") not in (None, "-"):
        ident["policy.cache"] = record["cache_mode"]
    protocol = dict(record.get("protocol") or {})
    if "max_steps" in protocol:
        ident["eval.max_steps"] = protocol.pop("max_steps")
    for key, value in protocol.items():
        ident[f"protocol.{key}"] = value
    return ident


def record_identity(record: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """The identity a record carries, or for an older record the part of ``like``'s keys it can tell."""
    if "identity" in record:
        return record["identity"]
    legacy = _legacy_identity(record)
    return {key: legacy[key] for key in like if key in legacy}


def matches(record: dict[str, Any], ident: dict[str, Any]) -> bool:
    """Whether ``record`` was run under the identity ``ident`` (older records: as far as they tell)."""
    if "identity" in record:
        return record["identity"] == ident
    return record_identity(record, ident) == {key: ident[key] for key in record_identity(record, ident)}


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: unreadable run manifest ({err}); move it away to run into this dir") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("identity"), dict):
        raise ConfigError(f"{path}: not a sim_eval run manifest (no identity); move it away to run into this dir")
    return manifest


def write_manifest(run_dir: str | Path, ident: dict[str, Any], info: dict[str, Any]) -> None:
    from sim_eval.records.episodes import utc_now

    target = Path(run_dir) / MANIFEST_FILE
    tmp = target.with_suffix(".json.tmp")
    manifest = {"identity": ident, "digest": digest(ident), "info": info, "written_at": utc_now()}
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, target)


def check_resume(run_dir: str | Path, ident: dict[str, Any] | Callable[[], dict[str, Any]], force: bool) -> None:
    """Raise ``ConfigError`` (one line) when ``run_dir`` already holds a run under other settings than ``ident``
    (or a record that cannot be read), unless ``force`` (``eval.force_resume=true``): then the new settings' episodes
    are run beside the old records. ``ident`` may be a callable: the checkpoint is hashed only when there is a run to
    compare with."""
    from sim_eval.records.episodes import EPISODES_FILE, read_records

    run_dir = Path(run_dir)
    try:
        records = read_records(run_dir / EPISODES_FILE)
    except ValueError as err:
        raise ConfigError(f"{err}: fix or delete that line to resume this run") from None
    manifest = read_manifest(run_dir)
    if manifest is None and not records:
        return
    ident = ident() if callable(ident) else ident
    if manifest is not None:
        old = manifest["identity"]
    else:  # a run written before manifests: compare what its records tell
        old = record_identity(records[-1], ident)
        ident = {key: ident[key] for key in old if key in ident}
    changed = differences(old, ident)
    if changed and not force:
        raise ConfigError(
            f"{run_dir} holds a run with other settings ({'; '.join(changed)}): give a new hydra.run.dir for "
            "these settings, or eval.force_resume=true to run them beside the old records"
        )


def check_not_mixed(records: Iterable[dict[str, Any]], what: str) -> None:
    """Raise ``ValueError`` (one line) when records of one policy come from runs that differ in anything but the
    settings a paired comparison varies (cache mode, refresh rule, seed): a different checkpoint, protocol or step
    limit would be pooled or paired as if it were the same model. A policy may span suites (a multirun over
    ``suite=``): the suite and the step limit it sets differ between suites, everything else must not. Records
    without an identity are not checked."""
    first: dict[tuple[str, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
    for record in records:
        if "identity" not in record:
            continue
        ident = {k: v for k, v in record["identity"].items() if not k.startswith(COMPARED_KEYS_PREFIXES)}
        policy = str(record.get("policy"))
        across = {k: v for k, v in ident.items() if k not in _PER_SUITE_KEYS}
        for key, compared in (((policy, str(ident.get("suite"))), ident), ((policy,), across)):
            held = first.setdefault(key, (compared, record))
            changed = differences(held[0], compared)
            if not changed:
                continue
            where = [r.get("_run_dir") or r.get("key") for r in (held[1], record)]
            raise ValueError(
                f"{what}: records of policy {record.get('policy')} come from runs with other settings "
                f"({'; '.join(changed)}; e.g. {where[0]} and {where[1]}): give their dirs separately"
            )

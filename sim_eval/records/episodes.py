"""Episode records: the source of truth of every evaluation.

One JSON object per line in ``episodes.jsonl``, appended when an episode finishes (success, failure or crash). Every
summary is derived from these lines (``sim_eval.analysis.summary``); nothing is counted anywhere else. This module
holds the schema (below), the kill-safe log, the reader, deduplication and the arm a record belongs to.

A record holds:
    key                 "<suite>/<task_id>/<episode_index>" -- unique within one run (one policy + cache mode)
    suite, task_id, task_language, episode_index, init_state_index
    env_seed, noise_seed
    policy, cache_mode  policy name and cache mode ("full", "cache3", "adaptive3", "replay2", "-" for cache-less
                        policies)
    identity            the settings that define the results (``sim_eval.records.manifest``: checkpoint sha256, cache
    mode,
                        engine, dtype, protocol, step limit, seed...), the same on every record of a run
    info                beside it: sim_eval / torch / python versions, checkpoint path, device asked for
    protocol            the protocol preset as a dict (name, max_steps, num_wait_steps, replan_steps, render_size...)
    success             true / false; null when the episode crashed
    steps               control steps taken after the wait steps
    wall_s              episode wall time in seconds
    time_s              the control loop's wall time split: physics_s, render_s, observe_s (the env), policy_s
                        (policy calls, GPU waits included), other_s; absent for crashed episodes
    device              what the worker was given: policy (torch device), gpu (CUDA ordinal it renders on or null),
                        egl_device (MUJOCO_EGL_DEVICE_ID), gpu_name, renderer (the OpenGL vendor / renderer /
                        version that drew the cameras: Mesa llvmpipe and NVIDIA EGL give different pixels), cpu
                        (model and torch's SIMD level: episodes repeat exactly on one machine, not across CPUs)
    gpu_mem_mib         policies on CUDA only: what torch holds there at the episode's end (allocated, peak,
                        reserved; ``sim_eval.runtime.devices.cuda_memory_mib``)
    inferences          one compact dict per policy call: {"step": control step, "infer_ms": ..., ...policy info...,
                        "lag_mae": [max-over-views pixel MAE against the inputs 1..N inferences earlier],
                        "executed": the first replan_steps actions of the returned chunk (4 decimals), "eef_z" and
                        "grip" (end-effector height, gripper opening, from the state the policy was given);
                        ``replay<N>`` frames carry "replayed": true and infer_ms 0 (no model call)}
    error               null, or {"type", "message", "traceback"} when the episode crashed; a crashed episode is
                        neither a success nor a failure and is excluded from success-rate denominators
    video               path of the episode's mp4 relative to the run dir, or null
    finished_at         ISO-8601 UTC time the record was written
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sim_eval.policies.cache_mode import arm_name

EPISODES_FILE = "episodes.jsonl"


def episode_key(suite: str, task_id: int, episode_index: int) -> str:
    return f"{suite}/{task_id}/{episode_index}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class EpisodeLog:
    """Append-only ``episodes.jsonl`` that survives ``kill -9``.

    Each record is one ``os.write`` of a complete line on an O_APPEND descriptor, followed by fsync. A process killed
    mid-write can leave at most one partial trailing line; opening the log trims it, so the file only ever holds whole
    records."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _trim_partial_tail(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        written = os.write(self._fd, line)
        if written != len(line):
            raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> EpisodeLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _trim_partial_tail(path: Path) -> None:
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Whole records of one ``episodes.jsonl``; a partial trailing line (a write cut by a kill) is ignored. An xz
    archive beside it (``episodes.jsonl.xz``: runs committed compressed, e.g. ``docs/study_libero_object``) is read
    first: nothing appends to an archive, so a run resumed into its dir writes the new records to the plain file."""
    path = Path(path)
    if path.is_dir():
        path = path / EPISODES_FILE
    archive = path.with_name(path.name + ".xz")
    records = []
    if archive.is_file():
        import lzma

        records = _parse(lzma.decompress(archive.read_bytes()), archive)
    return records + (_parse(path.read_bytes(), path) if path.exists() else [])


def _parse(data: bytes, path: Path) -> list[dict[str, Any]]:
    records = []
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # unterminated last line: an interrupted append
                continue
            raise ValueError(f"{path}:{number}: corrupt episode record") from None
        # every reader keys records by episode (dedupe, pairing, resume): one without its key is no episode record
        if not isinstance(record, dict) or not isinstance(record.get("key"), str):
            raise ValueError(f"{path}:{number}: not an episode record (no 'key' naming the episode)")
        records.append(record)
    return records


def arm_mode(record: dict[str, Any]) -> str:
    """The record's cache mode as the arm it belongs to: ``cache_mode``, and for an adaptive mode whose refresh rule
    is not the default one (MAE threshold 6.5, max over every view) the rule too, e.g. ``adaptive3@mae4.2`` or
    ``adaptive3@mae6.5:agentview``. A threshold sweep runs one mode at several thresholds; each is its own arm.
    Records without an identity (written before it existed) keep the plain mode. The name is
    ``sim_eval.policies.cache_mode.arm_name``'s (``parse_arm`` reads it back)."""
    ident = record.get("identity") or {}
    threshold, views = ident.get("policy.refresh.threshold"), ident.get("policy.refresh.views")
    return arm_name(str(record.get("cache_mode")), threshold, views)


DEFAULT_SEED = 0  # EvalConfig.seed's default: what a record from before records carried their seed ran at


def record_seed(record: dict[str, Any]) -> int:
    """The ``eval.seed`` a record ran at: its ``seed`` field, else the ``_seed`` the loader took from the run's config
    (``runs.load_run``), else ``DEFAULT_SEED``."""
    for name in ("seed", "_seed"):
        if record.get(name) is not None:
            return int(record[name])
    return DEFAULT_SEED


def dedupe(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (policy, arm mode, seed, key), keeping the first finished; a crashed record is superseded by
    a finished one of the same episode (a resumed run retries crashes only when asked to). The seed is part of it:
    ``full`` at another seed (a control arm) runs the same episode keys on another noise stream; so is the refresh
    rule (``arm_mode``): one adaptive mode at two thresholds runs the same keys too."""
    chosen: dict[tuple, dict[str, Any]] = {}
    for record in records:
        ident = (record.get("policy"), arm_mode(record), record_seed(record), record["key"])
        held = chosen.get(ident)
        if held is None or (held.get("error") is not None and record.get("error") is None):
            chosen[ident] = record
    return list(chosen.values())

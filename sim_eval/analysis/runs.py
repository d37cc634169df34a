"""Find and load run directories: a Hydra run dir (``episodes.jsonl`` + ``.hydra/``), a multirun sweep dir (numbered
job subdirs and ``multirun.yaml``), or any directory tree holding such runs.

Each loaded record gets a private ``_run_dir`` key (absolute path of the run it came from) so that relative paths in
it -- the episode video -- can be resolved, and, when it does not carry its ``seed`` (records written before they
did), a private ``_seed`` from the run's ``eval.seed``; records on disk are never modified.

Records of one policy that ran under other settings than cache mode and seed (another checkpoint, protocol, step
limit: their ``identity``) are refused: paired or pooled, they would read as one model's. A *group* is all records
of one ``(policy, cache_mode, seed)``. Per policy one seed is the *primary* one (the seed
the cache modes ran at); its ``full`` group is the baseline, a ``full`` group at any other seed is a *control arm*:
the same episodes with another flow-matching noise stream, whose cliffs against the baseline are chance alone."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sim_eval.analysis.stats import BASELINE_MODE, group_records
from sim_eval.records.episodes import EPISODES_FILE, read_records
from sim_eval.records.manifest import check_not_mixed

Record = dict[str, Any]


class NoEpisodesError(RuntimeError):
    """A directory given on the command line holds no episode record."""


@dataclass
class Run:
    path: Path
    records: list[Record]
    config: dict[str, Any]  # resolved Hydra config of the job, {} when absent
    overrides: list[str]


@dataclass
class Group:
    """All deduplicated records of one ``(policy, cache_mode, seed)`` across the loaded runs. ``primary_seed`` is the
    seed of the policy's baseline (set by ``build_groups``); a group at another seed shows it in its name."""

    policy: str
    mode: str
    records: list[Record]
    runs: list[Run] = field(default_factory=list)
    seed: int = 0
    primary_seed: int = 0

    @property
    def name(self) -> str:
        """The mode, with ``@seed<N>`` when the group ran at another seed than the policy's baseline."""
        return self.mode if self.seed == self.primary_seed else f"{self.mode}@seed{self.seed}"

    @property
    def label(self) -> str:
        return self.name if self.policy in ("None", "") else f"{self.policy}:{self.name}"

    @property
    def is_full(self) -> bool:
        """A ``full`` run: the baseline or a control arm."""
        return self.mode == BASELINE_MODE

    @property
    def is_baseline(self) -> bool:
        return self.is_full and self.seed == self.primary_seed

    @property
    def is_control(self) -> bool:
        return self.is_full and self.seed != self.primary_seed

    def config_value(self, *path: str) -> Any:
        """The value at ``path`` in the runs' configs when all runs that have it agree, else ``None``."""
        values = set()
        for run in self.runs:
            node: Any = run.config
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                values.add(json.dumps(node, sort_keys=True))  # JSON text makes lists and dicts comparable
        return json.loads(values.pop()) if len(values) == 1 else None


def find_run_dirs(path: str | Path) -> list[Path]:
    """Every directory at or below ``path`` that holds an ``episodes.jsonl`` (or, archived, ``episodes.jsonl.xz``),
    sorted (job 10 after job 9)."""
    root = Path(path)
    names = (EPISODES_FILE, EPISODES_FILE + ".xz")
    if any((root / name).is_file() for name in names):
        return [root]
    found = {p.parent for name in names for p in root.rglob(name) if p.is_file()}
    return sorted(found, key=lambda p: [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in p.parts])


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    with open(path) as handle:
        return yaml.safe_load(handle)


def load_run(path: Path) -> Run:
    path = path.resolve()
    records = []
    config = _read_yaml(path / ".hydra" / "config.yaml") or {}
    config = config if isinstance(config, dict) else {}
    eval_config = config.get("eval")
    seed = eval_config.get("seed") if isinstance(eval_config, dict) else None
    for record in read_records(path / EPISODES_FILE):
        extra = {"_seed": int(seed)} if record.get("seed") is None and isinstance(seed, int) else {}
        records.append({**record, "_run_dir": str(path), **extra})
    overrides = _read_yaml(path / ".hydra" / "overrides.yaml") or []
    return Run(path=path, records=records, config=config, overrides=overrides)


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Runs under each of ``paths``; raises ``NoEpisodesError`` naming the first path without any episode record."""
    runs: list[Run] = []
    for path in paths:
        if not Path(path).is_dir():
            raise NoEpisodesError(f"{path}: not a directory")
        found = [load_run(p) for p in find_run_dirs(path)]
        if not any(run.records for run in found):
            raise NoEpisodesError(f"{path}: no episode records ({EPISODES_FILE}) found in it or below it")
        runs.extend(run for run in found if run.records)
    return runs


def build_groups(runs: Iterable[Run]) -> list[Group]:
    """Groups by ``(policy, cache_mode, seed)`` over all runs, ``full`` first within a policy, records deduplicated,
    each told its policy's primary seed (``primary_seed``)."""
    runs = list(runs)
    check_not_mixed((r for run in runs for r in run.records), "cannot report")
    grouped = group_records(r for run in runs for r in run.records)
    groups = []
    for (policy, mode, seed), records in grouped.items():
        owners = {r["_run_dir"] for r in records}
        groups.append(Group(policy, mode, records, [run for run in runs if str(run.path) in owners], seed=seed))
    for policy in {g.policy for g in groups}:
        mine = [g for g in groups if g.policy == policy]
        primary = primary_seed(mine)
        for group in mine:
            group.primary_seed = primary
    return groups


def primary_seed(groups: Sequence[Group]) -> int:
    """The seed of one policy's baseline: the seed most of its cache-mode groups ran at (a sweep over modes runs them
    all at one ``eval.seed``; the control arm is the extra ``full`` run), lowest on ties; without cache-mode groups,
    the lowest seed of a ``full`` group, else the lowest seed."""
    modes = [g.seed for g in groups if not g.is_full]
    if modes:
        return min(set(modes), key=lambda s: (-modes.count(s), s))
    fulls = [g.seed for g in groups if g.is_full]
    return min(fulls or [g.seed for g in groups])


def baseline_of(group: Group, groups: Sequence[Group]) -> Group | None:
    """The ``full`` group a group is paired against, or ``None``: for a cache mode, the ``full`` group of the same
    policy and seed (the same noise, so only the cache differs); for a control arm, the baseline (the same episodes,
    only the noise differs); none for the baseline itself or when no such ``full`` run is among the inputs."""
    if group.is_baseline:
        return None
    seed = group.primary_seed if group.is_control else group.seed
    return next((g for g in groups if g.policy == group.policy and g.is_full and g.seed == seed), None)


def controls_of(group: Group, groups: Sequence[Group]) -> list[Group]:
    """The control arms whose pairing shares ``group``'s baseline (``full`` at another seed than the primary one of
    the same policy), for a cache mode at the primary seed; empty otherwise."""
    if group.is_full or group.seed != group.primary_seed:
        return []
    return [g for g in groups if g.policy == group.policy and g.is_control]

"""Find and load run directories: a Hydra run dir (``episodes.jsonl`` + ``.hydra/``), a multirun sweep dir (numbered
job subdirs and ``multirun.yaml``), or any directory tree holding such runs.

Each loaded record gets a private ``_run_dir`` key (absolute path of the run it came from) so that relative paths in
it -- the episode video -- can be resolved; records on disk are never modified."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sim_eval.analysis.stats import BASELINE_MODE, group_records
from sim_eval.records import EPISODES_FILE, read_records

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
    """All deduplicated records of one ``(policy, cache_mode)`` across the loaded runs."""

    policy: str
    mode: str
    records: list[Record]
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.mode if self.policy in ("None", "") else f"{self.policy}:{self.mode}"

    @property
    def is_baseline(self) -> bool:
        return self.mode == BASELINE_MODE

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
    """Every directory at or below ``path`` that holds an ``episodes.jsonl``, sorted (job 10 after job 9)."""
    root = Path(path)
    if (root / EPISODES_FILE).is_file():
        return [root]
    found = [p.parent for p in root.rglob(EPISODES_FILE) if p.is_file()]
    return sorted(found, key=lambda p: [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in p.parts])


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    with open(path) as handle:
        return yaml.safe_load(handle)


def load_run(path: Path) -> Run:
    path = path.resolve()
    records = []
    for record in read_records(path / EPISODES_FILE):
        records.append({**record, "_run_dir": str(path)})
    config = _read_yaml(path / ".hydra" / "config.yaml") or {}
    overrides = _read_yaml(path / ".hydra" / "overrides.yaml") or []
    return Run(path=path, records=records, config=config if isinstance(config, dict) else {}, overrides=overrides)


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
    """Groups by ``(policy, cache_mode)`` over all runs, ``full`` first within a policy, records deduplicated."""
    runs = list(runs)
    grouped = group_records(r for run in runs for r in run.records)
    groups = []
    for (policy, mode), records in grouped.items():
        owners = {r["_run_dir"] for r in records}
        groups.append(Group(policy, mode, records, [run for run in runs if str(run.path) in owners]))
    return groups


def baseline_of(group: Group, groups: Sequence[Group]) -> Group | None:
    """The ``full`` group of the same policy, or ``None`` (the group is itself the baseline or none was run)."""
    if group.is_baseline:
        return None
    return next((g for g in groups if g.policy == group.policy and g.is_baseline), None)

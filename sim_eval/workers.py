"""Episodes spread over spawned worker processes, each owning one simulator and one policy, for the evaluator
(``app``) and the demonstration recorder (``record``).

Workers are spawned, not forked: forked children of a process that rendered hang in EGL. A worker builds its runner
once (``factory(*args)``: a callable ``runner(task_id, episode_index) -> dict`` with ``close()``), then pulls
episodes from a queue until its sentinel. A worker that dies mid-episode (segfault, OOM kill) gets an error result
for its episode in flight (``died(item, message)``, made in this process) and a replacement, so no planned episode is
silently lost. A worker that cannot build its runner stops the whole run with that traceback: no episode could run.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import traceback
from collections.abc import Callable, Iterator
from typing import Any

Item = tuple[int, int]  # (task_id, episode_index)


def _worker_main(factory: Callable, args: tuple, todo: mp.Queue, results: mp.Queue, worker: int) -> None:
    try:
        runner = factory(*args)
    except Exception:  # nothing can run here: the parent stops the run with this traceback
        results.put(("fatal", worker, traceback.format_exc()))
        return
    try:
        while (item := todo.get()) is not None:
            results.put(("start", worker, item))
            results.put(("result", worker, runner(*item)))
    finally:
        runner.close()
        results.put(("done", worker, None))


def run_in_workers(
    factory: Callable,
    args: tuple,
    todo: list[Item],
    num_workers: int,
    died: Callable[[Item, str], dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    """Yield one result per item of ``todo`` (in completion order) from ``min(num_workers, len(todo))`` spawned
    workers. ``factory`` and ``args`` must be picklable (a module-level callable, plain values)."""
    ctx = mp.get_context("spawn")
    work, results = ctx.Queue(), ctx.Queue()
    for item in todo:
        work.put(item)
    n_workers = min(num_workers, len(todo))
    for _ in range(n_workers):
        work.put(None)
    procs: dict[int, Any] = {}
    in_flight: dict[int, Item | None] = {}

    def start(worker: int) -> None:
        proc = ctx.Process(target=_worker_main, args=(factory, args, work, results, worker), daemon=True)
        proc.start()
        procs[worker], in_flight[worker] = proc, None

    for worker in range(n_workers):
        start(worker)
    next_id, done = n_workers, set()
    try:
        while len(done) < len(procs):
            try:
                kind, worker, payload = results.get(timeout=1.0)
            except queue.Empty:
                # Only an empty queue proves a dead worker said nothing more: its last messages precede its exit.
                for worker, proc in list(procs.items()):
                    if worker not in done and proc.exitcode is not None:
                        done.add(worker)
                        if in_flight[worker] is not None:
                            message = f"worker process exited with code {proc.exitcode} during this episode"
                            yield died(in_flight[worker], message)
                        start(next_id)  # the dead worker never took its sentinel: the replacement will
                        next_id += 1
                continue
            if kind == "fatal":
                raise RuntimeError(f"worker {worker} could not build the policy:\n{payload}")
            if kind == "start":
                in_flight[worker] = tuple(payload)
            elif kind == "result":
                in_flight[worker] = None
                yield payload
            elif kind == "done":
                done.add(worker)
    finally:
        for proc in procs.values():  # all done after a normal run; after a fatal error, stop the rest now
            if len(done) < len(procs):
                proc.terminate()
            proc.join(timeout=30)

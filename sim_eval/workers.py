"""Episodes spread over spawned worker processes, each owning one simulator and one policy, for the evaluator
(``app``) and the demonstration recorder (``record``).

Workers are spawned, not forked: forked children of a process that rendered hang in EGL. A worker builds its runner
once (``factory(*args)``: a callable ``runner(task_id, episode_index) -> dict`` with ``close()``), then pulls
episodes from a queue until its sentinel. A worker that dies mid-episode (segfault, OOM kill) gets an error result
for its episode in flight (``died(item, message)``, made in this process) and a replacement, so no planned episode is
silently lost; one that dies after taking its sentinel (while closing) has nothing left to hand over and is not
replaced. A worker that cannot build its runner stops the whole run with that traceback: no episode could run.

Each worker reports over its own pipe, written synchronously: whatever it sent before dying has arrived (a
``multiprocessing.Queue`` hands messages to a feeder thread, which a dying process takes down with them), and the
pipe's end of file is the parent's sign that the worker is gone.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

Item = tuple[int, int]  # (task_id, episode_index)


def _worker_main(factory: Callable, args: tuple, todo: mp.Queue, report: Connection) -> None:
    try:
        runner = factory(*args)
    except Exception:  # nothing can run here: the parent stops the run with this traceback
        report.send(("fatal", traceback.format_exc()))
        return
    try:
        while (item := todo.get()) is not None:
            report.send(("start", item))
            report.send(("result", runner(*item)))
        report.send(("stopping", None))  # its sentinel is taken: if closing kills it, it needs no successor
    finally:
        runner.close()


def run_in_workers(
    factory: Callable,
    args: tuple,
    todo: list[Item],
    num_workers: int,
    died: Callable[[Item, str], dict[str, Any]],
    slot_args: Callable[[int], tuple] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one result per item of ``todo`` (in completion order) from ``min(num_workers, len(todo))`` spawned
    workers. ``factory`` and ``args`` must be picklable (a module-level callable, plain values). ``slot_args(k)``
    gives worker slot k's extra arguments (its GPU, say); a replacement worker takes the slot of the one it replaces."""
    ctx = mp.get_context("spawn")
    work = ctx.Queue()
    for item in todo:
        work.put(item)
    n_workers = min(num_workers, len(todo))
    for _ in range(n_workers):
        work.put(None)
    procs: dict[Connection, Any] = {}  # a live worker's report pipe -> its process
    slots: dict[Connection, int] = {}
    in_flight: dict[Connection, Item | None] = {}
    took_sentinel: set[Connection] = set()

    def start(slot: int) -> None:
        reader, writer = ctx.Pipe(duplex=False)
        extra = slot_args(slot) if slot_args is not None else ()
        proc = ctx.Process(target=_worker_main, args=(factory, (*args, *extra), work, writer), daemon=True)
        proc.start()
        writer.close()  # the worker holds the only writer now: end of file on the reader once it is gone
        procs[reader], in_flight[reader], slots[reader] = proc, None, slot

    for slot in range(n_workers):
        start(slot)
    gone = []
    try:
        while procs:
            for reader in wait(list(procs)):
                try:
                    kind, payload = reader.recv()
                except EOFError:  # the worker is gone, and everything it sent has been read
                    proc = procs.pop(reader)
                    proc.join()
                    gone.append(proc)
                    if in_flight[reader] is not None:
                        message = f"worker process exited with code {proc.exitcode} during this episode"
                        yield died(in_flight[reader], message)
                    if reader not in took_sentinel:  # it died before taking its sentinel: the replacement will
                        start(slots[reader])
                    continue
                if kind == "fatal":
                    raise RuntimeError(f"worker could not build the policy:\n{payload}")
                if kind == "start":
                    in_flight[reader] = tuple(payload)
                elif kind == "result":
                    in_flight[reader] = None
                    yield payload
                elif kind == "stopping":
                    took_sentinel.add(reader)
    finally:
        for proc in procs.values():  # none left after a normal run; after a fatal error, stop the rest now
            proc.terminate()
        for proc in [*procs.values(), *gone]:
            proc.join(timeout=30)

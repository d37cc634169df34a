"""Episodes spread over spawned worker processes, each owning one simulator and one policy, for the evaluator
(``runtime.job``) and the demonstration recorder (``demos.recorder``).

Workers are spawned, not forked: forked children of a process that rendered hang in EGL. A worker builds its runner
once (``factory(*args)``: a callable ``runner(task_id, episode_index) -> dict`` with ``close()``), then pulls
episodes from a queue until its sentinel. A worker that dies mid-episode (segfault, OOM kill) gets an error result
for its episode in flight (``died(item, message)``, made in this process) and a replacement, so no planned episode is
silently lost; one that dies after taking its sentinel (while closing) has nothing left to hand over and is not
replaced. A worker that cannot build its runner stops the whole run with ``WorkerStartError`` (one line, the
worker's traceback attached): no episode could run.

Workers stop with the parent: they ignore Ctrl-C (the terminal sends it to the whole process group; the parent then
terminates them), and each watches its parent and exits at once, quietly, when the parent is gone (``kill -9``),
instead of simulating on and dying with broken-pipe tracebacks.

Each worker reports over its own pipe, written synchronously: whatever it sent before dying has arrived (a
``multiprocessing.Queue`` hands messages to a feeder thread, which a dying process takes down with them), and the
pipe's end of file is the parent's sign that the worker is gone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any

Item = tuple[int, int]  # (task_id, episode_index)
PARENT_POLL_S = 0.5
# Each worker is one simulator stepping small arrays: thread pools in it only fight the other workers for the cores.
# Measured on a 16-core GPU node: 16 recorder workers left at the libraries' default (a thread per core each) ran the
# load to 180 and took 8 s per episode; with one thread each, 300 episodes took 2 min 4 s (docs/benchmarks.md).
WORKER_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class WorkerStartError(RuntimeError):
    """A worker could not build its runner (the policy): the message is the error's first line, ``traceback`` the
    worker's traceback."""

    def __init__(self, message: str, traceback_text: str = ""):
        super().__init__(message)
        self.traceback = traceback_text


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)  # the parent is gone: nobody reads this episode's result, and no cleanup is owed to anyone


def follow_parent(parent_pid: int) -> None:
    """What a child of the run does first (workers, the batched policy server): ignore Ctrl-C (the parent stops it)
    and exit at once when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


@contextmanager
def one_thread_per_child():
    """Children spawned inside start with one OpenMP / BLAS thread (spawned children read the environment when they
    load those libraries); a value the user set is kept. The parent's own environment is restored afterwards."""
    saved = {name: os.environ.get(name) for name in WORKER_THREAD_ENV}
    for name in WORKER_THREAD_ENV:
        os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def error_line(err: BaseException) -> str:
    """``Type: first line of the message`` of ``err``, or of the error it wraps (Hydra's InstantiationException wraps
    the policy's own)."""
    err = err.__cause__ or err
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def _worker_main(factory: Callable, args: tuple, todo: mp.Queue, report: Connection, parent_pid: int) -> None:
    follow_parent(parent_pid)
    try:
        runner = factory(*args)
    except Exception as err:  # nothing can run here: the parent stops the run with this error
        report.send(("fatal", (error_line(err), traceback.format_exc())))
        return
    try:
        report.send(("ready", None))
        while (item := todo.get()) is not None:
            report.send(("start", item))
            report.send(("result", runner(*item)))
        report.send(("stopping", None))  # its sentinel is taken: if closing kills it, it needs no successor
    except BrokenPipeError:  # the parent closed its end: it is stopping the run
        os._exit(1)
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
    """One result per item of ``todo`` (in completion order) from ``min(num_workers, len(todo))`` spawned workers.
    ``factory`` and ``args`` must be picklable (a module-level callable, plain values). ``slot_args(k)`` gives worker
    slot k's extra arguments (its GPU, say); a replacement worker takes the slot of the one it replaces. Returns once
    every worker has built its runner (so a caller shows progress only for a run that can start), or raises
    ``WorkerStartError``."""
    pool = _Pool(factory, args, todo, num_workers, slot_args)
    try:
        pool.wait_ready()
    except BaseException:
        pool.stop()
        raise
    return pool.results(died)


class _Pool:
    def __init__(
        self, factory: Callable, args: tuple, todo: list[Item], num_workers: int, slot_args: Callable | None = None
    ):
        self.factory, self.args, self.slot_args = factory, args, slot_args
        self.ctx = mp.get_context("spawn")
        self.work = self.ctx.Queue()
        for item in todo:
            self.work.put(item)
        n_workers = min(num_workers, len(todo))
        for _ in range(n_workers):
            self.work.put(None)
        self.procs: dict[Connection, Any] = {}  # a live worker's report pipe -> its process
        self.slots: dict[Connection, int] = {}
        self.in_flight: dict[Connection, Item | None] = {}
        self.took_sentinel: set[Connection] = set()
        self.gone: list[Any] = []
        for slot in range(n_workers):
            self.start(slot)

    def start(self, slot: int) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        extra = self.slot_args(slot) if self.slot_args is not None else ()
        target_args = (self.factory, (*self.args, *extra), self.work, writer, os.getpid())
        proc = self.ctx.Process(target=_worker_main, args=target_args, daemon=True)
        with one_thread_per_child():
            proc.start()
        writer.close()  # the worker holds the only writer now: end of file on the reader once it is gone
        self.procs[reader], self.in_flight[reader], self.slots[reader] = proc, None, slot

    def wait_ready(self) -> None:
        waiting = set(self.procs)
        while waiting:
            for reader in wait(list(waiting)):
                try:
                    kind, payload = reader.recv()
                except EOFError:
                    code = self.procs[reader].exitcode
                    raise WorkerStartError(
                        f"worker process exited with code {code} while building its runner"
                    ) from None
                if kind == "fatal":
                    raise WorkerStartError(*payload)
                waiting.discard(reader)  # "ready"

    def results(self, died: Callable[[Item, str], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        procs, in_flight = self.procs, self.in_flight
        try:
            while procs:
                for reader in wait(list(procs)):
                    try:
                        kind, payload = reader.recv()
                    except EOFError:  # the worker is gone, and everything it sent has been read
                        proc = procs.pop(reader)
                        proc.join()
                        self.gone.append(proc)
                        if in_flight[reader] is not None:
                            message = f"worker process exited with code {proc.exitcode} during this episode"
                            yield died(in_flight[reader], message)
                        if reader not in self.took_sentinel:  # died before taking its sentinel: the replacement will
                            self.start(self.slots[reader])
                        continue
                    if kind == "fatal":
                        raise WorkerStartError(*payload)
                    if kind == "start":
                        in_flight[reader] = tuple(payload)
                    elif kind == "result":
                        in_flight[reader] = None
                        yield payload
                    elif kind == "stopping":
                        self.took_sentinel.add(reader)
        finally:
            self.stop()

    def stop(self) -> None:
        for proc in self.procs.values():  # none left after a normal run; after an error or Ctrl-C, stop them now
            proc.terminate()
        for proc in [*self.procs.values(), *self.gone]:
            proc.join(timeout=30)

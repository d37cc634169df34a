"""The batched policy server (``eval.server=batched``): one process owns the Pi0.5 engine and serves every simulator
worker's inferences, gathered into batches, instead of each worker holding an engine of its own at batch 1.

Each worker slot has its own ``CacheController`` in the server, so cache modes, forced refreshes, paired noise and
shadow work per episode exactly as at batch 1; a batch runs the controllers' three phases together: ``begin`` for
every request (paired noise, full or cached), one batched prefix for the slots that need a full frame, one batched
denoise for all of them against their own prefixes (``sim_eval.policies.pi05.batched``), ``finish`` per slot.

Pre-processing runs in the workers (``RemotePolicy``): each resizes its images and tokenizes its prompt with the
engine's ``Preparer`` and measures the pixel MAE against its episode's last full frame (its own ``FrameReference``,
moved on by each answer's ``used_full``), so the server only stacks tensors; the controllers decide on those MAEs
exactly as they would on their own.

Latency honesty: the ``infer_ms`` / ``prefix_ms`` / ``denoise_ms`` a record shows are the batch-1 latency of the
same engine on the same device (the median over ``BATCH1_REPS`` calls of each kind, measured on the first
observation served), because that is what a deployed robot waits for; ``infer_ms_source: batch1`` says so. What the
batch itself took is recorded beside it: ``batch_ms`` (and its prefix and denoise parts), ``batch_size``,
``batch_full`` (its full frames) and, from the worker, ``server_rtt_ms`` (queueing and transport included).

Transport: one duplex pipe per worker slot (the parent keeps its end, so a replacement worker takes the slot over)
for small messages, and one shared-memory ``FrameBuffer`` per slot for the pre-processed images (written once by
the worker, read in place into the batch: ``sim_eval.runtime.frames``); a worker's first request also carries its
raw observation, on which the server measures the batch-1 latency. Every request carries the worker's token and a
sequence number, and a worker drops replies meant for another (its dead predecessor's). A worker that dies simply
stops sending: a batch waits at most ``max_wait_ms`` for more requests, never for a given slot. The server exits
when its parent does (its control pipe closes, or the parent process is gone) and ignores Ctrl-C like the workers
(the parent stops it).
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from sim_eval.policies.base import TaskContext, Timer
from sim_eval.policies.cache import CacheController, FrameReference
from sim_eval.policies.pi05.processing import Prepared
from sim_eval.runtime.frames import FrameBuffer
from sim_eval.runtime.workers import error_line, follow_parent

BATCH1_REPS = 20  # calls of each kind (after warm-up) behind the batch-1 latency the records show


class ServerError(RuntimeError):
    """The server could not serve a request (its error's first line), or is gone."""


@dataclass(frozen=True)
class PreparedFrame:
    """An observation as a worker hands it over: the engine's ``Prepared`` (no uint8 pictures: they stay in the
    worker), its pixel MAE against the episode's last full frame, and the raw observation when the server should
    measure batch-1 latency on it (a worker's first request), else None."""

    prep: Any
    mae: dict[str, float] | None
    raw: dict[str, Any] | None = None


class BatchedSlots:
    """One ``CacheController`` per worker slot over the one engine of ``policy`` (a ``CacheController`` whose mode,
    refresh rule and shadow setting every slot copies); ``infer`` serves many slots in one batch."""

    def __init__(self, policy: CacheController, measure_batch1: bool = True):
        self.template = policy
        self.engine = policy.engine
        self.slots: dict[int, CacheController] = {}
        self.batch1: dict[str, dict[str, float]] | None = None
        self.measure_batch1 = measure_batch1

    def _controller(self) -> CacheController:
        t = self.template
        return CacheController(t.engine, t.mode, t.refresh.threshold, t.refresh.views, t.shadow)

    def reset(self, slot: int, task: TaskContext) -> None:
        """A new episode on ``slot``: a fresh controller (empty cache, noise stream from the start)."""
        ctl = self._controller()
        ctl.reset(task)
        self.slots[slot] = ctl

    def infer(self, requests: list[tuple[int, dict[str, Any] | PreparedFrame]]) -> list[dict[str, Any]]:
        """``(slot, obs)`` pairs (an observation, or the ``PreparedFrame`` a worker made of one), one per slot at
        most, each slot reset before -> each slot's ``infer`` result."""
        from sim_eval.policies.pi05.batched import denoise_batch, encode_prefix_batch

        if len({slot for slot, _ in requests}) != len(requests):
            raise ValueError("one request per slot in a batch")
        if self.batch1 is None and self.measure_batch1:
            raw = [obs.raw if isinstance(obs, PreparedFrame) else obs for _, obs in requests]
            raw = [obs for obs in raw if obs is not None]
            if raw:
                self.batch1 = self._measure_batch1(raw[0])
        sync = getattr(self.engine, "sync", None)
        ctls = [self.slots[slot] for slot, _ in requests]
        with Timer(sync) as total:
            steps = [
                ctl.begin_prepared(obs.prep, obs.mae) if isinstance(obs, PreparedFrame) else ctl.begin(obs)
                for ctl, (_, obs) in zip(ctls, requests, strict=True)
            ]
            full = [i for i, step in enumerate(steps) if step.used_full]
            with Timer(sync) as t_prefix:
                caches = encode_prefix_batch(self.engine, [steps[i].prep for i in full]) if full else []
            for i, cache in zip(full, caches, strict=True):
                ctls[i].commit(steps[i], cache)
            with Timer(sync) as t_denoise:
                actions = denoise_batch(self.engine, [c.cache for c in ctls], [s.noise for s in steps])
        shadows: list[Any] = [None] * len(steps)
        cached = [i for i, s in enumerate(steps) if not s.used_full and ctls[i].shadow]
        if cached:  # what a full frame would have given, same noise: for analysis, not part of the batch's time
            fresh = encode_prefix_batch(self.engine, [steps[i].prep for i in cached])
            for i, a in zip(cached, denoise_batch(self.engine, fresh, [steps[i].noise for i in cached]), strict=True):
                shadows[i] = a
        extra = {
            "batch_size": len(requests),
            "batch_full": len(full),
            "batch_ms": round(total.ms, 3),
            "batch_prefix_ms": round(t_prefix.ms, 3),
            "batch_denoise_ms": round(t_denoise.ms, 3),
        }
        results = []
        for ctl, step, act, shadow in zip(ctls, steps, actions, shadows, strict=True):
            if self.batch1 is not None:
                timing, source = self.batch1["full" if step.used_full else "cached"], "batch1"
            else:  # not measured (tests): the batch's own times, said so
                timing = {"infer_ms": total.ms, "prefix_ms": t_prefix.ms, "denoise_ms": t_denoise.ms}
                source = "batch"
            results.append(ctl.finish(step, act, timing, shadow, {**extra, "infer_ms_source": source}))
        return results

    def _measure_batch1(self, obs: dict[str, Any]) -> dict[str, dict[str, float]]:
        """Median batch-1 timings of a full and of a cached frame on ``obs`` (the engine's own batch-1 path)."""
        task = TaskContext("batch1", 0, "", 0, 0)
        out = {}
        for kind, mode in (("full", "full"), ("cached", "cache1000000")):
            ctl = CacheController(self.engine, mode)
            ctl.reset(task)
            infos = [ctl.infer(obs)["info"] for _ in range(BATCH1_REPS + 3)]  # the first ones capture graphs
            infos = [i for i in infos[3:] if i["used_full"] == (kind == "full")]
            out[kind] = {k: statistics.median(i[k] for i in infos) for k in ("infer_ms", "prefix_ms", "denoise_ms")}
        return out


# ------------------------------------------------------------------------------------------------------- process
def serve(
    build: Callable[..., tuple[Any, dict[str, Any]]],
    build_args: tuple,
    conns: list[Connection],
    control: Connection,
    max_batch: int,
    max_wait_ms: float,
    parent_pid: int,
) -> None:
    """The server process: ``build(*build_args) -> (CacheController, device info)``, then serve ``conns`` (slot k
    = ``conns[k]``) until ``control`` closes."""
    follow_parent(parent_pid)
    buffers: list[FrameBuffer] = []
    try:
        from sim_eval.policies.pi05.batched import warm_up

        policy, info = build(*build_args)
        slots = BatchedSlots(policy)
        preparer = policy.engine.preparer
        buffers = [FrameBuffer(len(preparer.camera_keys), preparer.size) for _ in conns]
        # every batch shape the run can meet, captured now: a batch never waits for a compile or a capture
        started = time.perf_counter()
        graphs = warm_up(policy.engine, min(max_batch, len(conns)), len(preparer.camera_map))
        warmup = {"graphs": graphs, "s": round(time.perf_counter() - started, 1)}
    except Exception as err:
        for buffer in buffers:
            buffer.close(unlink=True)
        control.send(("fatal", (error_line(err), traceback.format_exc())))
        return
    try:
        frames = [b.name for b in buffers]
        control.send(("ready", {**info, "policy": str(policy.engine.device), "preparer": preparer, "frames": frames,
                                "warmup": warmup}))  # fmt: skip
        _serve(slots, conns, buffers, control, max_batch, max_wait_ms)
    finally:
        for buffer in buffers:
            buffer.close(unlink=True)


def _serve(slots: BatchedSlots, conns: list[Connection], buffers: list[FrameBuffer], control: Connection,
           max_batch: int, max_wait_ms: float) -> None:  # fmt: skip
    slot_of = {conn: k for k, conn in enumerate(conns)}
    live = set(conns)
    while live:
        ready = wait([*live, control])
        if control in ready:
            return  # the parent closed it (or sent stop): the run is over
        batch: dict[Connection, tuple[str, int, PreparedFrame]] = {}
        _read(ready, live, batch, slots, slot_of, buffers)
        deadline = time.perf_counter() + max_wait_ms / 1000.0
        while batch and len(batch) < max_batch:
            remaining = deadline - time.perf_counter()
            others = [c for c in live if c not in batch]
            if remaining <= 0 or not others:
                break
            more = wait(others, timeout=remaining)
            if not more:
                break
            _read(more, live, batch, slots, slot_of, buffers)
        if batch:
            _answer(slots, batch, slot_of, live)


def _answer(slots: BatchedSlots, batch: dict, slot_of: dict, live: set) -> None:
    """Serve ``batch`` (pipe -> request) as one batch and send each requester its answer."""
    items = list(batch.items())
    try:
        results = slots.infer([(slot_of[conn], frame) for conn, (_, _, frame) in items])
        replies = [("ok", result) for result in results]
    except Exception as err:  # this batch's episodes crash (error records); the server goes on
        replies = [("error", error_line(err))] * len(items)
    for (conn, (token, seq, _)), (kind, payload) in zip(items, replies, strict=True):
        _send(conn, live, (token, seq, kind, payload))


def _read(ready, live: set, batch: dict, slots: BatchedSlots, slot_of: dict, buffers: list[FrameBuffer]) -> None:
    """Take every message waiting on ``ready``: resets at once, inference requests (their images in the slot's frame
    buffer) into ``batch``."""
    for conn in ready:
        while conn in live and conn.poll():
            try:
                kind, token, seq, payload = conn.recv()
            except (EOFError, OSError):  # every holder of the worker end is gone
                live.discard(conn)
                break
            if kind == "reset":
                slots.reset(slot_of[conn], TaskContext(**payload))
                continue
            # "infer": a worker waits for each answer, so at most one is pending per slot
            images = buffers[slot_of[conn]].read(token, seq, payload["cameras"])
            if images is None:  # a successor on this slot has written its own: the requester is gone
                _send(conn, live, (token, seq, "error", "stale request: its images were overwritten"))
                continue
            prep = Prepared({}, images, payload["tokens"])
            batch[conn] = (token, seq, PreparedFrame(prep, payload["mae"], payload.get("obs")))


def _send(conn: Connection, live: set, message: tuple) -> None:
    try:
        conn.send(message)
    except (BrokenPipeError, OSError):
        live.discard(conn)


class RemotePolicy:
    """The policy a worker holds under ``eval.server=batched``: ``reset`` / ``infer`` go to the server over ``conn``,
    each observation pre-processed here (``preparer``: the server's engine's ``Preparer``; the pixel MAE against this
    episode's last full frame) with its images in the slot's shared ``FrameBuffer`` named ``frames``. ``device`` is
    the server's torch device (records name it)."""

    def __init__(self, conn: Connection, device: str, preparer: Any, frames: str):
        self.conn, self.device, self.preparer = conn, device, preparer
        self.buffer = FrameBuffer(len(preparer.camera_keys), preparer.size, name=frames)
        self.reference = FrameReference()
        self.token = secrets.token_hex(8)  # replies to a dead predecessor on this slot carry another token
        self.seq = 0
        self.measured = False  # the first request carries its raw observation (the server's batch-1 timing)

    def reset(self, task: TaskContext) -> None:
        self.seq += 1
        self.reference.reset()
        self.conn.send(("reset", self.token, self.seq, task.to_dict()))

    def send_infer(self, obs: dict[str, Any]) -> Any:
        """Pre-process ``obs``, put its images in the frame buffer and send the request; returns the ``Prepared``."""
        prep = self.preparer(obs)
        mae = self.reference.mae(prep.images_u8)
        self.seq += 1
        self.buffer.write(self.token, self.seq, prep.images)
        payload = {"tokens": prep.tokens, "cameras": prep.images.shape[0], "mae": mae}
        if not self.measured:
            payload["obs"], self.measured = obs, True
        self.conn.send(("infer", self.token, self.seq, payload))
        return prep

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            prep = self.send_infer(obs)
            return self.receive(prep, started)
        except (EOFError, BrokenPipeError, OSError) as err:
            raise ServerError(f"the policy server is gone ({type(err).__name__})") from None

    def receive(self, prep: Any, started: float) -> dict[str, Any]:
        """The answer to the request ``send_infer`` sent (``prep``: what it returned; ``started``: when)."""
        while True:
            token, seq, kind, payload = self.conn.recv()
            if token == self.token and seq == self.seq:
                break
        if kind != "ok":
            raise ServerError(f"policy server: {payload}")
        if payload["info"]["used_full"]:  # the server's controller took this frame as its new reference: so do we
            self.reference.full_frame(prep.images_u8)
        payload["info"]["server_rtt_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
        return payload


class ServerProcess:
    """The server as the parent sees it: a spawned ``serve`` process and ``clients[k]``, worker slot k's end of its
    pipe (kept here, so a replacement worker can take the slot over). ``stop`` closes the control pipe."""

    def __init__(self, build: Callable, build_args: tuple, n_slots: int, max_batch: int, max_wait_ms: float):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        pairs = [ctx.Pipe(duplex=True) for _ in range(n_slots)]
        self.clients = [client for client, _ in pairs]
        ends = [end for _, end in pairs]
        self.control, child = ctx.Pipe(duplex=True)
        args = (build, build_args, ends, child, max_batch, max_wait_ms, os.getpid())
        self.proc = ctx.Process(target=serve, args=args, daemon=True)
        self.proc.start()
        for end in [*ends, child]:
            end.close()  # the server holds them now

    def wait_ready(self) -> dict[str, Any]:
        """What the server says about its device once its engine is built; ``WorkerStartError`` if it cannot be."""
        from sim_eval.runtime.workers import WorkerStartError

        try:
            kind, payload = self.control.recv()
        except EOFError:
            code = self.proc.exitcode
            raise WorkerStartError(f"policy server exited with code {code} while building its engine") from None
        if kind == "fatal":
            raise WorkerStartError(*payload)
        return payload

    def stop(self) -> None:
        self.control.close()
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=10)

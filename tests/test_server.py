"""The batched policy server (``sim_eval.runtime.server``) on the tiny Pi0.5 in fp32 on the CPU: every slot of a batch
that mixes full, cached and forced-refresh frames gets what a batch-1 ``CacheController`` gives for the same
observation, cache state and noise, whether the server pre-processes or the workers do (through the pipes and the
shared frame buffers); slot state restarts per episode; a worker that dies neither stalls the server nor receives
another worker's answers; the server exits with its parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing import Pipe

import numpy as np
import pytest
import torch
from conftest import FAST_SIM, REPO, compose, overrides, tiny_engine

from sim_eval.policies.base import TaskContext
from sim_eval.policies.cache import CacheController
from sim_eval.runtime import server as server_module
from sim_eval.runtime.frames import FrameBuffer
from sim_eval.runtime.server import BatchedSlots, RemotePolicy, ServerError, ServerProcess

SIZE = 128  # the tiny model's input size is the image size here: no resize differences to hide anything


def _task(k: int, episode: int = 0) -> TaskContext:
    return TaskContext("libero_object", k, ["pick up the ketchup", "put the bowl on the plate", "x"][k % 3], episode,
                       1000 * k + episode)  # fmt: skip


class Scene:
    """A slot's camera stream: a base image plus small drift (cached frames) or a jump (forced refresh); the prompt
    is the slot's own (prompt lengths differ across a batch)."""

    def __init__(self, k: int):
        self.rng = np.random.default_rng(k)
        self.instruction = _task(k).language
        self.base = self._draw()

    def _draw(self) -> dict:
        return {v: self.rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.int16) for v in ("agentview", "wrist")}

    def frame(self, jump: bool) -> dict:
        if jump:
            self.base = self._draw()
        images = {
            v: np.clip(b + self.rng.integers(-2, 3, b.shape), 0, 255).astype(np.uint8) for v, b in self.base.items()
        }
        return {"images": images, "state": self.rng.normal(size=8).astype(np.float32), "instruction": self.instruction}


COMPARED = ("used_full", "forced_refresh", "window_pos", "infer_index", "pixel_mae")


class InProcessWorkers:
    """The server's side of ``serve`` in this process, fed by four real ``RemotePolicy`` clients over real pipes and
    frame buffers: each client pre-processes its observation and measures its pixel MAE, the server reads the
    requests (``_read``) and answers them as one batch (``_answer``)."""

    def __init__(self, slots: BatchedSlots, n: int):
        self.slots = slots
        preparer = slots.engine.preparer
        self.buffers = [FrameBuffer(len(preparer.camera_keys), preparer.size) for _ in range(n)]
        pipes = [Pipe(duplex=True) for _ in range(n)]
        self.conns = [end for _, end in pipes]
        self.clients = [RemotePolicy(c, "cpu", preparer, b.name) for (c, _), b in zip(pipes, self.buffers, strict=True)]

    def reset(self, k: int, task: TaskContext) -> None:
        self.clients[k].reset(task)

    def close(self) -> None:
        for client, buffer in zip(self.clients, self.buffers, strict=True):
            client.buffer.close()
            buffer.close(unlink=True)

    def infer(self, requests: list) -> list:
        sent = [(self.clients[k], self.clients[k].send_infer(obs)) for k, obs in requests]
        slot_of = {conn: k for k, conn in enumerate(self.conns)}
        batch: dict = {}
        server_module._read(self.conns, set(self.conns), batch, self.slots, slot_of, self.buffers)
        assert len(batch) == len(requests)
        server_module._answer(self.slots, batch, slot_of, set(self.conns))
        return [client.receive(prep, time.perf_counter()) for client, prep in sent]


@pytest.mark.parametrize("prepared_by", ["server", "workers"])
def test_mixed_batches_match_batch_one_per_slot(prepared_by, request):
    """Four slots of adaptive3 (shadow on) in lock-step, episodes restarting at different steps: batches mix
    scheduled full frames, cached frames and forced refreshes; each slot's actions, decisions and shadow agree with
    its own batch-1 controller to 1e-5, with observations pre-processed in the server or in the workers (whose pixel
    MAE, measured against their own last full frame, decides the forced refreshes)."""
    engine = tiny_engine()
    server = BatchedSlots(CacheController(engine, "adaptive3", threshold=20.0, shadow=True), measure_batch1=False)
    if prepared_by == "workers":
        server = InProcessWorkers(server, 4)
        request.addfinalizer(server.close)
    refs = {k: CacheController(engine, "adaptive3", threshold=20.0, shadow=True) for k in range(4)}
    scenes = {k: Scene(k) for k in range(4)}
    episode = dict.fromkeys(range(4), 0)
    for k in range(4):
        server.reset(k, _task(k))
        refs[k].reset(_task(k))
    kinds = []
    # per step: the slots that start a new episode before it, and those whose cameras jump
    plan = [((), ()), ((), (1,)), ((2,), ()), ((), (0,)), ((3,), (1,)), ((), ()), ((1,), (2,))]
    for restart, jump in plan:
        for k in restart:
            episode[k] += 1
            server.reset(k, _task(k, episode[k]))
            refs[k].reset(_task(k, episode[k]))
        requests = [(k, scenes[k].frame(k in jump)) for k in range(4)]
        step_kinds = set()
        for (k, obs), got in zip(requests, server.infer(requests), strict=True):
            want = refs[k].infer(obs)
            assert np.abs(got["actions"] - want["actions"]).max() <= 1e-5
            assert {f: got["info"][f] for f in COMPARED} == {f: want["info"][f] for f in COMPARED}
            if "shadow_cos" in want["info"]:
                assert abs(got["info"]["shadow_cos"] - want["info"]["shadow_cos"]) <= 1e-5
            assert got["info"]["batch_size"] == 4 and got["info"]["infer_ms_source"] == "batch"
            info = got["info"]
            step_kinds.add("forced" if info["forced_refresh"] else "full" if info["used_full"] else "cached")
        kinds.append(step_kinds)
    assert any(len(k) == 3 for k in kinds), kinds  # at least one batch holds all three kinds at once


def test_slot_state_restarts_per_episode():
    """After a reset the slot's first frame is full and its noise stream starts over: the same episode twice gives
    the same actions, even after another episode ran on the slot in between."""
    engine = tiny_engine()
    server = BatchedSlots(CacheController(engine, "cache3"), measure_batch1=False)
    frames = [Scene(0).frame(False) for _ in range(3)]

    def episode(task):
        server.reset(0, task)
        return [server.infer([(0, f)])[0] for f in frames]

    first = episode(_task(0))
    episode(_task(0, episode=5))
    again = episode(_task(0))
    assert [r["info"]["used_full"] for r in again] == [True, False, False]
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a["actions"], b["actions"])


def _server(n_slots: int = 2, max_wait_ms: float = 50.0) -> ServerProcess:
    from omegaconf import OmegaConf

    from sim_eval.runtime.devices import plan_worker_devices
    from sim_eval.runtime.runner import policy_on

    policy_cfg = OmegaConf.to_container(compose(["policy=pi05_tiny", "policy.cache=cache2"]).policy, resolve=True)
    device = plan_worker_devices(0, [], "cpu")[0]
    return ServerProcess(policy_on, (policy_cfg, device), n_slots, max_batch=4, max_wait_ms=max_wait_ms)


def _obs(k: int = 0) -> dict:
    return Scene(k).frame(False)


def test_a_dead_worker_neither_stalls_the_server_nor_gets_answers_meant_for_another():
    server = _server()
    try:
        ready = server.wait_ready()
        assert ready["policy"] == "cpu"

        def client(k: int) -> RemotePolicy:  # what a worker of slot k builds (runner.remote_episode_runner)
            return RemotePolicy(server.clients[k], ready["policy"], ready["preparer"], ready["frames"][k])

        # slot 0's worker sends a request and dies before reading the answer: nothing more comes from that slot
        # (its pipe stays open: the parent holds the other end for a replacement, as in a real run)
        dying = client(0)
        dying.reset(_task(0))
        dying.send_infer(_obs(0))
        # slot 1 keeps being served, each answer within the wait bound plus compute
        alive = client(1)
        alive.reset(_task(1))
        for _ in range(4):
            started = time.perf_counter()
            result = alive.infer(_obs(1))
            assert time.perf_counter() - started < 10.0
            assert result["info"]["infer_ms_source"] == "batch1" and result["actions"].shape[1] == 7
        # the replacement on slot 0 drops the stale answer to its predecessor and gets its own
        replacement = client(0)
        replacement.reset(_task(0, episode=1))
        result = replacement.infer(_obs(0))
        assert result["info"]["infer_index"] == 0 and result["info"]["used_full"]
        late = client(1)
    finally:
        server.stop()
    assert server.proc.exitcode is not None
    with pytest.raises(ServerError, match="gone"):
        late.infer(_obs(1))


def test_a_frame_buffer_names_the_request_its_images_belong_to():
    """The server reads a request's images in place only while the slot's buffer holds that request's: another
    request of the same worker, or any request of a successor on the slot (another token), reads as None."""
    buffer = FrameBuffer(2, 8)
    try:
        images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
        buffer.write("aa01", 3, images)
        assert torch.equal(buffer.read("aa01", 3, 2), images)
        assert buffer.read("aa01", 2, 2) is None
        worker_side = FrameBuffer(2, 8, name=buffer.name)
        worker_side.write("bb02", 3, images[:1] + 1)
        worker_side.close()
        assert buffer.read("aa01", 3, 2) is None
        assert torch.equal(buffer.read("bb02", 3, 1), images[:1] + 1)
        with pytest.raises(ValueError, match=r"holds up to 2 images of \(3, 8, 8\), got \(3, 3, 8, 8\)"):
            buffer.write("aa01", 4, torch.zeros(3, 3, 8, 8))
    finally:
        buffer.close(unlink=True)


def test_the_server_exits_with_its_parent(tmp_path):
    """The parent is killed (-9): the server sees it gone and exits instead of serving nobody."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
        from test_server import _server
        if __name__ == "__main__":
            server = _server()
            server.wait_ready()
            print(server.proc.pid, flush=True)
            time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.time() + 15
    while time.time() < deadline and _alive(pid):
        time.sleep(0.2)
    assert not _alive(pid), f"server {pid} outlived its parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _spawn_children(pid: int) -> list[int]:
    """``pid``'s multiprocessing spawn children, oldest first (the server is started before the workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read().split(")")[-1].split()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat[1]) == pid and b"spawn_main" in cmdline:
            found.append((int(stat[19]), int(entry)))  # start time, pid
    return [p for _, p in sorted(found)]


@pytest.mark.sim
def test_a_worker_killed_mid_episode_is_an_error_record_and_the_run_goes_on(tmp_path):
    """Real run, eval.server=batched, 2 workers with one long episode each: one worker is killed (-9) during its
    episode; that episode is a WorkerDied error record, the other worker's is served to its end."""
    args = overrides("policy=pi05_tiny", "suite=libero_object", "eval.tasks=[0]", "eval.episodes_per_task=2",
                     "eval.num_workers=2", "eval.server=batched", *FAST_SIM, "eval.max_steps=300",
                     f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "sim_eval", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 120
    while len(children := _spawn_children(proc.pid)) < 3 and time.time() < deadline:
        time.sleep(0.2)
    assert len(children) >= 3, "no server and two workers came up"
    worker = children[-1]
    while time.time() < deadline and b"mujoco" not in open(f"/proc/{worker}/maps", "rb").read():
        time.sleep(0.2)
    time.sleep(4.0)  # its simulator is built and its episode under way (300 steps take far longer)
    os.kill(worker, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    errors = [r for r in records if r["error"] is not None]
    assert len(records) == 2 and len(errors) == 1, [r["error"] for r in records]
    assert errors[0]["error"]["type"] == "WorkerDied"
    finished = next(r for r in records if r["error"] is None)
    assert finished["steps"] == 300 and all(i["infer_ms_source"] == "batch1" for i in finished["inferences"])


def test_the_warmup_plan_names_every_bucket():
    """Up to 6 slots run at 1, 2, 4 or 8; prompts of up to 70 tokens pad to 32, 64 or 96, their prefixes (512 image
    tokens first) to 544, 576 or 608."""
    from sim_eval.policies.pi05.batched import warmup_plan

    plan = warmup_plan(6, 70, 512)
    assert plan["prefix"] == [(b, t) for b in (1, 2, 4, 8) for t in (32, 64, 96)]
    assert plan["denoise"] == [(b, p) for b in (1, 2, 4, 8) for p in (544, 576, 608)]
    assert warmup_plan(1, 1, 100)["denoise"] == [(1, 128)]


def test_warm_up_captures_every_shape_the_batches_then_run(monkeypatch):
    """With CUDA graphs (replays recorded here, run eagerly on the CPU), the start-up warm-up captures a graph for
    every shape; batches of 1 to 3 slots with prompts of different lengths then only replay captured ones."""
    from sim_eval.policies.pi05.batched import denoise_batch, encode_prefix_batch, warm_up

    engine = tiny_engine(state_in_prompt=False)
    engine.tokenizer.max_len = 40  # two prompt buckets: a short plan (every prompt below is shorter)
    engine.cuda_graphs = True
    keys = []

    def replay(key, fn, inputs):
        keys.append(key)
        return fn(**inputs)

    monkeypatch.setattr(engine, "_replay", replay)
    assert warm_up(engine, 3, cameras=2) == len(set(keys)) == 2 * 3 * 2  # (1, 2, 4 slots) x 2 lengths, both halves
    assert engine._graphs.max_entries >= len(keys)
    warm, keys[:] = set(keys), []
    for n in (1, 2, 3):
        preps = [engine.prepare(Scene(k).frame(False)) for k in range(n)]
        assert len({len(p.tokens) for p in preps}) == n  # the slots' prompt lengths differ
        caches = encode_prefix_batch(engine, preps)
        denoise_batch(engine, caches, [engine.sample_noise() for _ in range(n)])
    assert keys and set(keys) <= warm, set(keys) - warm


def test_compile_caches_go_to_one_known_directory(tmp_path):
    from sim_eval.policies.pi05.engine import compile_cache_dirs

    env = {"XDG_CACHE_HOME": str(tmp_path)}
    dirs = compile_cache_dirs(env)
    assert dirs == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "sim_eval" / "inductor"),
                    "TRITON_CACHE_DIR": str(tmp_path / "sim_eval" / "triton")} == {k: env[k] for k in dirs}  # fmt: skip
    mine = {"TRITON_CACHE_DIR": "/somewhere/mine", "HOME": str(tmp_path)}
    assert compile_cache_dirs(mine)["TRITON_CACHE_DIR"] == "/somewhere/mine"
    assert mine["TORCHINDUCTOR_CACHE_DIR"].startswith(os.path.expanduser("~/.cache/sim_eval"))

"""Closed-loop throughput of the evaluator on a GPU node: N spawned workers, each with its own LIBERO simulator
rendering through EGL on the GPU, and either its own engine on CUDA (``eval.server=none``, batch 1) or a client of
one batched policy server (``eval.server=batched``), for N in ``--workers`` and each path in ``--servers``.

For each (N, path) it runs ``python -m sim_eval`` (the real evaluator, openpi protocol) into
``OUT/<label>_<path>_n<N>``, samples ``nvidia-smi`` every 0.5 s while it runs (GPU utilisation, the GPU's memory in
use, memory of each process), and reads the records:

* observations/s (policy calls) over the same span, and for the batched server (``eval.server=batched``) the mean
  batch size and the batch's p50 time by its kind (all full, all cached, mixed);
* env steps/s and episodes/h, aggregate: simulated steps (wait + control) of all episodes over the span from the
  first episode's start
  to the last one's end (worker start-up excluded; the run's whole wall time is printed beside it);
* warm env steps/s: N times the mean per-episode rate of the episodes in which nothing compiled or captured a graph
  (no inference over 1 s), i.e. the rate once start-up is over, every worker busy;
* GPU memory per worker: the median of each worker's peak ``used_memory``, and of what torch held (records'
  ``gpu_mem_mib``: allocated, peak, reserved), the rest being the CUDA context and workspaces;
* GPU memory over time (a soak: ``--episodes`` large, one N): the GPU's memory in use, one sample a minute, and its
  drift (median of the last quarter of the run minus that of the second quarter, after start-up);
* where the time goes: the records' ``time_s`` split (physics, render, observe, policy calls, other) summed over all
  episodes, as shares of the workers' busy time; GPU busy: mean utilisation while episodes ran.

    python scripts/bench_gpu_eval.py --label small --workers 1 2 4 8 16 --episodes 2 --out $OUT/bench -- \\
        policy.device=cuda
    python scripts/bench_gpu_eval.py --label pi05_random --workers 8 16 --servers none batched --episodes 1 \\
        --out $OUT/bench -- policy.device=cuda policy.dtype=bfloat16 policy.random_weights=true policy.model_sizes=pi05

Arguments after ``--`` go to every evaluator run. Without a GPU (no ``nvidia-smi``) the GPU columns stay empty: a
CPU smoke run (``tests/test_bench_scripts.py``) checks that the script runs both paths and prints.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_eval.records.episodes import EPISODES_FILE, read_records  # noqa: E402

WARM_MS = 1000.0  # an inference this long compiled or captured something: its episode is not a warm one


class GpuSampler(threading.Thread):
    """``nvidia-smi`` every ``period`` s: GPU utilisation, the GPUs' memory in use and each compute process's memory
    (MiB)."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        self.period, self.stop = period, threading.Event()
        self.util: list[tuple[float, float]] = []  # (time, percent)
        self.used_mib: list[tuple[float, float]] = []  # (time, MiB in use on all GPUs)
        self.peak_mib: dict[int, float] = {}

    def _query(self, args: list[str]) -> list[list[str]]:
        if shutil.which("nvidia-smi") is None:  # a CPU machine (a plumbing check): nothing to sample
            return []
        out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True, text=True)
        return [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if line.strip()]

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            rows = self._query(["--query-gpu=utilization.gpu,memory.used"])
            for row in rows:
                self.util.append((now, float(row[0])))
            if rows:
                self.used_mib.append((now, sum(float(row[1]) for row in rows)))
            for pid, mib in self._query(["--query-compute-apps=pid,used_memory"]):
                self.peak_mib[int(pid)] = max(self.peak_mib.get(int(pid), 0.0), float(mib))
            self.stop.wait(self.period)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def memory_over_time(samples: list[tuple[float, float]], started: float, every_s: float = 60.0) -> dict:
    """The GPU's memory in use: one sample per ``every_s`` (seconds since the start, MiB), the maximum, and the drift
    (median of the last quarter of the samples minus that of the second quarter: start-up excluded, a leak shows)."""
    if not samples:
        return {"timeline": [], "max_mib": None, "drift_mib": None}
    timeline, next_t = [], 0.0
    for t, mib in samples:
        if t - started >= next_t:
            timeline.append((round(t - started), mib))
            next_t += every_s
    q = max(len(samples) // 4, 1)
    second, last = [m for _, m in samples[q : 2 * q]] or [samples[0][1]], [m for _, m in samples[-q:]]
    return {"timeline": timeline, "max_mib": max(m for _, m in samples),
            "drift_mib": round(statistics.median(last) - statistics.median(second), 1)}  # fmt: skip


def episode_accounting(run_dir: Path, planned: int) -> dict[str, int]:
    """Every planned episode recorded exactly once (a soak's check): error records, keys recorded twice, planned
    keys with no record."""
    every = list(read_records(run_dir / EPISODES_FILE))
    keys = [r["key"] for r in every]
    return {"errors": sum(r.get("error") is not None for r in every), "doubled": len(keys) - len(set(keys)),
            "lost": planned - len(set(keys))}  # fmt: skip


def measure(label: str, n: int, episodes: int, tasks: list[int], out: Path, extra: list[str],
            suite: str = "libero_object") -> dict:  # fmt: skip
    run_dir = out / f"{label}_n{n}"
    cmd = [
        sys.executable, "-m", "sim_eval", f"suite={suite}", f"eval.tasks=[{','.join(map(str, tasks))}]",
        f"eval.episodes_per_task={episodes}", f"eval.num_workers={n}", "logger.mode=disabled",
        f"hydra.run.dir={run_dir}", *extra,
    ]  # fmt: skip
    sampler = GpuSampler()
    sampler.start()
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - started
    sampler.stop.set()
    sampler.join()
    records = [r for r in read_records(run_dir / EPISODES_FILE) if r.get("error") is None]
    if proc.returncode != 0 or not records:  # e.g. N batch-1 engines that do not fit the GPU: the next (N, path) runs
        print(proc.stderr[-3000:], file=sys.stderr)
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        return {"label": label, "workers": n, "failed": f"exit {proc.returncode}: {last}", "command": " ".join(cmd[1:])}
    begin = min(parse_time(r["finished_at"]) - r["wall_s"] for r in records)
    end = max(parse_time(r["finished_at"]) for r in records)
    span = max(end - begin, 1e-9)
    steps = sum(r["steps"] + r["protocol"]["num_wait_steps"] for r in records)  # every simulated step
    split: dict[str, float] = {}
    for r in records:
        for key, value in r.get("time_s", {}).items():
            split[key] = split.get(key, 0.0) + value
    busy = sum(split.values()) or 1e-9
    util = [u for t, u in sampler.util if begin <= t <= end]
    infer = [i["infer_ms"] for r in records for i in r["inferences"] if i.get("used_full")]
    # warm: episodes none of whose inferences compiled or captured a graph (a first call of its kind, seconds long);
    # with every worker busy, the aggregate rate is about N times their mean per-episode rate
    # (under eval.server=batched infer_ms is the server's batch-1 figure: the worker's wait is server_rtt_ms)
    waited = lambda i: i.get("server_rtt_ms", i["infer_ms"])  # noqa: E731
    warm = [r for r in records if max((waited(i) for i in r["inferences"]), default=0.0) < WARM_MS]
    rates = [(r["steps"] + r["protocol"]["num_wait_steps"]) / r["wall_s"] for r in warm]
    warm_rate = statistics.fmean(rates) if rates else None
    memory = [r["gpu_mem_mib"] for r in records if r.get("gpu_mem_mib")]
    # the batched server's own timings (eval.server=batched): batch sizes seen, and the batch's time by its kind
    batch = [i["batch_size"] for r in records for i in r["inferences"] if "batch_size" in i]
    batch_ms: dict[str, list[float]] = {"all_full": [], "all_cached": [], "mixed": []}
    for i in (i for r in records for i in r["inferences"] if "batch_ms" in i):
        kind = "all_full" if i["batch_full"] == i["batch_size"] else "all_cached" if i["batch_full"] == 0 else "mixed"
        batch_ms[kind].append(i["batch_ms"])
    devices = sorted({json.dumps(r.get("device"), sort_keys=True) for r in records})
    return {
        "label": label,
        "workers": n,
        "episodes": len(records),
        **episode_accounting(run_dir, len(tasks) * episodes),
        "successes": sum(bool(r["success"]) for r in records),
        "steps": steps,
        "span_s": round(span, 1),
        "wall_s": round(wall, 1),
        "env_steps_per_s": round(steps / span, 1),
        "obs_per_s": round(sum(len(r["inferences"]) for r in records) / span, 1),
        "warm_obs_per_s": round(n * statistics.fmean(len(r["inferences"]) / r["wall_s"] for r in warm), 1)
        if warm
        else None,
        "batch_size_mean": round(statistics.fmean(batch), 2) if batch else None,
        "batch_ms_p50": {k: round(statistics.median(v), 2) for k, v in batch_ms.items() if v} or None,
        "episodes_per_h": round(len(records) / span * 3600, 0),
        "warm_episodes": len(warm),
        "warm_env_steps_per_s": round(n * warm_rate, 1) if warm_rate else None,
        "span_over_warm": round(steps / span / (n * warm_rate), 3) if warm_rate else None,
        "gpu_memory": memory_over_time(sampler.used_mib, started),
        "gpu_mem_per_worker_mib": statistics.median(sampler.peak_mib.values()) if sampler.peak_mib else None,
        "torch_mem_mib": {k: statistics.median(m[k] for m in memory) for k in memory[0]} if memory else None,
        "gpu_util_mean_pct": round(statistics.fmean(util), 1) if util else None,
        "time_share": {k: round(v / busy, 3) for k, v in sorted(split.items())},
        "full_infer_p50_ms": round(statistics.median(infer), 2) if infer else None,
        "devices": [json.loads(d) for d in devices],
        "command": " ".join(cmd[1:]),
    }


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", required=True)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--servers", nargs="+", default=["none"], choices=["none", "batched"],
                   help="eval.server paths to run at each N (batch-1 workers, the batched policy server)")  # fmt: skip
    p.add_argument("--episodes", type=int, default=2, help="episodes per task")
    p.add_argument("--tasks", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--suite", default="libero_object", help="a soak wants many episodes: libero_90 has 90 tasks")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.workers:
        for server in args.servers:
            label = f"{args.label}_{server}"
            row = measure(label, n, args.episodes, args.tasks, args.out, [*extra, f"eval.server={server}"], args.suite)
            rows.append(row)
            (args.out / f"{args.label}.json").write_text(json.dumps(rows, indent=1) + "\n")
            if "failed" in row:
                print(f"{label} N={n:2d}: failed ({row['failed']})", flush=True)
                continue
            share = " ".join(f"{k[:-2]} {v:.0%}" for k, v in row["time_share"].items())
            mem = row["gpu_memory"]
            print(
                f"{label} N={n:2d}: {row['env_steps_per_s']:7.1f} env steps/s (span), "
                f"warm {row['warm_env_steps_per_s']} env steps/s over {row['warm_episodes']} episodes "
                f"(span/warm {row['span_over_warm']}); {row['episodes_per_h']:6.0f} ep/h, "
                f"{row['episodes']} episodes ({row['successes']} ok; errors {row['errors']}, doubled {row['doubled']}, "
                f"lost {row['lost']}) in {row['span_s']} s "
                f"(wall {row['wall_s']} s); obs/s {row['obs_per_s']} (warm {row['warm_obs_per_s']}); "
                f"batch mean {row['batch_size_mean']}, batch ms p50 {row['batch_ms_p50']}; "
                f"GPU mem/worker {row['gpu_mem_per_worker_mib']} MiB (torch {row['torch_mem_mib']}), "
                f"GPU mem in use max {mem['max_mib']} MiB, drift {mem['drift_mib']} MiB; "
                f"GPU util {row['gpu_util_mean_pct']}%; full infer p50 {row['full_infer_p50_ms']} ms; time: {share}",
                flush=True,
            )
            if mem["timeline"]:
                print(f"{label} N={n:2d} GPU MiB in use over time (s, MiB): {mem['timeline']}", flush=True)


if __name__ == "__main__":
    main()

"""Success of the scripted expert over tasks x init states, one simulator process, rendering off.

    python scripts/eval_scripted.py --suite libero_object [--tasks 0 1] [--inits 10] [--out results.jsonl]
    python scripts/eval_scripted.py --suite libero_object_swap --tasks 0 1 --inits 2   # any registered benchmark

Prints one line per episode and a per-task table; LIBERO's own success check decides (``run_episode``'s record).
"""

from __future__ import annotations

import argparse
import json
import time

from sim_eval.config import ProtocolConfig
from sim_eval.envs.benchmarks import split_name
from sim_eval.envs.libero_env import LiberoEnv
from sim_eval.policies.scripted import ScriptedExpert
from sim_eval.runtime.rollout import run_episode

MAX_STEPS = ProtocolConfig().max_steps  # the openpi protocol's step limits, as the main app uses them


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", required=True)
    ap.add_argument("--tasks", type=int, nargs="*", default=list(range(10)))
    ap.add_argument("--inits", type=int, default=10)
    ap.add_argument("--first-init", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    table = {}
    # a perturbed suite (libero_object_swap) runs under its base suite's limit, as the main app runs it
    max_steps = MAX_STEPS.get(args.suite) or MAX_STEPS[split_name(args.suite)[0]]
    for task in args.tasks:
        env = LiberoEnv(args.suite, task, max_steps, cameras=False, privileged=True)
        policy = ScriptedExpert()
        wins = 0
        for i in range(args.first_init, args.first_init + args.inits):
            t0 = time.time()
            rec = run_episode(env, policy, suite=args.suite, task_id=task, episode_index=i, replan_steps=5)
            phases = [inf.get("phase") for inf in rec["inferences"]]
            last = phases[-1] if phases else None
            wins += bool(rec["success"])
            print(
                f"{args.suite} task {task} init {i}: success={rec['success']} steps={rec['steps']} "
                f"last_phase={last} err={rec['error'] and rec['error']['message']} {time.time() - t0:.1f}s",
                flush=True,
            )
            if args.out:
                with open(args.out, "a") as f:
                    f.write(
                        json.dumps({k: rec[k] for k in ("key", "success", "steps", "error")} | {"last_phase": last})
                        + "\n"
                    )
        table[task] = wins
        env.close()
    total = sum(table.values())
    print(
        f"== {args.suite}: "
        + " ".join(f"t{t}:{w}/{args.inits}" for t, w in table.items())
        + f" | {total}/{args.inits * len(table)} = {100 * total / (args.inits * len(table)):.0f}%"
    )


if __name__ == "__main__":
    main()

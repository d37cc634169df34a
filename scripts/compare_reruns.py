"""Do two runs of the same settings give the same episodes? Pairs the records of two run dirs by episode key (e.g. an
arm recorded on another machine and again here) and prints how many repeat exactly, how many change outcome, and
where the others first differ (``sim_eval.analysis.divergence.first_difference``). On one machine the simulator and
the policy are deterministic, so every pair should repeat; across CPUs float rounding can move an episode.

    python scripts/compare_reruns.py RUN_A RUN_B [--list]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_eval.analysis.divergence import first_difference  # noqa: E402
from sim_eval.records.episodes import EPISODES_FILE, read_records  # noqa: E402


def _machine(records: list[dict]) -> str:
    cpus = {str(((r.get("device") or {}).get("cpu") or {}).get("model") or "CPU not recorded") for r in records}
    return "; ".join(sorted(cpus))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--list", action="store_true", help="print every pair that does not repeat")
    args = parser.parse_args(argv)
    runs = []
    for path in (args.run_a, args.run_b):
        records = [r for r in read_records(path / EPISODES_FILE) if r.get("error") is None]
        if not records:
            print(f"compare_reruns: error: {path}: no finished episode records", file=sys.stderr)
            return 2
        runs.append({r["key"]: r for r in records})
    a, b = runs
    keys = sorted(set(a) & set(b), key=lambda k: [int(x) if x.isdigit() else x for x in k.split("/")])
    if not keys:
        print("compare_reruns: error: the two runs share no episode key", file=sys.stderr)
        return 2
    diffs = {k: first_difference(a[k], b[k]) for k in keys}
    same = [k for k in keys if diffs[k] is None]
    flipped = [k for k in keys if a[k]["success"] != b[k]["success"]]
    a_only = sum(a[k]["success"] and not b[k]["success"] for k in flipped)
    moved = sorted(d for d in diffs.values() if d is not None)
    print(f"A: {args.run_a} ({len(a)} finished; {_machine(list(a.values()))})")
    print(f"B: {args.run_b} ({len(b)} finished; {_machine(list(b.values()))})")
    print(f"{len(keys)} common episodes: {len(same)} repeat exactly, {len(keys) - len(same)} differ")
    if moved:
        print(
            f"  first difference at inference: median {moved[(len(moved) - 1) // 2]}, min {moved[0]}, max {moved[-1]}"
        )
    print(f"  outcome changed in {len(flipped)}: {a_only} succeed only in A, {len(flipped) - a_only} only in B")
    print(f"  successes: A {sum(a[k]['success'] for k in keys)}, B {sum(b[k]['success'] for k in keys)}")
    if args.list:
        for k in keys:
            if diffs[k] is not None:
                flag = " OUTCOME" if k in flipped else ""
                print(f"  {k}: from inference {diffs[k]}; steps {a[k]['steps']} vs {b[k]['steps']}{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m sim_eval.merge DIR... [--out OUT]``: merge shard outputs into one run directory.

Records are read from each DIR's ``episodes.jsonl``, deduplicated by (policy, cache mode, episode key) -- a finished
record wins over a crashed one -- and written with a fresh summary derived from them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sim_eval.records import EPISODES_FILE, EpisodeLog, dedupe, read_records, write_summary


def merge(dirs: list[Path], out: Path) -> dict:
    records = []
    for directory in dirs:
        if not (directory / EPISODES_FILE).is_file():
            raise FileNotFoundError(f"{directory}: no {EPISODES_FILE} (not a sim_eval run directory)")
        records.extend(read_records(directory / EPISODES_FILE))
    merged = sorted(dedupe(records), key=lambda r: (r["suite"], r["task_id"], r["episode_index"]))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (EPISODES_FILE + ".tmp")
    tmp.unlink(missing_ok=True)
    with EpisodeLog(tmp) as log:
        for record in merged:
            log.append(record)
    os.replace(tmp, out / EPISODES_FILE)
    return write_summary(out, merged)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim_eval.merge", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run directories (shards) to merge")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <parent of first>/merged)")
    args = parser.parse_args(argv)
    out = args.out or args.dirs[0].resolve().parent / "merged"
    try:
        summary = merge(args.dirs, out)
    except (FileNotFoundError, ValueError) as err:
        print(f"sim_eval.merge: error: {err}", file=sys.stderr)
        return 2
    overall = summary["overall"]
    print(
        f"merged {overall['episodes']} episodes into {out}: {overall['successes']}/{overall['finished']} succeeded, "
        f"{overall['errors']} errors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

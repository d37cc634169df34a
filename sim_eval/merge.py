"""``python -m sim_eval.merge DIR... [--out OUT]``: merge shard outputs into one run directory.

Records are read from each DIR's ``episodes.jsonl``, deduplicated by (policy, cache mode, seed, episode key) -- a
finished record wins over a crashed one -- and written with a fresh summary derived from them. Records of one policy
that were run under other settings than the cache mode and seed (another checkpoint, protocol or step limit) are
refused: pooled, they would be counted as one model's results; so are records of several cache modes or seeds (one
summary of two modes means nothing) and an ``--out`` that is one of the inputs. What a sweep dir holds besides its
shards is skipped with a warning: Hydra's ``multirun.yaml``, and the dir of a shard that failed before its first
record (the merge then says how many shards it merged, so a missing one shows).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sim_eval.analysis.stats import record_seed
from sim_eval.analysis.summary import write_summary
from sim_eval.preflight import OneLineParser, check_writable
from sim_eval.records.episodes import EPISODES_FILE, EpisodeLog, arm_mode, dedupe, read_records
from sim_eval.records.manifest import check_not_mixed


def shard_dirs(paths: list[Path], warn=lambda message: None) -> list[Path]:
    """The run dirs among ``paths``; anything else is reported through ``warn`` and skipped (when none is left, the
    error alone says why)."""
    dirs, skipped = [], []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if not path.is_dir():
            skipped.append(f"skipping {path}: not a run directory")
        elif not (path / EPISODES_FILE).is_file():
            skipped.append(f"skipping {path}: no {EPISODES_FILE} (a shard that ended before its first episode?)")
        else:
            dirs.append(path)
    if not dirs:
        raise FileNotFoundError(f"no run directory with an {EPISODES_FILE} among {', '.join(map(str, paths))}")
    for message in skipped:
        warn(message)
    return dirs


def merge(dirs: list[Path], out: Path) -> dict:
    records = []
    for directory in dirs:
        if not (directory / EPISODES_FILE).is_file():
            raise FileNotFoundError(f"{directory}: no {EPISODES_FILE} (not a sim_eval run directory)")
        records.extend({**r, "_run_dir": str(directory)} for r in read_records(directory / EPISODES_FILE))
    check_not_mixed(records, "cannot merge")
    # merge pools shards of one run; records of several modes or seeds pooled would make one success rate of them
    arms = sorted({(str(r.get("policy")), arm_mode(r), record_seed(r)) for r in records})
    if len(arms) > 1:
        names = ", ".join(f"{policy}:{mode}" + (f"@seed{seed}" if seed else "") for policy, mode, seed in arms)
        raise ValueError(
            f"cannot merge: the dirs hold {len(arms)} different runs ({names}); merge the shards of one run, and "
            "give several runs to python -m sim_eval.report, which reads them side by side"
        )
    records = [{k: v for k, v in r.items() if k != "_run_dir"} for r in records]
    merged = sorted(dedupe(records), key=lambda r: (r["suite"], r["task_id"], r["episode_index"]))
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (EPISODES_FILE + ".tmp")
    tmp.unlink(missing_ok=True)
    with EpisodeLog(tmp) as log:
        for record in merged:
            log.append(record)
    os.replace(tmp, out / EPISODES_FILE)
    return write_summary(out, merged)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m sim_eval.merge", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run directories (shards) to merge")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <parent of first>/merged)")
    args = parser.parse_args(argv)
    out = args.out or args.dirs[0].resolve().parent / "merged"
    try:
        if out.resolve() in {d.resolve() for d in args.dirs}:  # its records would be replaced by the merge
            raise ValueError(f"--out {out} is one of the dirs to merge: give a new directory")
        check_writable(out, what="--out")
        dirs = shard_dirs(args.dirs, warn=lambda message: print(f"sim_eval.merge: {message}", file=sys.stderr))
        summary = merge(dirs, out)
    except (OSError, ValueError) as err:
        print(f"sim_eval.merge: error: {err}", file=sys.stderr)
        return 2
    overall = summary["overall"]
    print(
        f"merged {overall['episodes']} episodes of {len(dirs)} run dirs into {out}: "
        f"{overall['successes']}/{overall['finished']} succeeded, {overall['errors']} errors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

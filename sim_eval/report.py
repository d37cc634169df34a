"""``python -m sim_eval.report DIR... [--out OUT]``: write ``report.md``, ``report.json`` and PNG plots from run or
sweep directories (see ``sim_eval.analysis.render``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sim_eval.analysis.render import build_report
from sim_eval.analysis.runs import NoEpisodesError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim_eval.report",
        description="Success, paired cliffs, latency, pixel MAE and shadow-reference report from episode records.",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="a Hydra sweep dir, run dir(s), or a tree of them")
    parser.add_argument("--out", "-o", type=Path, default=None, help="output directory (default: the first DIR)")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument("--note", default=None, help="a line quoted under the title")
    parser.add_argument("--max-traces", type=int, default=24, help="cliff-episode trace plots per mode (default 24)")
    parser.add_argument(
        "--videos",
        nargs="+",
        default=[],
        metavar="DIR",
        help="runs that re-ran some episodes with eval.video: their videos for episodes recorded without one",
    )
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        print(f"report: error: --out {args.out}: exists and is not a directory", file=sys.stderr)
        return 2
    try:
        path = build_report(
            args.dirs,
            args.out,
            title=args.title,
            note=args.note,
            max_traces=args.max_traces,
            video_paths=args.videos,
        )
    except (NoEpisodesError, ValueError) as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

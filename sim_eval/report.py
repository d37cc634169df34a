"""``python -m sim_eval.report DIR... [--out OUT]``: write ``report.md``, ``report.json`` and PNG plots from run or
sweep directories (see ``sim_eval.analysis.render``)."""

from __future__ import annotations

import sys
from pathlib import Path

from sim_eval.analysis.runs import NoEpisodesError
from sim_eval.config import ConfigError
from sim_eval.preflight import OneLineParser, check_writable


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
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
    try:
        if args.max_traces < 0:
            raise ConfigError(f"--max-traces {args.max_traces}: must be >= 0")
        check_writable(args.out if args.out is not None else Path(args.dirs[0]), what="--out")
        for path in [*args.dirs, *args.videos]:  # answered before the plotting stack is imported (~1 s)
            if not Path(path).is_dir():
                raise NoEpisodesError(f"{path}: not a directory")
        from sim_eval.analysis.render import build_report

        path = build_report(
            args.dirs,
            args.out,
            title=args.title,
            note=args.note,
            max_traces=args.max_traces,
            video_paths=args.videos,
        )
    except (NoEpisodesError, ValueError) as exc:  # ConfigError is a ValueError
        print(f"report: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output dir went unwritable (or full) after the check
        print(f"report: error: cannot write the report: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

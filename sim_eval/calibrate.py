"""``python -m sim_eval.calibrate DIR... --target-refresh 0.3``: propose the adaptive pixel-MAE threshold that gives a
target refresh fraction, from closed-loop records, and print the MAE distribution behind it.

Method (details in ``sim_eval.analysis.calibration``): the ``adaptive<N>`` rule is replayed on the lag-1..N-1 MAE
that the evaluator records for every inference (``full`` runs preferred, as caching has not altered their
trajectories); the proposal is the smallest threshold whose replayed refresh fraction (forced refreshes / MAE checks)
is at most the target. When adaptive runs are present, a second, first-order proposal comes from the MAE checks they
recorded (``pixel_mae``). Nothing is simulated: run the proposed threshold closed-loop to confirm it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sim_eval.analysis.calibration import Proposal, calibrate
from sim_eval.analysis.runs import NoEpisodesError, load_runs
from sim_eval.analysis.stats import BASELINE_MODE, parse_mode
from sim_eval.config import ConfigError
from sim_eval.policies.base import VIEWS
from sim_eval.preflight import OneLineParser, check_writable_file
from sim_eval.records.episodes import dedupe
from sim_eval.records.manifest import check_not_mixed


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _dist_line(label: str, dist: dict) -> str:
    cells = "  ".join(f"{k}={_fmt(dist[k])}" for k in ("mean", "p10", "p50", "p90", "p95", "p99", "max"))
    return f"  {label:<22} n={dist['n']:<7d} {cells}"


def _proposal_lines(proposal: Proposal) -> list[str]:
    lines = [
        f"proposal ({proposal.source}, adaptive{proposal.period}, {proposal.episodes} episodes, "
        f"{proposal.checks} MAE checks):",
        f"  threshold = {proposal.threshold:.3f}  ->  refresh fraction {proposal.achieved:.3f} "
        f"(target {proposal.target:.3f})",
    ]
    if proposal.below_threshold_fraction is not None:
        lines.append(f"  (the next lower recorded MAE value gives {proposal.below_threshold_fraction:.3f})")
    lines.append("  threshold -> refresh fraction: " + ", ".join(f"{t:.2f}->{f:.2f}" for t, f in proposal.curve))
    return lines


def _configured_views(runs: list) -> list[str] | None:
    """``policy.refresh.views`` of the adaptive runs when they agree (the views the rule checks), else ``None``."""
    found = {
        tuple(views)
        for run in runs
        if str((run.config.get("policy") or {}).get("cache", "")).startswith("adaptive")
        and isinstance(views := ((run.config.get("policy") or {}).get("refresh") or {}).get("views"), list)
    }
    return list(found.pop()) if len(found) == 1 else None


def _checked_records(args) -> tuple[list[dict], list]:
    """The records calibration reads, after the checks that make its input one run's: a target is given, the
    views exist, the ``--json`` file can be written, the records are not of different models or protocols (as
    ``report`` refuses them), and some are of a ``full`` or ``adaptive<N>`` run (a cache<N> run's trajectories are
    altered by its stale frames; a policy without a cache has no threshold to calibrate)."""
    if args.target_refresh is None:
        raise ConfigError("--target-refresh F is needed: the fraction of MAE checks that should refresh (0..1), "
                          "e.g. --target-refresh 0.3")  # fmt: skip
    if not 0.0 <= args.target_refresh <= 1.0:
        raise ConfigError(f"--target-refresh {args.target_refresh}: allowed are 0..1")
    for view in args.views or []:
        if view not in VIEWS:
            raise ConfigError(f"--views {view}: allowed are {', '.join(VIEWS)}")
    if args.json is not None:
        check_writable_file(args.json, "--json")
    runs = load_runs(args.dirs)
    records = dedupe(r for run in runs for r in run.records)
    check_not_mixed(records, "cannot calibrate")
    if args.suite is not None:
        records = [r for r in records if r.get("suite") == args.suite]
        if not records:
            raise NoEpisodesError(f"no episode of suite {args.suite!r} in {' '.join(args.dirs)}")
    usable = [r for r in records if parse_mode(r.get("cache_mode"))[0] in (BASELINE_MODE, "adaptive")]
    if not usable:
        found = ", ".join(sorted({str(r.get("cache_mode")) for r in records}))
        raise ConfigError(
            f"{' '.join(args.dirs)}: no full or adaptive<N> run among the records (cache modes: {found}); the "
            "threshold comes from a full run's lag MAE: run policy.cache=full (a policy with a prefix cache) first"
        )
    return usable, runs


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m sim_eval.calibrate",
        description="Propose the adaptive pixel-MAE threshold giving a target refresh fraction, from run records.",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run dir(s) or sweep dir(s)")
    parser.add_argument("--target-refresh", type=float, default=None, help="target forced-refresh fraction, 0..1")
    parser.add_argument(
        "--period", type=int, default=None, help="N of adaptive<N> (default: the adaptive runs' N, else 3)"
    )
    parser.add_argument(
        "--views",
        nargs="+",
        default=None,
        help="views of adaptive pixel_mae (default: the runs' policy.refresh.views, else all)",
    )
    parser.add_argument("--suite", default=None, help="only episodes of this suite")
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    try:
        records, runs = _checked_records(args)
        views = args.views if args.views is not None else _configured_views(runs)
        result = calibrate(records, args.target_refresh, args.period, views)
    except (NoEpisodesError, ValueError) as exc:  # ConfigError is a ValueError
        print(f"calibrate: error: {exc}", file=sys.stderr)
        return 2

    period = result["period"]
    print(f"{len(records)} episodes; calibrating adaptive{period} for target refresh fraction {args.target_refresh}")
    if result["lag_distribution"]:
        print(f"lag MAE (max over views, vs inputs k inferences earlier), from modes {result['lag_source_modes']}:")
        for lag, dist in result["lag_distribution"].items():
            print(_dist_line(f"lag {lag}", dist))
    if result["check_distribution"]["n"]:
        print("MAE checks recorded by adaptive runs (pixel_mae, max over views):")
        print(_dist_line("checks", result["check_distribution"]))
    if result["replay"] is not None:
        print("\n".join(_proposal_lines(result["replay"])))
    elif result["lag_distribution"]:
        print(f"no replay: lag_mae holds {result['max_lag']} lags, adaptive{period} needs {period - 1}")
    if result["checks"] is not None:
        print("\n".join(_proposal_lines(result["checks"])))
    if result["replay"] is None and result["checks"] is None:
        if result["lag_distribution"]:
            why = (
                f"lag_mae reaches only lag {result['max_lag']} (episodes too short or eval.lag_mae too small) and "
                f"adaptive{period} needs lags 1..{period - 1}"
            )
        else:
            why = "no MAE records (neither lag_mae nor adaptive pixel_mae); record lag MAE in a full run first"
        print(f"calibrate: error: {' '.join(args.dirs)}: {why}", file=sys.stderr)
        return 2
    if args.json is not None:
        payload = {**result, **{k: vars(result[k]) if result[k] else None for k in ("replay", "checks")}}
        try:
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
        except OSError as exc:  # became unwritable (or the disk full) since the check
            print(f"calibrate: error: --json {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``## Pixel MAE``: the controller's checks against the last full frame and the evaluator's lag-k MAE of `full`."""

from __future__ import annotations

from typing import Any

from sim_eval.analysis import plots
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.sections.fmt import num, pct, table
from sim_eval.analysis.stats import distribution, fraction_at_least, lag_mae_values, mae_values


def render(ctx: ReportContext) -> None:
    ctx.add("## Pixel MAE", "")
    per_mode, rows, thresholds = {}, [], set()
    for group in ctx.groups:
        values = mae_values(group.records, ctx.views(group))
        if not values:
            continue
        threshold = ctx.threshold(group)
        if threshold is not None:
            thresholds.add(threshold)
        d = distribution(values)
        per_mode[ctx.label[id(group)]] = values
        rows.append(
            [
                f"`{ctx.label[id(group)]}`",
                "vs last full frame",
                d["n"],
                *_dist_cells(d),
                num(threshold, 2),
                pct(fraction_at_least(values, threshold)) if threshold else "–",
            ]
        )
    full_lags: dict[int, list[float]] = {}
    for group in ctx.groups:
        if group.is_full:  # the baseline and any control arm: both are full runs
            for lag, values in lag_mae_values(group.records).items():
                full_lags.setdefault(lag, []).extend(values)
    for lag, values in full_lags.items():
        d = distribution(values)
        rows.append(["`full`", f"lag {lag}", d["n"], *_dist_cells(d), "–", "–"])
    if not rows:
        ctx.add("No pixel MAE in these records (no adaptive run, no lag MAE recorded by the evaluator).", "")
        return
    ctx.add(
        table(
            ["mode", "what", "n", "mean", "p10", "p50", "p90", "p95", "p99", "max", "threshold", "≥ threshold"],
            rows,
        ),
        "",
    )
    ctx.add(
        "*vs last full frame*: max-over-views MAE (over `policy.refresh.views`) of each frame the window "
        "allowed to reuse -- cached or forced -- against the last full frame, as recorded by the cache "
        "controller; in `adaptive` modes these are the checks the threshold acts on. *lag k*: max-over-views MAE "
        "of each inference's inputs against those k inferences earlier, recorded by the evaluator in `full` runs. "
        "To pick a threshold for a target refresh fraction: `python -m sim_eval.calibrate DIR --target-refresh "
        "0.3`.",
        "",
    )
    threshold = thresholds.pop() if len(thresholds) == 1 else None
    ctx.image(
        plots.mae_distributions(per_mode, full_lags, threshold, ctx.plot_dir / "mae_cdf.png"),
        "pixel MAE distributions",
    )


def _dist_cells(d: dict[str, Any]) -> list[str]:
    return [num(d[k]) for k in ("mean", "p10", "p50", "p90", "p95", "p99", "max")]

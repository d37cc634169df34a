"""PNG plots of the report. Each function takes plain numbers (computed by ``stats``) and a path, so it can be tested
and reused without the report. Matplotlib runs headless (Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)
import numpy as np  # noqa: E402

from sim_eval.analysis.stats import COS_THRESHOLDS, inference_kind, staleness_mae  # noqa: E402

KIND_STYLE = {
    "full": {"color": "#1f4e9c", "marker": "o", "label": "full (scheduled)"},
    "cached": {"color": "#8c8c8c", "marker": ".", "label": "cached"},
    "forced": {"color": "#d62728", "marker": "^", "label": "forced refresh"},
}


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower-or-equal latency and higher-or-equal success, one strict),
    ordered by latency."""
    front = []
    for i, (lat, succ) in enumerate(points):
        dominated = any(
            (lat2 <= lat and succ2 >= succ) and (lat2 < lat or succ2 > succ)
            for j, (lat2, succ2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


# the frontier's axes box in points (6.4 x 4.4 in figure, matplotlib's default margins): where labels land
_AXES_PT = (357.0, 243.0)
_CHAR_PT, _LINE_PT = 5.0, 11.0  # a character's width and a label line's height at font size 8


def _ylim(ys: Sequence[float]) -> tuple[float, float]:
    return min(100.0, max(0.0, float(min(ys) - 25))) - 2, 102


def frontier_layout(
    rows: Sequence[dict[str, Any]], x: str = "latency_mean_ms"
) -> tuple[list[int], list[tuple[int, int]]]:
    """The frontier plot's Pareto front (indices into ``rows``, cost axis ``x``) and each label's offset in points.
    A control arm (``control`` true) is `full` again under other noise: a reference point, not a mode to choose, so
    never on the front. Labels are placed in row order, each on the first line (beside its point, then below it)
    where its box overlaps no label placed before: `full` and its control arm share latency and nearly success, and
    their labels once printed over each other."""
    xs = [float(r[x]) for r in rows]
    ys = [float(r["success_rate"]) * 100 for r in rows]
    modes = [i for i, r in enumerate(rows) if not r.get("control")]
    front = [modes[k] for k in pareto_front([(xs[i], ys[i]) for i in modes])]
    low, high = _ylim(ys)
    span_x = max(max(xs) * 1.05, 1e-9)  # matplotlib's 5% margin right of the largest cost
    boxes: list[tuple[float, float, float, float]] = []
    offsets = []
    for i, row in enumerate(rows):
        px = xs[i] / span_x * _AXES_PT[0]
        py = (ys[i] - low) / (high - low) * _AXES_PT[1]
        width = _CHAR_PT * len(str(row["label"]))
        for line in range(len(rows) + 1):
            dy = 4 - _LINE_PT * line
            box = (px + 6, py + dy, px + 6 + width, py + dy + _LINE_PT)
            if not any(b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3] for b in boxes):
                break
        boxes.append(box)
        offsets.append((6, int(dy)))
    return front, offsets


def frontier(
    rows: Sequence[dict[str, Any]],
    path: Path,
    title: str = "Success vs latency per cache mode",
    x: str = "latency_mean_ms",
    xlabel: str = "mean latency per inference, ms",
) -> Path | None:
    """Success rate (Wilson 95% bars) against mean latency per inference, one point per mode, the Pareto front joined
    (dominated modes in red; rows with ``control`` true, a control arm, in grey squares and off the front). The
    mean, not the median, because it sets the sustained control rate of a mode that
    mixes full and cached frames. Rows need ``label``, ``mode``, ``latency_mean_ms``, ``success_rate``,
    ``success_ci_low``, ``success_ci_high``; rows missing either axis are left out (``None`` when none is left).
    ``x`` names another cost axis (``compute_ms_per_step``: policy compute per control step, where a zero-compute
    frame costs 0 and a mode inferring less often costs less)."""
    rows = [r for r in rows if r.get(x) is not None and r.get("success_rate") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs = np.array([r[x] for r in rows])
    ys = np.array([r["success_rate"] for r in rows]) * 100
    yerr = np.array([[r["success_rate"] - r["success_ci_low"], r["success_ci_high"] - r["success_rate"]] for r in rows])
    yerr = np.maximum(yerr, 0.0)  # Wilson's bound at 0% or 100% can land an ulp inside the rate
    front, offsets = frontier_layout(rows, x)
    if len(front) > 1:
        ax.plot(xs[front], ys[front], "-", color="#2ca02c", lw=1.5, alpha=0.7, label="Pareto front", zorder=1)
    for i, row in enumerate(rows):
        if row.get("control"):
            color = "#7f7f7f"
        else:
            color = "#1f4e9c" if row.get("mode") == "full" else "#d62728" if i not in front else "#2ca02c"
        ax.errorbar(
            xs[i],
            ys[i],
            yerr=(yerr[i] * 100).reshape(2, 1),
            fmt="s" if row.get("control") else "o",
            color=color,
            capsize=3,
            zorder=2,
        )
        ax.annotate(row["label"], (xs[i], ys[i]), textcoords="offset points", xytext=offsets[i], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("success rate, % (bar: Wilson 95%)")
    ax.set_ylim(*_ylim(list(ys)))
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if len(front) > 1:
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def heatmap(
    task_labels: Sequence[str],
    mode_labels: Sequence[str],
    cells: Sequence[Sequence[tuple[int, int] | None]],
    path: Path,
    title: str = "Per-task success (successes / finished episodes)",
) -> Path | None:
    """Rows (tasks, or perturbation families) x modes success heat map; ``cells[i][j]`` = (successes, finished) or
    ``None`` (not run / no finished episode, drawn blank)."""
    if not task_labels or not mode_labels:
        return None
    rates = np.array([[c[0] / c[1] if c and c[1] else np.nan for c in row] for row in cells], dtype=float)
    height = max(2.5, 0.32 * len(task_labels) + 1.2)
    fig, ax = plt.subplots(figsize=(1.3 * len(mode_labels) + 4.2, height))
    image = ax.imshow(np.ma.masked_invalid(rates) * 100, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            text = f"{cell[0]}/{cell[1]}" if cell and cell[1] else "-"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(mode_labels)), mode_labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(task_labels)), task_labels, fontsize=7)
    fig.colorbar(image, ax=ax, label="success %", fraction=0.04)
    ax.set_title(title)
    return _save(fig, path)


def mae_distributions(
    per_mode: dict[str, Sequence[float]], lags: dict[int, Sequence[float]], threshold: float | None, path: Path
) -> Path | None:
    """Empirical CDFs of the controller's MAE checks per mode (solid) and the lag-k MAE of ``full`` runs (dashed),
    with the adaptive threshold marked; ``None`` when there is nothing to draw."""
    series = [(label, np.sort(np.asarray(v, float)), "-") for label, v in per_mode.items() if len(v)]
    series += [(f"full runs, lag {k}", np.sort(np.asarray(v, float)), "--") for k, v in lags.items() if len(v)]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, values, style in series:
        ax.plot(values, np.arange(1, values.size + 1) / values.size, style, label=f"{label} (n={values.size})")
    if threshold is not None:
        ax.axvline(threshold, color="k", lw=1, ls=":", label=f"threshold {threshold:g}")
    ax.set_xlabel("pixel MAE (max over views, uint8 units)")
    ax.set_ylabel("fraction of frames with MAE <= x")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Pixel-MAE distributions")
    return _save(fig, path)


def latency_by_kind(per_mode: dict[str, dict[str, Sequence[float]]], path: Path) -> Path | None:
    """Box plots of ``infer_ms`` per mode and inference kind (whiskers at p1/p99)."""
    data, labels, colors = [], [], []
    for mode, kinds in per_mode.items():
        for kind in ("full", "cached", "forced"):
            values = kinds.get(kind) or []
            if values:
                data.append(values)
                labels.append(f"{mode}\n{kind}")
                colors.append(KIND_STYLE[kind]["color"])
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(data) + 1.5), 3.8))
    boxes = ax.boxplot(data, whis=(1, 99), showfliers=False, patch_artist=True)
    for patch, color in zip(boxes["boxes"], colors, strict=True):
        patch.set_facecolor(color)
        patch.set_alpha(0.45)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.set_ylabel("infer_ms")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Latency per inference kind (box: p25..p75, whiskers: p1..p99)")
    return _save(fig, path)


def episode_trace(
    record: dict[str, Any],
    path: Path,
    *,
    threshold: float | None = None,
    views: Sequence[str] | None = None,
    title: str = "",
    divergence: int | None = None,
) -> Path:
    """Two panels over the inference index of one episode. Top: the MAE of each frame's inputs against the full frame
    whose prefix it reused or checked (``stats.staleness_mae``; 0 on scheduled full frames) over the lag-1 MAE
    (scene motion, grey line). Bottom: the shadow cosine of cached frames. Frames are marked full / cached / forced;
    ``divergence`` (an inference index, ``divergence.divergence_point``) draws a dashed line on both panels."""
    infs = record.get("inferences") or []
    index = np.arange(len(infs))
    kinds = [inference_kind(i) for i in infs]
    stale = staleness_mae(record, views)
    lag1 = [(i.get("lag_mae") or [None])[0] for i in infs]
    cos = [i.get("shadow_cos") for i in infs]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.0, 4.8), sharex=True, height_ratios=(1.2, 1.0))
    if any(v is not None for v in lag1):
        top.plot(index, [np.nan if v is None else v for v in lag1], "-", color="#bbbbbb", lw=1, label="lag-1 MAE")
    for kind, style in KIND_STYLE.items():
        sel = [k for k in range(len(infs)) if kinds[k] == kind]
        pts = [(k, stale[k]) for k in sel if stale[k] is not None]
        if pts:
            top.plot(*zip(*pts, strict=True), style["marker"], color=style["color"], ls="none", label=style["label"])
        pts = [(k, cos[k]) for k in sel if cos[k] is not None]
        if pts:
            bottom.plot(*zip(*pts, strict=True), style["marker"], color=style["color"], ls="none")
    if threshold is not None:
        top.axhline(threshold, color="k", lw=1, ls=":", label=f"threshold {threshold:g}")
    if divergence is not None:
        for axis in (top, bottom):
            axis.axvline(divergence, color="#9467bd", lw=1.2, ls="--", label=f"departs from full ({divergence})")
    top.set_ylabel("pixel MAE vs reused prefix")
    top.grid(alpha=0.3)
    # above the axes, so no marker can hide behind it
    top.legend(fontsize=7, ncol=5, loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False)
    if any(c is not None for c in cos):
        for t in COS_THRESHOLDS:
            bottom.axhline(t, color="#d62728", lw=0.8, ls=":", alpha=0.7)
        bottom.set_ylim(min(0.0, min(c for c in cos if c is not None) - 0.05), 1.02)
    else:
        bottom.text(
            0.5,
            0.5,
            "no shadow reference recorded (policy.shadow=false)",
            ha="center",
            va="center",
            transform=bottom.transAxes,
            fontsize=9,
            color="#555555",
        )
    bottom.set_ylabel("shadow cosine")
    bottom.set_xlabel("inference index")
    bottom.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)

"""Render ``report.md`` (+ PNG plots and ``report.json``) from one or more run / sweep directories.

The report answers, per cache mode: how much success does it cost against ``full`` on the same episodes, is the loss
smooth or are there cliff episodes, and what happened in them. All numbers come from ``sim_eval.analysis.stats``."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim_eval.analysis import plots
from sim_eval.analysis.runs import Group, baseline_of, build_groups, load_runs
from sim_eval.analysis.stats import (
    COS_THRESHOLDS,
    KINDS,
    Pairing,
    distribution,
    fraction_at_least,
    headline,
    inference_kind,
    lag_mae_values,
    latency_by_kind,
    mae_values,
    pair_with_baseline,
    parse_mode,
    per_task_deltas,
    refresh_stats,
    shadow_episode_metrics,
    shadow_summary,
    success_by,
)
from sim_eval.analysis.videos import side_by_side

REPORT_FILE = "report.md"
PLOTS_DIR = "report_plots"
VIDEOS_DIR = "report_videos"


# --------------------------------------------------------------------------------------------------------------------
# formatting


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pvalue(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _rate_ci(counts: dict[str, Any]) -> str:
    if counts.get("success_rate") is None:
        return "– (no finished episode)"
    return f"{_pct(counts['success_rate'])} [{_pct(counts['ci_low'])}, {_pct(counts['ci_high'])}]"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def _short(text: Any, width: int = 60) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _video_cell(record: dict[str, Any] | None, out_dir: Path) -> str:
    if not record or not record.get("video"):
        return "–"
    path = Path(record["_run_dir"]) / record["video"]
    link = f"[{Path(record['video']).name}]({_rel(path, out_dir)})"
    return link if path.exists() else f"{link} (file missing)"


# --------------------------------------------------------------------------------------------------------------------
# report


class _Report:
    def __init__(
        self,
        paths: Sequence[str | Path],
        out_dir: Path,
        title: str | None,
        note: str | None,
        max_traces: int,
        input_label: str | None = None,
    ):
        self.input_label = input_label
        self.paths = [Path(p) for p in paths]
        self.out = out_dir
        self.plot_dir = out_dir / PLOTS_DIR
        self.title = title or "sim_eval report"
        self.note = note
        self.max_traces = max_traces
        self.runs = load_runs(paths)
        self.groups = build_groups(self.runs)
        one_policy = len({g.policy for g in self.groups}) == 1
        self.label = {id(g): (g.mode if one_policy else g.label) for g in self.groups}
        self.records_by_key = {(g.policy, g.mode): {r["key"]: r for r in g.records} for g in self.groups}
        self.pairings: dict[int, Pairing] = {}
        for group in self.groups:
            base = baseline_of(group, self.groups)
            if base is not None:
                self.pairings[id(group)] = pair_with_baseline(base.records, group.records)
        self.headlines = {id(g): self._headline(g) for g in self.groups}
        self.lines: list[str] = []
        self.json: dict[str, Any] = {"groups": {}}

    def _headline(self, group: Group) -> dict[str, Any]:
        base = baseline_of(group, self.groups)
        return headline(group.records, base.records if base else None)

    def threshold(self, group: Group) -> float | None:
        if parse_mode(group.mode)[0] != "adaptive":
            return None
        value = group.config_value("policy", "refresh", "threshold")
        return float(value) if isinstance(value, (int, float)) else None

    def views(self, group: Group) -> list[str] | None:
        """The views the controller's refresh rule used (``policy.refresh.views``); ``None`` = all recorded."""
        value = group.config_value("policy", "refresh", "views")
        return list(value) if isinstance(value, list) and value else None

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def image(self, path: Path | None, alt: str) -> None:
        if path is not None:
            self.add(f"![{alt}]({_rel(path, self.out)})", "")

    # ---------------------------------------------------------------------------------------------------------------
    def render(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        self.header()
        self.overview()
        self.paired()
        self.per_task()
        self.latency()
        self.mae()
        self.shadow()
        self.cliffs()
        self.errors()
        self.method()
        target = self.out / REPORT_FILE
        target.write_text("\n".join(self.lines).rstrip() + "\n")
        for group in self.groups:
            self.json["groups"][self.label[id(group)]] = {
                "policy": group.policy,
                "mode": group.mode,
                **self.headlines[id(group)],
            }
        (self.out / "report.json").write_text(json.dumps(self.json, indent=2, allow_nan=False) + "\n")
        return target

    def header(self) -> None:
        self.add(f"# {self.title}", "")
        synthetic = any(r.get("synthetic") for g in self.groups for r in g.records)
        if synthetic:
            self.add(
                "> **SYNTHETIC DATA.** These records were generated by `sim_eval.analysis.synthetic`, not by running "
                "a policy in LIBERO. The numbers only illustrate what the report shows.",
                "",
            )
        if self.note:
            self.add(f"> {self.note}", "")
        inputs = self.input_label or ", ".join(f"`{p}`" for p in self.paths)
        total = sum(len(g.records) for g in self.groups)
        suites = sorted({str(r.get("suite")) for g in self.groups for r in g.records})
        self.add(
            f"Inputs: {inputs} — {len(self.runs)} run(s), {total} episode records, suite(s): "
            f"{', '.join(suites)}; groups (policy:mode): {', '.join(g.label for g in self.groups)}.",
            "",
        )

    def overview(self) -> None:
        self.add("## Headline", "")
        rows = []
        for group in self.groups:
            h = self.headlines[id(group)]
            pairing = self.pairings.get(id(group))
            counts = {"success_rate": h["success_rate"], "ci_low": h["success_ci_low"], "ci_high": h["success_ci_high"]}
            rows.append(
                [
                    f"`{self.label[id(group)]}`",
                    h["episodes"],
                    h["finished"],
                    h["errors"],
                    _rate_ci(counts),
                    _pct(pairing.delta) if pairing else "(baseline)" if group.is_baseline else "no baseline",
                    len(pairing.cliffs) if pairing else "–",
                    len(pairing.rescues) if pairing else "–",
                    _pvalue(pairing.mcnemar_p) if pairing else "–",
                    _num(h["latency_mean_ms"]),
                    _num(h["latency_p50_ms"]),
                    _num(h["latency_p95_ms"]),
                    _pct(h["refresh_fraction"]),
                    _num(h["control_rate_hz"], 0),
                ]
            )
        self.add(
            _table(
                [
                    "mode",
                    "episodes",
                    "finished",
                    "errors",
                    "success [Wilson 95%]",
                    "Δ vs full (paired)",
                    "cliffs",
                    "rescues",
                    "McNemar p",
                    "mean ms",
                    "p50 ms",
                    "p95 ms",
                    "refresh",
                    "control Hz",
                ],
                rows,
            ),
            "",
        )
        self.add(
            "Errors (crashed episodes) are excluded from success rates. Δ, cliffs, rescues and the exact McNemar "
            "p-value use only episodes finished in both the mode and `full`. *refresh* = forced refreshes / frames "
            "the window allowed to be cached; *control Hz* = replan_steps / mean inference time (see Method).",
            "",
        )
        rows = [{"label": self.label[id(g)], "mode": g.mode, **self.headlines[id(g)]} for g in self.groups]
        self.image(plots.frontier(rows, self.plot_dir / "frontier.png"), "success vs latency")
        suites = {}
        for group in self.groups:
            for (suite,), counts in success_by(group.records, ("suite",)).items():
                suites.setdefault(suite, []).append((group, counts))
        if len(suites) > 1:
            self.add("### Per suite", "")
            rows = [
                [suite, f"`{self.label[id(g)]}`", c["episodes"], c["finished"], c["errors"], _rate_ci(c)]
                for suite, items in suites.items()
                for g, c in items
            ]
            self.add(_table(["suite", "mode", "episodes", "finished", "errors", "success [Wilson 95%]"], rows), "")

    def paired(self) -> None:
        self.add("## Paired comparison against `full`", "")
        compared = [g for g in self.groups if id(g) in self.pairings]
        missing_base = [g for g in self.groups if not g.is_baseline and id(g) not in self.pairings]
        for group in missing_base:
            if parse_mode(group.mode)[1] is None:  # e.g. "-" of a scripted policy: nothing to compare against
                self.add(f"- `{self.label[id(group)]}`: a policy without cache modes; shown without pairing.")
            else:
                self.add(
                    f"- `{self.label[id(group)]}`: no `full` run of policy `{group.policy}` among the inputs, so no "
                    "paired comparison."
                )
        if missing_base:
            self.add("")
        if not compared:
            self.add("No mode could be paired with a `full` baseline.", "")
            return
        rows = []
        for group in compared:
            p = self.pairings[id(group)]
            rows.append(
                [
                    f"`{self.label[id(group)]}`",
                    p.n_pairs,
                    len(p.both_success),
                    len(p.cliffs),
                    len(p.rescues),
                    len(p.both_fail),
                    _pct(p.baseline_rate),
                    _pct(p.mode_rate),
                    _pct(p.delta),
                    _pvalue(p.mcnemar_p),
                    len(p.missing_in_mode),
                    len(p.missing_in_baseline),
                    p.error_excluded,
                ]
            )
        self.add(
            _table(
                [
                    "mode",
                    "pairs",
                    "both succeed",
                    "cliffs (full ✓, mode ✗)",
                    "rescues (full ✗, mode ✓)",
                    "both fail",
                    "full on pairs",
                    "mode on pairs",
                    "Δ",
                    "McNemar p",
                    "missing in mode",
                    "missing in full",
                    "excluded (error)",
                ],
                rows,
            ),
            "",
        )

    def per_task(self) -> None:
        self.add("## Per task", "")
        tasks = sorted(
            {(r.get("suite"), r.get("task_id")) for g in self.groups for r in g.records},
            key=lambda t: (str(t[0]), t[1] if isinstance(t[1], int) else -1),
        )
        language = {}
        for group in self.groups:
            for record in group.records:
                language.setdefault((record.get("suite"), record.get("task_id")), record.get("task_language"))
        by_group = {id(g): success_by(g.records, ("suite", "task_id")) for g in self.groups}
        cells = [
            [(c["successes"], c["finished"]) if (c := by_group[id(g)].get(t)) else None for g in self.groups]
            for t in tasks
        ]
        labels = [f"{s}/{t}: {_short(language.get((s, t)), 38)}" for s, t in tasks]
        self.image(
            plots.heatmap(labels, [self.label[id(g)] for g in self.groups], cells, self.plot_dir / "tasks_heatmap.png"),
            "per-task success",
        )
        rows = []
        for task in tasks:
            row = [f"{task[0]}/{task[1]}"]
            for group in self.groups:
                c = by_group[id(group)].get(task)
                if c is None:
                    row.append("not run")
                    continue
                cell = f"{c['successes']}/{c['finished']}"
                if c["finished"]:
                    cell += f" [{_pct(c['ci_low'], 0)}, {_pct(c['ci_high'], 0)}]"
                row.append(cell + (f", {c['errors']} error(s)" if c["errors"] else ""))
            rows.append(row)
        # collapsed: the heat map carries the picture, this table the exact counts and intervals
        self.add("<details><summary>Per-task successes / finished episodes [Wilson 95%], errors</summary>", "")
        self.add(_table(["task", *[f"`{self.label[id(g)]}`" for g in self.groups]], rows), "", "</details>", "")
        compared = [g for g in self.groups if id(g) in self.pairings]
        if not compared:
            return
        deltas = {}
        for group in compared:
            base = baseline_of(group, self.groups)
            deltas[id(group)] = {
                (row["suite"], row["task_id"]): row for row in per_task_deltas(self.pairings[id(group)], base.records)
            }
        rows = []
        for suite, task in tasks:
            row = [f"{suite}/{task}", _short(language.get((suite, task)), 50)]
            for group in compared:
                d = deltas[id(group)].get((suite, task))
                if d is None or not d["pairs"]:
                    row.append("no pairs")
                else:
                    row.append(
                        f"{d['baseline_successes']}→{d['mode_successes']} of {d['pairs']} "
                        f"({_pct(d['delta'], 0)}; {d['cliffs']} cliff)"
                    )
            rows.append(row)
        self.add("Paired successes per task, `full` → mode, over the episodes finished in both:", "")
        self.add(_table(["task", "instruction", *[f"`{self.label[id(g)]}`" for g in compared]], rows), "")

    def latency(self) -> None:
        self.add("## Latency and refresh", "")
        rows, box = [], {}
        for group in self.groups:
            stats = latency_by_kind(group.records)
            for kind in (*KINDS, "all"):
                s = stats[kind]
                if s["n"]:
                    rows.append(
                        [
                            f"`{self.label[id(group)]}`",
                            kind,
                            s["n"],
                            _num(s["p50"]),
                            _num(s["p95"]),
                            _num(s["p99"]),
                            _num(s["mean"]),
                            _num(s["prefix_ms_mean"]),
                            _num(s["denoise_ms_mean"]),
                        ]
                    )
            box[self.label[id(group)]] = {
                kind: [
                    float(i["infer_ms"])
                    for r in group.records
                    for i in r.get("inferences") or []
                    if i.get("infer_ms") is not None and inference_kind(i) == kind
                ]
                for kind in KINDS
            }
        if not rows:
            self.add("No timed inference in these records.", "")
            return
        self.add(
            _table(
                ["mode", "kind", "n", "p50 ms", "p95 ms", "p99 ms", "mean ms", "prefix ms (mean)", "denoise ms (mean)"],
                rows,
            ),
            "",
        )
        rows = []
        for group in self.groups:
            r = refresh_stats(group.records)
            h = self.headlines[id(group)]
            rows.append(
                [
                    f"`{self.label[id(group)]}`",
                    r["inferences"],
                    r["full_inferences"],
                    r["cached_inferences"],
                    r["forced_inferences"],
                    _pct(r["full_fraction"]),
                    _pct(r["refresh_fraction"]),
                    _num(h["control_rate_hz"], 0),
                ]
            )
        self.add(
            _table(
                [
                    "mode",
                    "inferences",
                    "full",
                    "cached",
                    "forced",
                    "ran full prefix",
                    "refresh fraction",
                    "control rate Hz",
                ],
                rows,
            ),
            "",
        )
        self.image(plots.latency_by_kind(box, self.plot_dir / "latency.png"), "latency per inference kind")

    def mae(self) -> None:
        self.add("## Pixel MAE", "")
        per_mode, rows, thresholds = {}, [], set()
        for group in self.groups:
            values = mae_values(group.records, self.views(group))
            if not values:
                continue
            threshold = self.threshold(group)
            if threshold is not None:
                thresholds.add(threshold)
            d = distribution(values)
            per_mode[self.label[id(group)]] = values
            rows.append(
                [
                    f"`{self.label[id(group)]}`",
                    "vs last full frame",
                    d["n"],
                    *self._dist_cells(d),
                    _num(threshold, 2),
                    _pct(fraction_at_least(values, threshold)) if threshold else "–",
                ]
            )
        full_lags: dict[int, list[float]] = {}
        for group in self.groups:
            if group.is_baseline:
                for lag, values in lag_mae_values(group.records).items():
                    full_lags.setdefault(lag, []).extend(values)
        for lag, values in full_lags.items():
            d = distribution(values)
            rows.append(["`full`", f"lag {lag}", d["n"], *self._dist_cells(d), "–", "–"])
        if not rows:
            self.add("No pixel MAE in these records (no adaptive run, no lag MAE recorded by the evaluator).", "")
            return
        self.add(
            _table(
                ["mode", "what", "n", "mean", "p10", "p50", "p90", "p95", "p99", "max", "threshold", "≥ threshold"],
                rows,
            ),
            "",
        )
        self.add(
            "*vs last full frame*: max-over-views MAE (over `policy.refresh.views`) of each frame the window "
            "allowed to reuse -- cached or forced -- against the last full frame, as recorded by the cache "
            "controller; in `adaptive` modes these are the checks the threshold acts on. *lag k*: max-over-views MAE "
            "of each inference's inputs against those k inferences earlier, recorded by the evaluator in `full` runs. "
            "To pick a threshold for a target refresh fraction: `python -m sim_eval.calibrate DIR --target-refresh "
            "0.3`.",
            "",
        )
        threshold = thresholds.pop() if len(thresholds) == 1 else None
        self.image(
            plots.mae_distributions(per_mode, full_lags, threshold, self.plot_dir / "mae_cdf.png"),
            "pixel MAE distributions",
        )

    @staticmethod
    def _dist_cells(d: dict[str, Any]) -> list[str]:
        return [_num(d[k]) for k in ("mean", "p10", "p50", "p90", "p95", "p99", "max")]

    def shadow(self) -> None:
        self.add("## Shadow reference (executed vs fresh full-frame actions on cached frames)", "")
        rows = []
        for group in self.groups:
            s = shadow_summary(group.records)
            if not s["episodes"]:
                continue
            cells = []
            for t in COS_THRESHOLDS:
                b = s["below"][t]
                cells.append(
                    f"{_pct(b['episode_fraction'], 0)} / {_num(b['first_index_median'], 0)} / "
                    f"{_pct(b['frame_fraction'])}"
                )
            cliff_cos = self._cos_min_of(group, "cliffs")
            ok_cos = self._cos_min_of(group, "both_success")
            rows.append(
                [
                    f"`{self.label[id(group)]}`",
                    s["episodes"],
                    s["frames"],
                    _num(s["cos_min_median"], 3),
                    _num(s["cos_min_min"], 3),
                    *cells,
                    _num(cliff_cos, 3),
                    _num(ok_cos, 3),
                ]
            )
        if not rows:
            self.add("No shadow reference in these records (run cached modes with `analysis.shadow=true`).", "")
            return
        self.add(
            _table(
                [
                    "mode",
                    "episodes",
                    "cached frames",
                    "median cos_min",
                    "lowest cos_min",
                    *[f"cos < {t}: episodes / median first index / frames" for t in COS_THRESHOLDS],
                    "median cos_min, cliff episodes",
                    "median cos_min, both-succeed episodes",
                ],
                rows,
            ),
            "",
        )
        self.add(
            "*cos_min*: lowest cosine similarity between the executed action chunk and the chunk a full frame "
            "would have produced with the same noise, over an episode's cached frames. *first index*: the "
            "inference index at which an episode first went below the bound.",
            "",
        )

    def _cos_min_of(self, group: Group, category: str) -> float | None:
        pairing = self.pairings.get(id(group))
        if pairing is None:
            return None
        records = self.records_by_key[(group.policy, group.mode)]
        values = [
            m["cos_min"] for k in getattr(pairing, category) if (m := shadow_episode_metrics(records[k])) is not None
        ]
        if not values:
            return None
        values.sort()
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    def cliffs(self) -> None:
        self.add("## Cliff episodes (success under `full`, failure under the mode)", "")
        compared = [g for g in self.groups if id(g) in self.pairings]
        if not compared:
            self.add("No cliff analysis: no mode has a `full` baseline among the inputs.", "")
            return
        for group in compared:
            label = self.label[id(group)]
            pairing = self.pairings[id(group)]
            base = baseline_of(group, self.groups)
            base_records = self.records_by_key[(base.policy, base.mode)]
            records = self.records_by_key[(group.policy, group.mode)]
            self.add(f"### `{label}`", "")
            if pairing.n_pairs == 0:
                self.add(
                    f"No episode finished under both `full` and `{label}`, so there is nothing to pair "
                    "(see the paired-comparison table for missing and crashed episodes).",
                    "",
                )
                continue
            base_ok = len(pairing.both_success)
            if not pairing.cliffs and base_ok == 0:
                self.add(
                    f"**No cliff episodes**: no paired episode succeeded under `full` ({pairing.n_pairs} pairs), so "
                    f"`{label}` had no success to lose.",
                    "",
                )
            elif not pairing.cliffs:
                self.add(
                    f"**No cliff episodes**: all {base_ok} paired episodes that succeeded under `full` also "
                    f"succeeded under `{label}` ({pairing.n_pairs} pairs).",
                    "",
                )
            else:
                self._cliff_table(group, pairing, base_records, records)
            if pairing.rescues:
                self.add(
                    f"Rescues (failed under `full`, succeeded under `{label}`): "
                    + ", ".join(f"`{k}`" for k in pairing.rescues),
                    "",
                )

    def _cliff_table(self, group: Group, pairing: Pairing, base_records: dict, records: dict) -> None:
        label = self.label[id(group)]
        rows = []
        for key in pairing.cliffs:
            record, base = records[key], base_records[key]
            infs = record.get("inferences") or []
            kinds = [inference_kind(i) for i in infs]
            shadow = shadow_episode_metrics(record)
            rows.append(
                [
                    f"`{key}`",
                    _short(record.get("task_language"), 50),
                    base.get("steps", "–"),
                    record.get("steps", "–"),
                    len(infs),
                    kinds.count("cached"),
                    kinds.count("forced"),
                    _num(shadow["cos_min"], 3) if shadow else "–",
                    _num(shadow["first_below"][0.5], 0) if shadow and shadow["first_below"][0.5] is not None else "–",
                    _video_cell(base, self.out),
                    _video_cell(record, self.out),
                    self._side_by_side(group, key, base, record) if key in pairing.cliffs[: self.max_traces] else "–",
                ]
            )
        self.add(
            f"{len(pairing.cliffs)} cliff episode(s) of {pairing.n_pairs} pairs "
            f"({_pct(len(pairing.cliffs) / pairing.n_pairs)}).",
            "",
        )
        self.add(
            _table(
                [
                    "episode",
                    "instruction",
                    "steps full",
                    f"steps {label}",
                    "inferences",
                    "cached",
                    "forced",
                    "cos_min",
                    "first cos<0.5",
                    "video full",
                    f"video {label}",
                    "side by side",
                ],
                rows,
            ),
            "",
        )
        if not any(base_records[k].get("video") or records[k].get("video") for k in pairing.cliffs):
            self.add("No videos were recorded for these episodes (run with `eval.video=failures` or `all`).", "")
        elif not all(base_records[k].get("video") for k in pairing.cliffs):
            # a cliff's baseline episode succeeded, and eval.video=failures keeps only failures
            self.add("For side-by-side videos of every cliff, run the `full` baseline with `eval.video=all`.", "")
        shown = pairing.cliffs[: self.max_traces]
        for key in shown:
            path = self.plot_dir / f"trace_{_slug(group.policy)}_{_slug(group.mode)}_{_slug(key)}.png"
            title = f"{label} cliff {key}: {_short(records[key].get('task_language'), 70)}"
            plots.episode_trace(
                records[key], path, threshold=self.threshold(group), views=self.views(group), title=title
            )
            self.add(f"**`{key}`**", "")
            self.image(path, f"trace {key}")
        if len(pairing.cliffs) > len(shown):
            self.add(
                f"({len(pairing.cliffs) - len(shown)} more cliff episode(s) not plotted; raise `--max-traces`.)", ""
            )

    def _side_by_side(self, group: Group, key: str, base: dict, record: dict) -> str:
        """Link to a composed video (``full`` above, the mode below) when both episodes have one; ``–`` otherwise."""
        paths = [Path(r["_run_dir"]) / r["video"] for r in (base, record) if r.get("video")]
        if len(paths) < 2 or not all(p.is_file() for p in paths):
            return "–"
        out = self.out / VIDEOS_DIR / f"{_slug(group.policy)}_{_slug(group.mode)}_{_slug(key)}.mp4"
        try:
            side_by_side(paths[0], paths[1], out, f"full  {key}", f"{group.mode}  {key}")
        except Exception as exc:  # an unreadable video must not cost the rest of the report
            return f"could not compose ({type(exc).__name__})"
        return f"[side by side]({_rel(out, self.out)})"

    def errors(self) -> None:
        rows = []
        for group in self.groups:
            for record in group.records:
                error = record.get("error")
                if error is not None:
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    kind = error.get("type") if isinstance(error, dict) else ""
                    rows.append(
                        [
                            f"`{self.label[id(group)]}`",
                            f"`{record['key']}`",
                            kind,
                            _short((message or "").splitlines()[0] if message else "", 90),
                        ]
                    )
        self.add("## Crashed episodes", "")
        if not rows:
            self.add("None.", "")
            return
        self.add(
            f"{len(rows)} episode(s) crashed; they count neither as success nor failure and are left out of "
            "success rates and pairs.",
            "",
        )
        self.add(_table(["mode", "episode", "error", "message"], rows), "")

    def method(self) -> None:
        self.add("## Method", "")
        self.add(
            "- Success rate = successes / finished episodes; 95% Wilson score interval.",
            "- Pairing: a mode's episode is paired with the `full` episode of the same policy and key "
            "(suite/task/episode: same init state, env seed and flow-matching noise). Keys present in only one run "
            "are *missing*, keys where either side crashed are *excluded*.",
            "- McNemar: exact two-sided binomial test on the discordant pairs (cliffs vs rescues), p = "
            "min(1, 2·P[X ≤ min(b, c)]), X ~ Bin(b + c, 1/2).",
            "- Inference kinds: *full* = scheduled full frame (every frame of `full`), *cached* = prefix reused, "
            "*forced* = adaptive refresh that ran full although the window allowed reuse. Latency is the policy's "
            "`infer_ms` (shadow-reference compute excluded).",
            "- Control rate = replan_steps / mean inference time: control steps per second of policy compute, the "
            "rate the policy alone could sustain (simulation time excluded).",
            "",
        )


def build_report(
    paths: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    title: str | None = None,
    note: str | None = None,
    max_traces: int = 24,
    input_label: str | None = None,
) -> Path:
    """Write ``report.md``, ``report.json``, ``report_plots/*.png`` and, for cliff episodes whose baseline and mode
    episodes both have a video, ``report_videos/*.mp4`` (full above, mode below) into ``out_dir`` (default: the
    first path); return the path of ``report.md``. ``input_label`` replaces the list of input paths in the header
    (reports whose inputs live in a temporary directory). Raises ``runs.NoEpisodesError`` for a path without episode
    records."""
    if not paths:
        raise ValueError("no directory given")
    if max_traces < 0:
        raise ValueError(f"max_traces must be >= 0, got {max_traces}")
    out = Path(out_dir) if out_dir is not None else Path(paths[0])
    return _Report(paths, out.resolve(), title, note, max_traces, input_label).render()

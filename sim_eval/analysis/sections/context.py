"""``ReportContext``: what every report section reads (loaded runs, groups, their labels, pairings against ``full`` and
headline numbers) and writes (markdown lines, ``report.json`` entries). Sections are functions ``render(ctx)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim_eval.analysis.divergence import first_difference
from sim_eval.analysis.paired import ExcessCliffs
from sim_eval.analysis.pairs import excess_by_group, labels, pairings
from sim_eval.analysis.runs import Group, baseline_of, build_groups, load_runs
from sim_eval.analysis.sections.fmt import rel
from sim_eval.analysis.stats import Pairing, headline, parse_mode

PLOTS_DIR = "report_plots"
VIDEOS_DIR = "report_videos"


class ReportContext:
    def __init__(
        self,
        paths: Sequence[str | Path],
        out_dir: Path,
        title: str | None,
        note: str | None,
        max_traces: int,
        input_label: str | None = None,
        video_paths: Sequence[str | Path] = (),
    ):
        self.input_label = input_label
        self.paths = [Path(p) for p in paths]
        self.out = out_dir
        self.plot_dir = out_dir / PLOTS_DIR
        self.video_dir = out_dir / VIDEOS_DIR
        self.title = title or "sim_eval report"
        self.note = note
        self.max_traces = max_traces
        self.runs = load_runs(paths)
        self.groups = build_groups(self.runs)
        self.label = labels(self.groups)
        self.records_by_key = {id(g): {r["key"]: r for r in g.records} for g in self.groups}
        # the same pairings and excess cliffs the wandb logger logs (analysis.pairs)
        self.pairings: dict[int, Pairing] = pairings(self.groups)
        self.headlines = {id(g): self._headline(g) for g in self.groups}
        self.controls = [g for g in self.groups if g.is_control and id(g) in self.pairings]
        # per cache mode: its cliffs against each control arm sharing its baseline, on the keys paired in both
        self.excess: dict[int, list[tuple[Group, ExcessCliffs]]] = excess_by_group(self.groups, self.pairings)
        # episodes re-run with videos (``--videos``): per group label and key, the re-run record holding a video
        self.reruns: dict[str, dict[str, dict[str, Any]]] = {}
        if video_paths:
            for group in build_groups(load_runs(video_paths)):
                with_video = {r["key"]: r for r in group.records if r.get("video")}
                self.reruns.setdefault(group.label, {}).update(with_video)
        self.lines: list[str] = []
        self.json: dict[str, Any] = {"groups": {}}

    def _headline(self, group: Group) -> dict[str, Any]:
        base = baseline_of(group, self.groups)
        return headline(group.records, base.records if base else None)

    def baseline(self, group: Group) -> Group | None:
        return baseline_of(group, self.groups)

    def threshold(self, group: Group) -> float | None:
        if parse_mode(group.mode)[0] != "adaptive":
            return None
        value = group.config_value("policy", "refresh", "threshold")
        if not isinstance(value, (int, float)):  # runs without a saved Hydra config: the records' identity
            values = {(r.get("identity") or {}).get("policy.refresh.threshold") for r in group.records}
            value = values.pop() if len(values) == 1 else None
        return float(value) if isinstance(value, (int, float)) else None

    def views(self, group: Group) -> list[str] | None:
        """The views the controller's refresh rule used (``policy.refresh.views``); ``None`` = all recorded."""
        value = group.config_value("policy", "refresh", "views")
        return list(value) if isinstance(value, list) and value else None

    def model_label(self) -> str:
        """The model(s) the records name, per checkpoint directory: its digest(s) or random weights, and how many
        records predate digests, e.g. "the model `pi05_small_libero` (pi05, checkpoint sha256:21a191377976…)"."""
        models: dict[tuple[str, str], dict[str, int]] = {}
        for group in self.groups:
            for record in group.records:
                ident = record.get("identity") or {}
                where = record.get("checkpoint")
                name = (f"`{Path(where).name}`" if where else f"`{group.policy}`", group.policy)
                if ident.get("policy.random_weights"):
                    digest = "random weights"
                else:
                    digest = str(ident.get("policy.checkpoint") or "")
                    digest = f"checkpoint {digest[:19]}…" if digest.startswith("sha256:") else digest
                counts = models.setdefault(name, {})
                counts[digest] = counts.get(digest, 0) + 1
        parts = []
        for (name, policy), counts in models.items():
            known = [d for d in counts if d]
            text = ", ".join([*([policy] if name != f"`{policy}`" else []), *known])
            if counts.get(""):
                missing = f"{counts['']} record(s) without a digest" if known else "digest not recorded"
                text = f"{text}; {missing}" if text else missing
            parts.append(f"{name} ({text})")
        return ("the model " if len(parts) == 1 else "the models ") + ", ".join(parts)

    def video_of(self, group: Group, record: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The record whose video shows ``record``'s episode, and how it relates to it: the record itself when it
        was recorded with a video (note ``""``), else a re-run of the same group and key from ``--videos`` with a
        note saying whether the re-run repeated the recorded episode (steps, outcome, and the MAEs and shadow
        cosine of every inference equal: ``divergence.first_difference``) or not; ``(None, "")`` without either."""
        if record.get("video"):
            return record, ""
        rerun = self.reruns.get(group.label, {}).get(record["key"])
        if rerun is None:
            return None, ""
        if first_difference(record, rerun) is None:
            return rerun, "re-run, identical"
        outcome = "success" if rerun.get("success") else "failure"
        return rerun, f"re-run, differs: {outcome} in {rerun.get('steps')} steps"

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def image(self, path: Path | None, alt: str) -> None:
        if path is not None:
            self.add(f"![{alt}]({rel(path, self.out)})", "")

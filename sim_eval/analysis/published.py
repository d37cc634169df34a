"""Published closed-loop numbers of K/V reuse on the real Pi0.5 (``published.yaml``, each with its provenance) and
how a report's own degradation compares with them.

Both sides are compared as *retention*: a mode's success rate over its synchronous (``full``) rate, within one source
and suite, so models of different absolute skill compare by what reuse costs them. A report's mode is stronger
degraded than the published one when its retention is more than ``MARGIN`` below the lowest published retention of
that mode, weaker when more than ``MARGIN`` above the highest, and within the published range otherwise; the shape
is the same when the modes both sides ran rank alike by retention (e.g. cache2 mild, cache3 a cliff)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).with_name("published.yaml")
MARGIN = 0.10  # retention within which two degradations read alike: 30-episode arms carry about this much noise


def load(path: Path = DATA) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["sources"]


def row_rate(row: dict[str, Any]) -> float:
    return row["successes"] / row["episodes"] if "successes" in row else float(row["rate"])


@dataclass(frozen=True)
class Retention:
    source: str
    suite: str
    mode: str
    value: float  # the mode's success rate / the source's synchronous rate on the same suite


def published_retentions(sources: Sequence[dict[str, Any]]) -> list[Retention]:
    out = []
    for source in sources:
        full = {r["suite"]: row_rate(r) for r in source["rows"] if r["mode"] == "full"}
        for row in source["rows"]:
            if row["mode"] != "full" and full.get(row["suite"]):
                out.append(Retention(source["id"], row["suite"], row["mode"], row_rate(row) / full[row["suite"]]))
    return out


@dataclass(frozen=True)
class Comparison:
    mode: str
    ours: float  # our retention
    suites: tuple[str, ...]  # our suites
    published: tuple[Retention, ...]  # same suite where a source ran it, else every suite of that mode
    word: str  # "stronger", "weaker" or "within the published range"

    def sentence(self) -> str:
        lo, hi = min(r.value for r in self.published), max(r.value for r in self.published)
        span = f"{lo * 100:.0f}%" if abs(hi - lo) < 0.005 else f"{lo * 100:.0f}-{hi * 100:.0f}%"
        where = ", ".join(sorted({f"{r.source} {r.suite}" for r in self.published}))
        verdict = self.word if self.word == "within the published range" else f"{self.word} degradation"
        return (
            f"`{self.mode}` keeps {self.ours * 100:.0f}% of `full`'s success here against {span} published "
            f"({where}): {verdict}"
        )


def compare(ours: dict[str, tuple[float, tuple[str, ...]]], published: Sequence[Retention]) -> list[Comparison]:
    """``ours``: mode -> (retention, suites) from a report's records; one ``Comparison`` per mode with a published
    counterpart."""
    out = []
    for mode, (value, suites) in sorted(ours.items()):
        same = [r for r in published if r.mode == mode]
        matched = [r for r in same if r.suite in suites] or same
        if not matched:
            continue
        lo, hi = min(r.value for r in matched), max(r.value for r in matched)
        word = "stronger" if value < lo - MARGIN else "weaker" if value > hi + MARGIN else "within the published range"
        out.append(Comparison(mode, value, tuple(suites), tuple(matched), word))
    return out


def same_shape(ours: dict[str, tuple[float, tuple[str, ...]]], published: Sequence[Retention]) -> bool | None:
    """Whether every pair of modes that both a source (on one suite) and the report ran ranks the same way by
    retention (ties, within ``MARGIN``, agree with anything); ``None`` without such a pair."""
    verdicts = []
    by_source: dict[tuple[str, str], dict[str, float]] = {}
    for r in published:
        by_source.setdefault((r.source, r.suite), {})[r.mode] = r.value
    for modes in by_source.values():
        shared = sorted(set(modes) & set(ours))
        for a, b in itertools.combinations(shared, 2):
            theirs, mine = modes[a] - modes[b], ours[a][0] - ours[b][0]
            verdicts.append(abs(theirs) <= MARGIN or abs(mine) <= MARGIN or (theirs > 0) == (mine > 0))
    return all(verdicts) if verdicts else None


def comparison_text(ours: dict[str, tuple[float, tuple[str, ...]]], sources: Sequence[dict[str, Any]]) -> str | None:
    """The report's plain-words comparison with the published numbers; ``None`` when no mode has a counterpart."""
    published = published_retentions(sources)
    found = compare(ours, published)
    if not found:
        return None
    text = "; ".join(c.sentence() for c in found) + "."
    shape = same_shape(ours, published)
    if shape is not None:
        text += (
            " Across the modes both ran, the degradation has the same shape (the modes rank alike by retention)."
            if shape
            else " Across the modes both ran, the degradation has a different shape (the modes rank otherwise by "
            "retention)."
        )
    return text

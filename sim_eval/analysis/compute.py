"""Policy compute per control step and the zero-compute comparison.

Latency per inference hides what a mode saves: a ``replay<N>`` frame costs nothing, a cached frame a denoise, a full
frame a prefix and a denoise, and a mode that executes more actions per inference infers less often. The cost that
compares them is the policy compute the robot pays per control step: the sum of ``infer_ms`` over an episode's
inferences divided by its control steps, averaged over finished episodes. The report's compute frontier and its
opening answer (does any cached mode beat the zero-compute arm at equal or lower compute?) read it from here.

Milliseconds compare only between runs that saw one machine speed. When the runs' full-frame medians are far apart
(other work on the machine during some runs, or other machines) the answer compares compute at one speed instead
(``at_common_speed``): each run's median latency per inference kind, scaled by a reference run's full-frame median
over its own -- what the run would have cost at the reference's speed, to first order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

Record = dict[str, Any]
CACHED_KINDS = ("cache", "adaptive")  # modes that call the model on every inference, reusing a prefix
# Full-frame medians further apart than this factor: the runs did not see one machine speed. Runs of one machine
# without other work agree to a few percent (the committed study's unloaded arms: 43.1-43.8 ms).
SPEED_SPREAD = 1.25


def compute_per_step_ms(record: Record) -> float | None:
    """Milliseconds of policy compute per control step of one episode; ``None`` for a crashed episode, one without
    steps or one whose inferences were not timed."""
    steps = record.get("steps") or 0
    times = [i.get("infer_ms") for i in record.get("inferences") or []]
    if record.get("error") is not None or steps <= 0 or not times or any(t is None for t in times):
        return None
    return float(sum(float(t) for t in times)) / steps


def mean_compute_per_step_ms(records: Iterable[Record]) -> float | None:
    """Mean over finished, timed episodes of ``compute_per_step_ms``; ``None`` when there is none."""
    values = [v for v in map(compute_per_step_ms, records) if v is not None]
    return float(np.mean(values)) if values else None


@dataclass(frozen=True)
class Arm:
    """One mode as the comparison sees it: its label, mode kind, success rate over ``n`` finished episodes and mean
    compute per control step; for comparing runs of unequal speed, its full frames' median latency and its compute
    per step from each inference kind's median (``stats.typical_compute_per_step_ms``)."""

    label: str
    kind: str
    success_rate: float
    compute_ms: float
    n: int
    full_p50_ms: float | None = None
    typical_ms: float | None = None

    @classmethod
    def from_headline(cls, label: str, kind: str, h: dict[str, Any]) -> Arm:
        """From a ``stats.headline`` dict; a missing success rate or compute reads as 0 (the answer leaves such runs
        out before it asks)."""
        return cls(label, kind, h["success_rate"] or 0.0, h["compute_ms_per_step"] or 0.0, h["finished"],
                   h["latency_full_p50_ms"], h["compute_ms_per_step_typical"])  # fmt: skip

    def cell(self) -> str:
        return f"`{self.label}` {self.success_rate * 100:.1f}% at {self.compute_ms:.2f} ms/step"


def speed_spread(speeds: Sequence[tuple[str, float | None]]) -> tuple[tuple[str, float], tuple[str, float]] | None:
    """The fastest and slowest ``(label, full-frame median ms)`` when they lie more than ``SPEED_SPREAD`` apart;
    ``None`` when the runs saw one machine speed or fewer than two runs have full frames."""
    known = [(label, float(ms)) for label, ms in speeds if ms]
    if len(known) < 2:
        return None
    fast, slow = min(known, key=lambda x: x[1]), max(known, key=lambda x: x[1])
    return (fast, slow) if slow[1] > SPEED_SPREAD * fast[1] else None


def at_common_speed(arms: Sequence[Arm]) -> tuple[list[Arm], str] | None:
    """When the arms' full-frame medians lie more than ``SPEED_SPREAD`` apart: the arms with ``compute_ms`` at the
    ``full`` arm's speed (the fastest arm's without one) and the sentence that says so; arms that cannot be scaled (no
    full frame or no timed episode) are left out of the comparison. ``None`` when the arms saw one speed."""
    spread = speed_spread([(a.label, a.full_p50_ms) for a in arms])
    if spread is None:
        return None
    timed = [a for a in arms if a.full_p50_ms and a.typical_ms is not None]
    if not timed:  # full frames only in crashed episodes: nothing to compare at any speed
        return None
    fulls = [a for a in timed if a.kind == "full"]
    ref = fulls[0] if fulls else min(timed, key=lambda a: a.full_p50_ms or 0.0)
    assert ref.full_p50_ms  # every timed arm has full frames
    scaled = [replace(a, compute_ms=float(a.typical_ms) * ref.full_p50_ms / float(a.full_p50_ms)) for a in timed]
    (fast, fast_ms), (slow, slow_ms) = spread
    left_out = [f"`{a.label}`" for a in arms if a not in timed]
    note = (
        f"(Full frames took a median {fast_ms:.1f} ms in `{fast}` but {slow_ms:.1f} ms in `{slow}`: these runs did not "
        "see one machine speed -- other work on the machine, or another machine -- so their milliseconds do not "
        f"compare as they stand. Compute here is at `{ref.label}`'s speed: each run's median latency per inference "
        f"kind times its inferences of that kind per control step, scaled by `{ref.label}`'s full-frame median over "
        "its own." + (f" Left out, without full frames to scale by: {', '.join(left_out)}." if left_out else "") + ")"
    )
    return scaled, note


def zero_compute_verdict(arms: Sequence[Arm]) -> tuple[bool, list[Arm], Arm] | None:
    """Whether some cached mode (``cache<N>``/``adaptive<N>``) beats the best zero-compute arm (``replay<N>``): a
    higher success rate at equal or lower compute per step. Returns ``(wins, winners, zero)``; ``None`` without a
    zero-compute arm or a cached mode to compare."""
    zeros = [a for a in arms if a.kind == "replay"]
    cached = [a for a in arms if a.kind in CACHED_KINDS]
    if not zeros or not cached:
        return None
    zero = max(zeros, key=lambda a: (a.success_rate, -a.compute_ms))
    winners = [a for a in cached if a.compute_ms <= zero.compute_ms and a.success_rate > zero.success_rate]
    return bool(winners), winners, zero


def zero_compute_sentence(arms: Sequence[Arm]) -> str | None:
    """The opening answer's sentence on the zero-compute arm (or on its absence beside cached modes); ``None``
    without cached modes."""
    verdict = zero_compute_verdict(arms)
    if verdict is None:
        if any(a.kind in CACHED_KINDS for a in arms):
            return (
                "There is no zero-compute arm (`replay<N>`: the rest of the last chunk executed, no model call) "
                "among these runs, so whether a cached mode beats doing nothing is not known."
            )
        return None
    wins, winners, zero = verdict
    if wins:
        names = ", ".join(a.cell() for a in sorted(winners, key=lambda a: a.compute_ms))
        return (
            f"**A cached mode beats the zero-compute arm**: {names} succeeds more than {zero.cell()} "
            "(the rest of the last chunk executed, no model call between full inferences) at equal or lower "
            "compute per control step."
        )
    cached = [a for a in arms if a.kind in CACHED_KINDS]
    dearer = sorted((a for a in cached if a.compute_ms > zero.compute_ms), key=lambda a: a.compute_ms)
    worse = sorted((a for a in cached if a.compute_ms <= zero.compute_ms), key=lambda a: a.compute_ms)
    text = (
        f"**No cached mode beats the zero-compute arm at equal or lower compute**: {zero.cell()} executes the "
        "rest of the last chunk instead of calling the model"
    )
    if worse:
        text += "; at equal or lower compute " + ", ".join(a.cell() for a in worse) + " succeed(s) no more"
    if dearer:
        better = [a for a in dearer if a.success_rate > zero.success_rate]
        text += "; " + ", ".join(a.cell() for a in dearer) + " cost(s) more compute"
        text += (
            f", and only {', '.join(f'`{a.label}`' for a in better)} buy(s) success with it"
            if better
            else " and succeed(s) no more"
        )
    return text + "."

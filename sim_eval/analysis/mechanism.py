"""Why cached frames fail, read from the records: re-play of the old plan, and the task phase where cliffs start.

**Re-play.** The embedded model (like openpi's ``pi05_libero``) conditions on images and instruction only, so a
cached (decode-only) frame sees exactly the conditioning of its window's full frame: it re-samples *that* frame's
plan from the beginning while the robot has already executed the first ``replan_steps`` actions of it. Records carry
the actions each inference had executed (``executed``: the chunk's first ``replan_steps``, 4 decimals), so for every
cached frame ``replay_frames`` measures the mean |difference| of its executed actions

* to the actions executed one replan earlier (``to_previous``: small = the old plan played again), and
* to what ``full`` executed at the same inference of the paired episode (``to_full``: what a fresh prefix gave there;
  meaningful while the two episodes still follow one path, see ``divergence``).

**Phase.** ``phases`` labels each inference of an episode approach / grasp / transport / place from the gripper
opening and the end-effector height the records carry (``grip``, ``eef_z``, from the state the policy was given):
grasp from the first inference where the opening falls below ``CLOSE_FRACTION`` of the episode's first; transport
once the end effector rises ``LIFT_M`` above its height there; place once it descends ``LIFT_M`` below its highest
point since, or the gripper reopens by ``REOPEN_M``. A cliff episode departs in the phase of the ``full`` episode
(the one that solved the task) at its divergence point: the two follow one path up to there."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim_eval.analysis.divergence import divergence_point
from sim_eval.analysis.stats import inference_kind

Record = dict[str, Any]
PHASES = ("approach", "grasp", "transport", "place")
CLOSE_FRACTION = 0.8
LIFT_M = 0.02
REOPEN_M = 0.005


def action_distance(a: Any, b: Any) -> float | None:
    """Mean |a - b| over the rows both executed (an episode can end part-way through a chunk); ``None`` if either
    is missing or empty."""
    if not a or not b:
        return None
    rows = min(len(a), len(b))
    return float(np.abs(np.asarray(a[:rows], dtype=float) - np.asarray(b[:rows], dtype=float)).mean())


@dataclass(frozen=True)
class ReplayFrame:
    index: int  # the cached frame's inference index
    to_previous: float  # mean |executed - executed one replan earlier|
    to_full: float | None  # mean |executed - full's executed at the same inference|; None past full's last one

    @property
    def replays(self) -> bool:
        """Closer to the plan it already executed than to what a fresh prefix gave at the same point."""
        return self.to_full is not None and self.to_previous < self.to_full


def replay_frames(baseline: Record | None, mode: Record) -> list[ReplayFrame]:
    """One ``ReplayFrame`` per cached frame of ``mode`` that has executed actions and a predecessor with them."""
    infs = mode.get("inferences") or []
    base = (baseline or {}).get("inferences") or []
    frames = []
    for index in range(1, len(infs)):
        if inference_kind(infs[index]) != "cached":
            continue
        previous = action_distance(infs[index].get("executed"), infs[index - 1].get("executed"))
        if previous is None:
            continue
        full = action_distance(infs[index].get("executed"), base[index].get("executed")) if index < len(base) else None
        frames.append(ReplayFrame(index, previous, full))
    return frames


def replay_summary(frames: Sequence[ReplayFrame]) -> dict[str, Any]:
    """Cached frames compared, median distances to the previous plan and to ``full``, and the fraction of frames
    (with a ``full`` counterpart) closer to the previous plan."""
    to_full = [f.to_full for f in frames if f.to_full is not None]
    return {
        "frames": len(frames),
        "to_previous_median": float(np.median([f.to_previous for f in frames])) if frames else None,
        "to_full_median": float(np.median(to_full)) if to_full else None,
        "replay_fraction": sum(f.replays for f in frames) / len(to_full) if to_full else None,
    }


def phases(record: Record) -> list[str | None]:
    """The task phase of each inference (see the module docstring); ``None`` where ``grip`` / ``eef_z`` are not
    recorded (records written before they were)."""
    infs = record.get("inferences") or []
    out: list[str | None] = []
    phase, start_open = "approach", None
    grasp_z = top_z = min_grip = 0.0
    for inf in infs:
        grip, z = inf.get("grip"), inf.get("eef_z")
        if grip is None or z is None:
            out.append(None)
            continue
        grip, z = float(grip), float(z)
        if start_open is None:
            start_open = grip
        if phase == "approach" and grip < CLOSE_FRACTION * start_open:
            phase, grasp_z, min_grip = "grasp", z, grip
        elif phase == "grasp":
            min_grip = min(min_grip, grip)
            if z > grasp_z + LIFT_M:
                phase, top_z = "transport", z
        elif phase == "transport":
            top_z, min_grip = max(top_z, z), min(min_grip, grip)
            if z < top_z - LIFT_M or grip > min_grip + REOPEN_M:
                phase = "place"
        out.append(phase)
    return out


def departure_phase(baseline: Record, mode: Record, views: list[str] | None = None) -> str | None:
    """The phase of the ``full`` episode at the inference where ``mode`` departs from it; ``None`` when it does
    not depart within tolerance or the phase is not recorded there."""
    div = divergence_point(baseline, mode, views=views)
    if div is None:
        return None
    labels = phases(baseline)
    return labels[div.index] if div.index < len(labels) else None


def departure_phases(pairs: Iterable[tuple[Record, Record]], views: list[str] | None = None) -> Counter:
    """How many of the (baseline, mode) pairs depart in each phase; ``"unknown"`` for those that depart where no
    phase is recorded, nothing for those that do not depart."""
    counts: Counter = Counter()
    for baseline, mode in pairs:
        if divergence_point(baseline, mode, views=views) is None:
            continue
        counts[departure_phase(baseline, mode, views) or "unknown"] += 1
    return counts

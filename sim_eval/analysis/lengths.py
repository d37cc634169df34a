"""Episode length and wall time per group, and the paired change in length against ``full``.

Lower latency per inference can still cost time if the robot dithers, so a mode's episodes are compared in control
steps (simulated time, independent of the machine) on the episodes *both* runs solved: a failure runs to the step
limit, so including failures would measure the success rate again, not the length. The test is the exact sign test
on the paired differences (longer vs shorter, ties dropped): it assumes nothing about the shape of the differences,
and identical episodes -- common in a deterministic simulator where a mode did not change the path -- are ties, not
evidence either way. Wall time (``wall_s``: simulation, rendering and inference) is reported beside it but depends on
the machine and its load."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim_eval.analysis.stats import Pairing, mcnemar_exact

Record = dict[str, Any]


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def length_summary(records: Iterable[Record]) -> dict[str, Any]:
    """Of one group's finished episodes: how many succeeded, median and mean steps of successes, median steps of all
    finished episodes, median ``wall_s`` of successes and of all finished episodes (``None`` where there is none)."""
    finished = [r for r in records if r.get("error") is None and r.get("success") is not None]
    successes = [r for r in finished if r.get("success") is True]
    steps_ok = [float(r["steps"]) for r in successes if r.get("steps") is not None]
    wall_ok = [float(r["wall_s"]) for r in successes if r.get("wall_s") is not None]
    return {
        "finished": len(finished),
        "successes": len(successes),
        "steps_success_median": _median(steps_ok),
        "steps_success_mean": float(np.mean(steps_ok)) if steps_ok else None,
        "steps_finished_median": _median([float(r["steps"]) for r in finished if r.get("steps") is not None]),
        "wall_success_median_s": _median(wall_ok),
        "wall_finished_median_s": _median([float(r["wall_s"]) for r in finished if r.get("wall_s") is not None]),
    }


@dataclass
class PairedLength:
    """Mode minus baseline steps (and wall seconds) on the episode keys both solved, with the exact sign test."""

    steps: list[int] = field(default_factory=list)  # one difference per both-succeed pair, in key order
    wall_s: list[float] = field(default_factory=list)  # pairs where both records carry wall_s

    @property
    def pairs(self) -> int:
        return len(self.steps)

    @property
    def longer(self) -> int:
        return sum(d > 0 for d in self.steps)

    @property
    def shorter(self) -> int:
        return sum(d < 0 for d in self.steps)

    @property
    def ties(self) -> int:
        return sum(d == 0 for d in self.steps)

    @property
    def median(self) -> float | None:
        return _median(self.steps)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.steps)) if self.steps else None

    @property
    def sign_p(self) -> float | None:
        """Exact two-sided sign test (ties dropped): the binomial test of ``longer`` vs ``shorter``; ``None`` without
        a pair."""
        return mcnemar_exact(self.longer, self.shorter) if self.steps else None

    @property
    def wall_median(self) -> float | None:
        return _median(self.wall_s)


def paired_length(pairing: Pairing, baseline: Iterable[Record], mode: Iterable[Record]) -> PairedLength:
    """Differences on ``pairing.both_success`` (records of the same baseline and mode the pairing was built from)."""
    base = {r["key"]: r for r in baseline}
    other = {r["key"]: r for r in mode}
    out = PairedLength()
    for key in pairing.both_success:
        b, m = base[key], other[key]
        if b.get("steps") is None or m.get("steps") is None:
            continue
        out.steps.append(int(m["steps"]) - int(b["steps"]))
        if b.get("wall_s") is not None and m.get("wall_s") is not None:
            out.wall_s.append(float(m["wall_s"]) - float(b["wall_s"]))
    return out

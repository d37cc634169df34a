"""The divergence point of a paired episode: the first inference at which a mode's episode departs from the ``full``
episode with the same key.

Records hold neither the executed actions nor the end-effector path, so the departure is read from two per-inference
fields that are recorded, aligned by inference index (both runs infer at the same control steps, every
``replan_steps``):

* **inputs** -- the evaluator's ``lag_mae`` (max-over-views pixel MAE of the inference's model inputs against those
  1..N inferences earlier). Both runs start from the same init state, env seed and noise, and the simulator is
  deterministic, so while the two episodes follow the same path their inputs, hence their ``lag_mae`` lists, are
  equal to the recorded precision. The episodes have observably departed at the first inference where any lag differs
  by more than ``mae_tol`` (default 0.5 uint8 units, well above the recorded rounding of 1e-5 and below the
  per-inference scene motion of a moving arm). This sees the *scene* change, not its cause: an arm that moves as
  much along another path can pass for a while.
* **actions** -- the shadow reference on cached frames (``shadow_cos``: cosine of the executed chunk against the chunk
  a full prefix would give for the same inputs and noise). While the inputs still agree, that full chunk is the
  chunk the ``full`` run executed at the same inference, so the shadow cosine compares the mode's executed actions
  with the ``full`` run's. They depart at the first cached frame with ``shadow_cos < cos_tol`` (default 0.9, the
  highest bound of the shadow table).

The divergence point is the first inference that meets either criterion (inputs checked first: once they differ the
shadow no longer compares against the ``full`` run's actions). ``None`` when neither meets it before the shorter
trace ends -- the paths agreed within tolerance for as long as both ran, or nothing was recorded to compare
(``has_evidence``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim_eval.analysis.stats import inference_kind, inference_mae

ACTION_COS_TOL = 0.9
INPUT_MAE_TOL = 0.5

Record = dict[str, Any]


@dataclass
class Divergence:
    """Where a mode's episode departs from the ``full`` episode and what the mode's controller saw there."""

    index: int  # inference index (0-based position in ``inferences``)
    step: int | None  # control step of that inference
    cause: str  # "inputs" (the observed scene departed) or "actions" (executed chunk departed, inputs still equal)
    value: float  # largest |lag MAE difference| (inputs) or the shadow cosine (actions)
    kind: str  # the mode's inference kind there: full / cached / forced
    window_pos: int | None  # inferences since the mode's last full frame (0 = full frame)
    pixel_mae: float | None  # the mode controller's max-over-views MAE against its last full frame
    shadow_cos: float | None

    def describe(self) -> str:
        if self.cause == "inputs":
            return f"inputs (lag MAE Δ {self.value:.2f})"
        return f"actions (shadow cos {self.value:.3f})"


def _lag_difference(base: dict[str, Any], mode: dict[str, Any]) -> float | None:
    diffs = [
        abs(float(a) - float(b))
        for a, b in zip(base.get("lag_mae") or [], mode.get("lag_mae") or [], strict=False)
        if a is not None and b is not None
    ]
    return max(diffs) if diffs else None


def has_evidence(baseline: Record, mode: Record) -> bool:
    """Whether the pair records anything the divergence is read from: lag MAE on both sides, or a shadow cosine."""
    base_lags = any(i.get("lag_mae") for i in baseline.get("inferences") or [])
    mode_infs = mode.get("inferences") or []
    mode_lags = any(i.get("lag_mae") for i in mode_infs)
    return (base_lags and mode_lags) or any(i.get("shadow_cos") is not None for i in mode_infs)


def divergence_point(
    baseline: Record,
    mode: Record,
    *,
    cos_tol: float = ACTION_COS_TOL,
    mae_tol: float = INPUT_MAE_TOL,
    views: list[str] | None = None,
) -> Divergence | None:
    """The first inference at which ``mode`` departs from ``baseline`` (the ``full`` episode of the same key) beyond
    the tolerances (see the module docstring); ``views`` selects the views of the reported ``pixel_mae``."""
    base_infs, mode_infs = baseline.get("inferences") or [], mode.get("inferences") or []
    for index, (b, m) in enumerate(zip(base_infs, mode_infs, strict=False)):
        lag = _lag_difference(b, m)
        cos = m.get("shadow_cos")
        if lag is not None and lag > mae_tol:
            cause, value = "inputs", lag
        elif cos is not None and float(cos) < cos_tol:
            cause, value = "actions", float(cos)
        else:
            continue
        return Divergence(
            index=index,
            step=m.get("step"),
            cause=cause,
            value=value,
            kind=inference_kind(m),
            window_pos=m.get("window_pos"),
            pixel_mae=inference_mae(m, views),
            shadow_cos=None if cos is None else float(cos),
        )
    return None


def _trace(record: Record) -> list[tuple[Any, Any, Any]]:
    return [(i.get("lag_mae"), i.get("pixel_mae"), i.get("shadow_cos")) for i in record.get("inferences") or []]


def first_difference(a: Record, b: Record) -> int | None:
    """For two records of one episode under the same settings (a re-run, another machine): the first inference at
    which their recorded inputs (lag and pixel MAE) or shadow cosine differ at all, ``len`` of the shorter trace when
    one trace is a prefix of the other, and ``None`` when the episodes repeat exactly (same outcome, steps and
    trace): the simulator and the policy are deterministic, so on one machine a re-run gives ``None``."""
    ta, tb = _trace(a), _trace(b)
    for index, (x, y) in enumerate(zip(ta, tb, strict=False)):
        if x != y:
            return index
    if len(ta) != len(tb):
        return min(len(ta), len(tb))
    same = (a.get("success"), a.get("steps")) == (b.get("success"), b.get("steps"))
    return None if same else len(ta)

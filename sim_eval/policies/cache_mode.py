"""The cache-mode grammar: ``full`` | ``cache<N>`` | ``adaptive<N>`` | ``replay<N>`` with N >= 2, and the *arm name*
built on it: an adaptive mode whose refresh rule is not the default one carries the rule, ``adaptive3@mae4.2`` or
``adaptive3@mae6.5:agentview`` (``arm_name`` writes it, ``parse_arm`` reads it back; nothing else builds or parses
either). ``DEFAULT_THRESHOLD`` is the one default of the refresh rule's MAE threshold.

Parsed once, at config validation, so a malformed mode fails before any simulator or model starts. Analysis parses
the ``cache_mode`` of records and the arm names of groups with the same functions.

``replay<N>`` is the zero-compute arm: every N-th inference is a full one and in between the model is not called;
the policy executes the next ``replan_steps`` actions of the last computed chunk (``sim_eval.policies.replay``). That
is only possible while the chunk holds them, which ``check_chunk`` enforces where both numbers are known."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sim_eval.policies.base import VIEWS

DEFAULT_THRESHOLD = 6.5  # adaptive<N>: refresh when the pixel MAE (0-255, max over views) reaches this
_GRAMMAR = "full | cache<N> | adaptive<N> | replay<N> with N >= 2 (e.g. cache3, adaptive3, replay2)"
_PATTERN = re.compile(r"^(full|cache|adaptive|replay)(\d*)$")


@dataclass(frozen=True)
class CacheMode:
    kind: str  # "full", "cache", "adaptive" or "replay"
    period: int  # a full frame every `period` inferences; 1 for "full"

    @property
    def name(self) -> str:
        return "full" if self.kind == "full" else f"{self.kind}{self.period}"

    @classmethod
    def parse(cls, text: str) -> CacheMode:
        match = _PATTERN.match(str(text).strip())
        if match is None:
            raise ValueError(f"invalid cache mode {text!r}: expected {_GRAMMAR}")
        kind, digits = match.groups()
        if kind == "full":
            if digits:
                raise ValueError(f"invalid cache mode {text!r}: 'full' takes no number; expected {_GRAMMAR}")
            return cls("full", 1)
        if digits and int(digits) == 1:
            # FlashRT's cache_frames=1 means "no caching": that mode has one name here, `full`, so that records,
            # run identities and report labels never split one mode in two (replay1 likewise calls the model every time)
            why = (
                "replay needs N >= 2 (replay1 calls the model at every inference"
                if kind == "replay"
                else "a prefix reused for 1 frame is no reuse (that"
            )
            raise ValueError(f"invalid cache mode {text!r}: {why}, which is policy.cache=full); expected {_GRAMMAR}")
        if not digits or int(digits) < 2:
            raise ValueError(f"invalid cache mode {text!r}: {kind} needs N >= 2; expected {_GRAMMAR}")
        return cls(kind, int(digits))

    def check_chunk(self, chunk: int, replan_steps: int) -> None:
        """Raise ``ValueError`` (one line naming the values) when a ``replay<N>`` window would run past the chunk:
        its N inferences consume N x replan_steps actions of one computed chunk. Other modes call the model at every
        inference and need nothing of the chunk's length."""
        if self.kind == "replay" and self.period * replan_steps > chunk:
            raise ValueError(
                f"cache mode {self.name} needs {self.period} x protocol.replan_steps={replan_steps} = "
                f"{self.period * replan_steps} actions of one chunk, but the policy's chunk holds {chunk}"
            )


@dataclass(frozen=True)
class Arm:
    """A parsed arm name: the mode (``kind`` and ``period`` as ``CacheMode`` has them; ``period`` None and ``kind``
    the text itself for a mode outside the grammar, e.g. ``-`` of a policy without a cache), and the refresh rule
    (``threshold``, ``views``: None where the name carries none, i.e. the default rule)."""

    mode: str
    kind: str
    period: int | None
    threshold: float | None = None
    views: tuple[str, ...] | None = None


def _number(value: float) -> str:
    """A threshold as text: ``%g`` (``4.2``, ``6.5``, ``2``), or ``repr`` where ``%g`` would lose digits, so that
    ``float`` of the text is the value again."""
    text = f"{value:g}"
    return text if float(text) == value else repr(value)


def arm_name(mode: str, threshold: float | None = None, views: Sequence[str] | None = None) -> str:
    """The name of the arm ``mode`` runs under a refresh rule: the mode itself, except for an adaptive mode whose
    rule is not the default one (threshold ``DEFAULT_THRESHOLD``, max over every view), which carries it:
    ``adaptive3@mae4.2``, ``adaptive3@mae6.5:agentview``. ``threshold`` None = the default."""
    mode = str(mode)
    if not mode.startswith("adaptive") or threshold is None:
        return mode
    default_views = views is None or sorted(views) == sorted(VIEWS)
    if float(threshold) == DEFAULT_THRESHOLD and default_views:
        return mode
    return f"{mode}@mae{_number(float(threshold))}" + ("" if default_views else ":" + "+".join(views))


def parse_arm(name: str) -> Arm:
    """An arm name (``arm_name``) read back. A mode outside the grammar is kept as text (``kind`` = the mode,
    ``period`` None); a rule that does not read as ``mae<number>[:view+view]`` raises ``ValueError``."""
    mode, sep, rule = str(name).partition("@")
    try:
        parsed = CacheMode.parse(mode)
        kind, period = parsed.kind, parsed.period
    except ValueError:
        kind, period = mode, None
    if not sep:
        return Arm(mode, kind, period)
    threshold_text, _, view_text = rule.partition(":")
    if not threshold_text.startswith("mae"):
        raise ValueError(f"arm {name!r}: the refresh rule after '@' must read mae<threshold>[:view+view]")
    try:
        threshold = float(threshold_text[3:])
    except ValueError:
        raise ValueError(f"arm {name!r}: {threshold_text[3:]!r} is not a threshold") from None
    views = tuple(view_text.split("+")) if view_text else None
    return Arm(mode, kind, period, threshold, views)

"""The cache-mode grammar: ``full`` | ``cache<N>`` | ``adaptive<N>`` | ``replay<N>`` with N >= 2.

Parsed once, at config validation, so a malformed mode fails before any simulator or model starts. Analysis parses
the ``cache_mode`` of records with the same rule (``sim_eval.analysis.stats.parse_mode``).

``replay<N>`` is the zero-compute arm: every N-th inference is a full one and in between the model is not called;
the policy executes the next ``replan_steps`` actions of the last computed chunk (``policies.replay``). That is only
possible while the chunk holds them, which ``check_chunk`` enforces where both numbers are known."""

from __future__ import annotations

import re
from dataclasses import dataclass

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

"""The cache-mode grammar: ``full`` | ``cache<N>`` | ``adaptive<N>`` with N >= 2.

Parsed once, at config validation, so a malformed mode fails before any simulator or model starts."""

from __future__ import annotations

import re
from dataclasses import dataclass

_GRAMMAR = "full | cache<N> | adaptive<N> with N >= 2 (e.g. cache3, adaptive3)"
_PATTERN = re.compile(r"^(full|cache|adaptive)(\d*)$")


@dataclass(frozen=True)
class CacheMode:
    kind: str  # "full", "cache" or "adaptive"
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
            # run identities and report labels never split one mode in two
            raise ValueError(
                f"invalid cache mode {text!r}: a prefix reused for 1 frame is no reuse, which is policy.cache=full; "
                f"expected {_GRAMMAR}"
            )
        if not digits or int(digits) < 2:
            raise ValueError(f"invalid cache mode {text!r}: {kind} needs N >= 2; expected {_GRAMMAR}")
        return cls(kind, int(digits))

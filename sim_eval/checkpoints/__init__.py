"""Checkpoints shipped with sim_eval (installed with the package, so a fresh clone or a wheel has them).

``pi05_small_libero``: the embedded default of ``policy=pi05``, a small Pi0.5 (the engine's own network at small
widths) trained from scratch on the scripted expert's demonstrations of LIBERO, never on the evaluation's init states.
Its ``README.md`` says what it is, how it was made and what it scores; conclusions about the real Pi0.5 need the real
checkpoint (``policy.checkpoint=PATH``)."""

from __future__ import annotations

from pathlib import Path

EMBEDDED = "pi05_small_libero"


def path(name: str = EMBEDDED) -> Path:
    """The directory of the shipped checkpoint ``name``."""
    return Path(__file__).resolve().parent / name


def resolve(checkpoint: str | None) -> str:
    """The checkpoint directory ``policy.checkpoint`` names: ``None`` = the embedded one; ``~`` expanded. The one
    rule, used by config validation and by the policy factory alike."""
    return str(path()) if checkpoint is None else str(Path(str(checkpoint)).expanduser())

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


def trained_suites(checkpoint: str | None) -> list[str] | None:
    """The suites a checkpoint was trained on, from the ``data.suite`` of its ``training.json`` (``python -m
    sim_eval.train`` writes one suite's name, or several joined by commas); None when it does not say (a real
    Pi0.5 checkpoint has no ``training.json``)."""
    import json

    try:
        suite = json.loads((Path(resolve(checkpoint)) / "training.json").read_text()).get("data", {}).get("suite")
    except (OSError, ValueError, AttributeError):
        return None
    return [s for s in suite.split(",") if s] if isinstance(suite, str) and suite else None


def unseen_suite_warning(checkpoint: str | None, suite: str, base_suite: str | None = None) -> str | None:
    """One line when the checkpoint says which suites it was trained on and ``suite`` (or the base suite it
    perturbs) is not among them: such a run measures a model on tasks it has never seen, which is allowed (a
    transfer test) but never what a default run should silently be."""
    seen = trained_suites(checkpoint)
    if seen is None or suite in seen or (base_suite is not None and base_suite in seen):
        return None
    return (
        f"suite {suite} is not one this checkpoint was trained on ({', '.join(seen)}, its training.json): "
        "its tasks are new to the model, expect failures"
    )

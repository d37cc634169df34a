"""What the docs and messages tell a user exists: every ``policy.X=`` / ``eval.X=`` / ``protocol.X=`` option that the
report, the README or the docs name is a real setting (16: the report once said ``analysis.shadow=true``), and no
internal development-round labels ("stop 11") are left in docs or docstrings (17)."""

from __future__ import annotations

import re

from conftest import REPO, compose
from omegaconf import OmegaConf

OPTION = re.compile(r"`((?:policy|eval|protocol|logger|analysis|suite)\.[a-z_.]+)=")
# docker/ is not in the image (.dockerignore), where these tests also run: its README is checked where it exists
SOURCES = [
    REPO / "README.md",
    *(REPO / "docs").glob("*.md"),
    *(REPO / "docker").glob("*.md"),
    *(REPO / "sim_eval").rglob("*.py"),
]


def _settings() -> set[str]:
    keys = set()
    for policy in ("pi05", "constant", "scripted"):
        cfg = OmegaConf.to_container(compose([f"policy={policy}"]), resolve=False)

        def walk(prefix: str, node) -> None:
            for key, value in node.items():
                keys.add(f"{prefix}{key}")
                if isinstance(value, dict):
                    walk(f"{prefix}{key}.", value)

        walk("", cfg)
    return keys


def test_every_option_the_docs_and_report_name_exists():
    settings = _settings()
    named = {(path.relative_to(REPO), m) for path in SOURCES for m in OPTION.findall(path.read_text())}
    assert named, "the pattern finds the options the README names"
    unknown = sorted((str(path), option) for path, option in named if option not in settings)
    assert unknown == []


def test_no_development_round_labels_in_docs_or_docstrings():
    label = re.compile(r"\bstops? ?-?\d+\b|\bthis stop\b", re.IGNORECASE)
    files = [*SOURCES, *(REPO / "scripts").glob("*.py"), *(REPO / "policies").rglob("*.py")]
    found = [(str(p.relative_to(REPO)), m) for p in files for m in label.findall(p.read_text())]
    assert found == []

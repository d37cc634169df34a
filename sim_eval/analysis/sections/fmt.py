"""Markdown formatting shared by the report sections: percentages, numbers, p-values, tables, links."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def pvalue(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def rate_ci(counts: dict[str, Any]) -> str:
    if counts.get("success_rate") is None:
        return "– (no finished episode)"
    return f"{pct(counts['success_rate'])} [{pct(counts['ci_low'])}, {pct(counts['ci_high'])}]"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def short(text: Any, width: int = 60) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def video_cell(record: dict[str, Any] | None, out_dir: Path) -> str:
    if not record or not record.get("video"):
        return "–"
    path = Path(record["_run_dir"]) / record["video"]
    link = f"[{Path(record['video']).name}]({rel(path, out_dir)})"
    return link if path.exists() else f"{link} (file missing)"

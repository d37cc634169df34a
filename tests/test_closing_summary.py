"""The lines a finished run ends with, derived from its records."""

from __future__ import annotations

import json

from conftest import compose

from sim_eval.analysis.summary import closing_summary
from sim_eval.config import validate


def _record(key: str, success: bool | None, kinds: list[str], error: bool = False) -> dict:
    infs = [
        {"step": 5 * i, "infer_ms": {"full": 40.0, "cached": 20.0, "forced": 41.0}[k], "used_full": k != "cached",
         "forced_refresh": k == "forced"}
        for i, k in enumerate(kinds)
    ]  # fmt: skip
    return {"key": key, "suite": "libero_object", "task_id": 0, "policy": "pi05", "cache_mode": "adaptive3",
            "success": success, "inferences": infs, "error": {"message": "boom"} if error else None}  # fmt: skip


def test_summary_names_model_success_interval_latency_and_next_command(tmp_path):
    run = validate(compose(["policy=pi05_tiny", "policy.cache=adaptive3", "suite=libero_object"]))
    records = [
        _record("libero_object/0/0", True, ["full", "cached", "forced"]),
        _record("libero_object/0/1", False, ["full", "cached", "cached"]),
        _record("libero_object/0/2", None, ["full"], error=True),
    ]
    (tmp_path / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = closing_summary(run, tmp_path)
    lines = text.splitlines()
    assert lines[0].startswith("libero_object pi05:adaptive3 (") and "tiny_lerobot" in lines[0]
    assert lines[1] == "  success 1/2 = 50% (95% CI 9%-91%), 1 crashed"
    assert lines[2] == "  latency p50: full 40.0 ms, cached 20.0 ms, forced 41.0 ms; full prefix on 57% of inferences"
    assert lines[3] == f"  records: {tmp_path / 'episodes.jsonl'}; report: python -m sim_eval.report {tmp_path}"

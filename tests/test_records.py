"""Episode records: append-only, kill-safe, and the only source of summaries."""

from __future__ import annotations

import json

from conftest import compose

from sim_eval.analysis.summary import summarize
from sim_eval.config import validate
from sim_eval.records.episodes import EpisodeLog, dedupe, read_records
from sim_eval.runtime.job import plan_episodes


def _record(task, episode, success, error=None, suite="libero_object", mode="full"):
    return {
        "key": f"{suite}/{task}/{episode}",
        "suite": suite,
        "task_id": task,
        "episode_index": episode,
        "policy": "pi05",
        "cache_mode": mode,
        "success": None if error else success,
        "error": {"type": "RuntimeError", "message": error, "traceback": "..."} if error else None,
    }


def test_partial_trailing_line_is_ignored_and_trimmed(tmp_path):
    path = tmp_path / "episodes.jsonl"
    with EpisodeLog(path) as log:
        log.append(_record(0, 0, True))
        log.append(_record(0, 1, False))
    with open(path, "ab") as handle:  # what a kill -9 in the middle of a write leaves
        handle.write(b'{"key": "libero_object/0/2", "succ')
    assert [r["key"] for r in read_records(path)] == ["libero_object/0/0", "libero_object/0/1"]
    with EpisodeLog(path) as log:
        log.append(_record(0, 2, True))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == [f"libero_object/0/{i}" for i in range(3)]


def test_summary_excludes_errors_from_denominators():
    records = [_record(0, 0, True), _record(0, 1, False), _record(0, 2, None, error="boom"), _record(1, 0, True)]
    summary = summarize(records)
    overall = summary["overall"]
    assert overall == {
        "episodes": 4,
        "finished": 3,
        "successes": 2,
        "failures": 1,
        "errors": 1,
        "success_rate": 2 / 3,
    }
    task0 = summary["suites"]["libero_object"]["tasks"]["0"]
    assert (task0["successes"], task0["finished"], task0["errors"]) == (1, 2, 1)
    assert summary["suites"]["libero_object"]["tasks"]["1"]["success_rate"] == 1.0


def test_summary_of_only_errors_has_no_rate():
    summary = summarize([_record(0, 0, None, error="boom")])
    assert summary["overall"]["success_rate"] is None and summary["overall"]["errors"] == 1


def test_dedupe_prefers_finished_over_error_and_keeps_modes_apart():
    records = [_record(0, 0, None, error="boom"), _record(0, 0, True), _record(0, 0, False)]
    records.append(_record(0, 0, True, mode="cache3"))
    kept = dedupe(records)
    assert len(kept) == 2
    full = next(r for r in kept if r["cache_mode"] == "full")
    assert full["success"] is True and full["error"] is None


def test_three_shards_cover_every_episode_exactly_once():
    seen = []
    for index in range(3):
        run = validate(
            compose(
                [
                    "policy=constant",
                    "suite=libero_goal",
                    "eval.episodes_per_task=7",
                    f"eval.shard.index={index}",
                    "eval.shard.count=3",
                ]
            )
        )
        shard = plan_episodes(run)
        assert shard, "every shard gets work"
        seen.extend(shard)
    assert sorted(seen) == [(t, e) for t in range(10) for e in range(7)]
    assert len(seen) == len(set(seen))


def test_an_archived_run_is_read_and_a_resume_beside_it_adds_to_it(tmp_path):
    import lzma

    from sim_eval.analysis.runs import find_run_dirs
    from sim_eval.records.episodes import read_records

    run = tmp_path / "runs" / "cache3"
    run.mkdir(parents=True)
    lines = [json.dumps({"key": f"libero_object/0/{i}", "success": True}) for i in range(3)]
    (run / "episodes.jsonl.xz").write_bytes(lzma.compress(("\n".join(lines) + "\n").encode()))
    assert find_run_dirs(tmp_path) == [run]
    assert [r["key"] for r in read_records(run)] == [f"libero_object/0/{i}" for i in range(3)]
    (run / "episodes.jsonl").write_text(json.dumps({"key": "libero_object/0/3", "success": False}) + "\n")
    assert [r["key"] for r in read_records(run)][-1] == "libero_object/0/3" and len(read_records(run)) == 4

"""Report rendering on synthetic episode records: cliffs, crashes, missing pairs, no cliffs, no baseline."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from sim_eval.analysis.render import build_report
from sim_eval.analysis.runs import build_groups, load_runs
from sim_eval.analysis.stats import pair_with_baseline
from sim_eval.analysis.synthetic import make_sweep
from sim_eval.records.episodes import EPISODES_FILE
from sim_eval.report import main

PNG = b"\x89PNG\r\n\x1a\n"


def _write_run(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / EPISODES_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _rec(key: str, mode: str, success: bool | None, error: bool = False) -> dict:
    suite, task, episode = key.split("/")
    infs = [{"step": 5 * k, "infer_ms": 14.0 if k % 3 == 0 else 4.5, "used_full": k % 3 == 0} for k in range(6)]
    if mode == "full":
        infs = [{**i, "infer_ms": 14.0, "used_full": True} for i in infs]
    return {
        "key": key, "suite": suite, "task_id": int(task), "episode_index": int(episode), "task_language": "open it",
        "policy": "pi05", "cache_mode": mode, "protocol": {"replan_steps": 5}, "steps": 30, "inferences": infs,
        "success": None if error else success,
        "error": {"type": "RuntimeError", "message": "boom\nsecond line", "traceback": ""} if error else None,
        "video": None,
    }  # fmt: skip


def _links(text: str) -> list[str]:
    """The report's links to its own files (the cited published sources are web addresses)."""
    return [link for link in re.findall(r"\]\(([^)]+)\)", text) if not link.startswith("https://")]


def test_report_with_cliffs_errors_and_missing_pairs(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", tasks=4, episodes=5, videos=True, missing=3)
    groups = {g.mode: g for g in build_groups(load_runs([sweep]))}
    cliffs = pair_with_baseline(groups["full"].records, groups["cache3"].records).cliffs
    assert len(cliffs) > 2  # the synthetic story must produce cliffs for this test to mean anything

    report = build_report([sweep], max_traces=2)
    assert report == (sweep / "report.md").resolve()
    text = report.read_text()
    assert "SYNTHETIC DATA" in text.splitlines()[2]
    assert not re.search(r"\bnan\b|\binf\b", text)  # as Python formats them; the MuJoCo message says "Nan"

    # headline and paired tables: one row per mode; the interrupted adaptive3 run shows its missing pairs
    for mode in ("full", "cache3", "adaptive3"):
        assert re.search(rf"^\| `{mode}` \|", text, re.MULTILINE)
    paired = text.split("## Paired comparison")[1].split("## Per task")[0].splitlines()
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in paired
             if line.startswith("| `")}  # fmt: skip
    assert cells["`adaptive3`"][10:13] == ["3", "0", "1"]  # missing in mode, missing in full, excluded (full crash)
    assert cells["`cache3`"][3] == str(len(cliffs))
    assert cells["`cache3`"][12] == "2"  # two keys excluded: one crash on each side

    # cliff section: every cliff listed, two traces drawn, the rest announced
    section = text.split("## Cliff episodes")[1].split("## Crashed episodes")[0]
    for key in cliffs:
        assert f"`{key}`" in section
    traces = sorted((sweep / "report_plots").glob("trace_pi05_cache3_*.png"))
    assert len(traces) == 2 and all(p.read_bytes().startswith(PNG) for p in traces)
    assert f"({len(cliffs) - 2} more cliff episode(s) not plotted" in section

    # every link (plots, videos) resolves from the report's directory
    links = _links(text)
    assert any("videos/" in link for link in links)
    for link in links:
        assert (report.parent / link).exists(), link
    for name in ("frontier.png", "tasks_heatmap.png", "latency.png", "mae_cdf.png"):
        assert (sweep / "report_plots" / name).read_bytes().startswith(PNG)

    crashed = text.split("## Crashed episodes")[1]
    assert "`libero_spatial/1/2`" in crashed and "`libero_spatial/2/3`" in crashed
    numbers = json.loads((sweep / "report.json").read_text())
    assert numbers["groups"]["cache3"]["cliff_episodes"] == len(cliffs)


def test_report_without_cliffs_says_so(tmp_path):
    keys = [f"libero_goal/{t}/{e}" for t in range(2) for e in range(3)]
    outcomes = [True, False, True, True, True, False]
    full = _write_run(tmp_path / "full", [_rec(k, "full", ok) for k, ok in zip(keys, outcomes, strict=True)])
    cached = _write_run(tmp_path / "cache3", [_rec(k, "cache3", ok) for k, ok in zip(keys, outcomes, strict=True)])
    out = tmp_path / "out"
    assert main([str(full), str(cached), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "**No cliff episodes**: all 4 paired episodes that succeeded under `full` also succeeded under " in text
    assert "No shadow reference in these records (run cached modes with `policy.shadow=true`)" in text  # a real key
    assert "| libero_goal/0 | 2/3 [21%, 94%] | 2/3 [21%, 94%] |" in text  # per-task Wilson table
    assert "No pixel MAE in these records" in text
    assert "SYNTHETIC" not in text
    assert not (full / "report.md").exists()  # --out chose the output directory
    assert not list((out / "report_plots").glob("trace_*.png"))


def test_report_without_baseline_and_with_only_crashes(tmp_path):
    crashed = _write_run(tmp_path / "c", [_rec("libero_10/0/0", "cache3", None, error=True)])
    adaptive = _write_run(tmp_path / "a", [_rec("libero_10/0/0", "adaptive3", True)])
    report = build_report([crashed, adaptive], tmp_path / "out")
    text = report.read_text()
    assert "`cache3`: no `full` run of policy `pi05` among the inputs" in text
    assert "– (no finished episode)" in text
    assert "No cliff analysis: no mode has a `full` baseline" in text
    assert "| `cache3` | `libero_10/0/0` | RuntimeError | boom |" in text


def test_report_over_two_suites_and_bad_dirs(tmp_path, capsys):
    a = make_sweep(tmp_path / "a", modes=("full", "cache3"), tasks=1, episodes=2, errors=False, missing=0)
    b = make_sweep(tmp_path / "b", modes=("full", "cache3"), tasks=1, episodes=2, errors=False, missing=0,
                   suite="libero_object")  # fmt: skip
    assert main([str(a), str(b), "--max-traces", "0"]) == 0
    text = (a / "report.md").read_text()
    assert "### Per suite" in text and "libero_object" in text
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(a), str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("report: error:") and str(empty) in err
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert os.path.exists(a / "report.json")


def _mp4(path: Path, frames: int, value: int) -> str:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(path, fps=20, codec="libx264", macro_block_size=8)
    for i in range(frames):
        writer.append_data(np.full((32, 64, 3), (value + 4 * i) % 255, np.uint8))
    writer.close()
    return path.name


def test_cliff_videos_side_by_side(tmp_path):
    import imageio.v2 as imageio

    keys = ["libero_goal/0/0", "libero_goal/0/1"]
    full = [_rec(k, "full", True) for k in keys]
    cached = [_rec(k, "cache3", False) for k in keys]  # two cliffs
    for run, records, frames in (("full", full, 12), ("cache3", cached, 20)):
        for i, record in enumerate(records):
            if i == 0:  # the first cliff has real videos on both sides
                record["video"] = "videos/" + _mp4(tmp_path / run / "videos" / f"ep{i}.mp4", frames, 40 * i)
            else:  # the second has files that are not videos
                record["video"] = f"videos/ep{i}.mp4"
                (tmp_path / run / "videos" / f"ep{i}.mp4").write_bytes(b"not a video")
    _write_run(tmp_path / "full", full)
    _write_run(tmp_path / "cache3", cached)
    (tmp_path / "expert").mkdir()
    (tmp_path / "expert" / EPISODES_FILE).write_text(json.dumps({**_rec(keys[0], "-", True), "policy": "expert"}))
    text = build_report([tmp_path / "full", tmp_path / "cache3", tmp_path / "expert"], tmp_path / "out").read_text()

    (link,) = re.findall(r"\[side by side\]\(([^)]+)\)", text)
    with imageio.get_reader(tmp_path / "out" / link) as reader:
        frames = [frame for frame in reader]
    assert len(frames) == 20  # the longer episode; the shorter holds its last frame
    assert frames[0].shape[:2] == (2 * (32 + 14), 64)  # full above the mode, each under a label bar
    assert "could not compose" in text  # the unreadable pair is reported, the report still written
    assert "`expert:-`: a policy without cache modes; shown without pairing." in text


def test_threshold_sweep_is_one_arm_per_threshold(tmp_path):
    """adaptive3 at two thresholds over the same episodes: two arms (not one deduplicated group), each paired with
    full, in threshold order in the sweep section, the lower threshold refreshing more."""
    make_sweep(tmp_path / "a", modes=("full", "adaptive3"), tasks=3, episodes=6, errors=False, missing=0)
    make_sweep(tmp_path / "b", modes=("adaptive3",), tasks=3, episodes=6, errors=False, threshold=2.0)
    groups = build_groups(load_runs([tmp_path]))
    assert [g.name for g in groups] == ["full", "adaptive3@mae2", "adaptive3"]
    assert all(len(g.records) == 18 for g in groups)
    report = build_report([tmp_path], tmp_path / "out")
    text = report.read_text()
    assert "## Adaptive threshold sweep" in text
    sweep = json.loads((tmp_path / "out" / "report.json").read_text())["sweeps"]["adaptive3"]
    assert [row["threshold"] for row in sweep] == [2.0, 6.5]
    assert [row["group"] for row in sweep] == ["adaptive3@mae2", "adaptive3"]
    assert sweep[0]["refresh_fraction"] > sweep[1]["refresh_fraction"]
    assert (tmp_path / "out" / "report_plots" / "sweep_adaptive3.png").is_file()
    # one threshold only: no sweep section
    single = build_report([tmp_path / "a"], tmp_path / "out1")
    assert "## Adaptive threshold sweep" not in single.read_text()


def test_frontier_keeps_the_control_arm_off_the_front_and_apart_from_full():
    """11: the control arm (full at another seed) is a reference, not a mode on the Pareto front, and its label
    no longer prints over `full`'s."""
    from sim_eval.analysis.plots import frontier_layout

    rows = [
        {"label": "full", "latency_mean_ms": 10.0, "success_rate": 0.90},
        {"label": "full@seed1", "latency_mean_ms": 9.9, "success_rate": 0.92, "control": True},
        {"label": "cache3", "latency_mean_ms": 5.0, "success_rate": 0.50},
    ]
    front, offsets = frontier_layout(rows)
    assert front == [2, 0]  # by latency: cache3, then full; the control arm would have dominated full
    assert offsets[0] != offsets[1] and offsets[2] == offsets[0]


def test_a_shortened_step_limit_is_flagged_in_the_answer(tmp_path):
    """11: records run under eval.max_steps below the protocol's limit say so in the report's opening answer."""
    sweep = make_sweep(tmp_path / "sweep", modes=("full", "cache3"), tasks=2, episodes=4, missing=0)
    for run in ("0", "1"):
        lines = (sweep / run / "episodes.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        for record in records:
            record["protocol"]["max_steps"] = 50
            record["identity"]["eval.max_steps"] = 50
        (sweep / run / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    build_report([sweep], tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    answer = text[text.index("## Answer") :].split("\n## ")[0]
    flag = "**Shortened episodes** (eval.max_steps below the protocol's limit; libero_spatial: 50 of 220 steps)"
    assert flag in answer
    assert json.loads((tmp_path / "out" / "report.json").read_text())["answer"]["shortened"] == [
        "libero_spatial: 50 of 220 steps"
    ]

"""Issue 18 analysis on hand-built records: the control arm (full at another seed), excess cliffs, per-suite pairing,
paired Δsteps and the divergence point, each against hand-computed numbers, and the report's wording."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from sim_eval.analysis.divergence import divergence_point, has_evidence
from sim_eval.analysis.lengths import length_summary, paired_length
from sim_eval.analysis.paired import excess_cliffs, paired_difference_ci, per_suite_deltas
from sim_eval.analysis.render import build_report
from sim_eval.analysis.runs import baseline_of, build_groups, controls_of, load_runs
from sim_eval.analysis.stats import pair_with_baseline
from sim_eval.records.episodes import EPISODES_FILE

KEYS = [f"libero_goal/0/{e}" for e in range(12)]
# k0..k9 paired everywhere; k10 crashes in the control; k11 is missing from the cache3 run
BASE = "SSSSSSSFFF" + "SS"
MODE = "FFFSSSSFSF" + "S"  # cliffs k0 k1 k2, rescue k8
CONTROL = "FSSSSSSSFF" + "ES"  # cliff k0, rescue k7, k10 crashed


def rec(key: str, mode: str, outcome: str, *, seed: int | None = 0, steps: int = 100, inferences=None, **extra):
    suite, task, episode = key.split("/")
    record = {
        "key": key, "suite": suite, "task_id": int(task), "episode_index": int(episode), "task_language": "open it",
        "policy": "pi05", "cache_mode": mode, "protocol": {"replan_steps": 5},
        "success": None if outcome == "E" else outcome == "S", "steps": steps, "wall_s": steps / 50,
        "inferences": inferences or [{"step": 0, "infer_ms": 14.0, "used_full": True}],
        "error": {"type": "RuntimeError", "message": "boom", "traceback": ""} if outcome == "E" else None,
        "video": None, **extra,
    }  # fmt: skip
    if seed is not None:
        record["seed"] = seed
    return record


def write_run(path: Path, records: list[dict], eval_seed: int | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / EPISODES_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    if eval_seed is not None:
        (path / ".hydra").mkdir()
        (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"eval": {"seed": eval_seed}}))
    return path


def three_arms(tmp_path: Path) -> list[Path]:
    """Baseline and cache3 records carry seed 0; the control's records carry none (written before records had it):
    its seed comes from the run's config, eval.seed=1."""
    base = write_run(tmp_path / "full", [rec(k, "full", o) for k, o in zip(KEYS, BASE, strict=True)])
    mode = write_run(tmp_path / "cache3", [rec(k, "cache3", o) for k, o in zip(KEYS, MODE, strict=False)])
    control = [rec(k, "full", o, seed=None) for k, o in zip(KEYS, CONTROL, strict=True)]
    return [base, mode, write_run(tmp_path / "control", control, eval_seed=1)]


def test_control_arm_is_its_own_group_and_its_excess_cliffs_match_hand_counts(tmp_path):
    groups = build_groups(load_runs(three_arms(tmp_path)))
    assert [(g.mode, g.seed, g.name, len(g.records)) for g in groups] == [
        ("full", 0, "full", 12),
        ("full", 1, "full@seed1", 12),
        ("cache3", 0, "cache3", 11),
    ]  # fmt: skip  -- the control's records are not deduplicated into the baseline's
    base, control, mode = groups
    assert (base.is_baseline, control.is_control, mode.is_baseline) == (True, True, False)
    assert baseline_of(control, groups) is base and baseline_of(mode, groups) is base
    assert controls_of(mode, groups) == [control] and controls_of(control, groups) == []

    mode_pairing = pair_with_baseline(base.records, mode.records)
    control_pairing = pair_with_baseline(base.records, control.records)
    assert (mode_pairing.n_pairs, mode_pairing.cliffs, mode_pairing.rescues) == (11, KEYS[:3], [KEYS[8]])
    assert (control_pairing.n_pairs, control_pairing.cliffs, control_pairing.rescues) == (11, [KEYS[0]], [KEYS[7]])
    assert control_pairing.baseline_errors == [] and control_pairing.mode_errors == [KEYS[10]]

    ex = excess_cliffs(mode_pairing, control_pairing)
    # common pairs k0..k9: k0 is a cliff in both arms, k1 k2 in the mode only, none in the control only
    assert (ex.pairs, ex.both_cliff, ex.mode_only, ex.control_only) == (10, 1, 2, 0)
    assert (ex.mode_cliffs, ex.control_cliffs, ex.excess, ex.excess_rate) == (3, 1, 2, 0.2)
    assert (ex.mode_rescues, ex.control_rescues) == (1, 1)
    assert ex.p_value == 0.5  # 2 * P[Bin(2, 1/2) <= 0]
    assert not ex.exceeds()
    assert ex.interval == pytest.approx((-0.1353237, 0.5023946), abs=1e-6)


def test_newcombe_interval_by_hand():
    # 1 both, 2 first only, 0 second only, 7 neither: p1 = 0.3, p2 = 0.1, Wilson bounds by the closed form
    z = 1.959963984540054

    def wilson(x, n):
        p, z2 = x / n, z * z
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return centre - half, centre + half

    (l1, u1), (l2, u2) = wilson(3, 10), wilson(1, 10)
    phi = (1 * 7 - 0 - 10 / 2) / math.sqrt(3 * 7 * 1 * 9)  # A·D − B·C = 7 > n/2, so corrected by n/2
    low = 0.2 - math.sqrt((0.3 - l1) ** 2 - 2 * phi * (0.3 - l1) * (u2 - 0.1) + (u2 - 0.1) ** 2)
    high = 0.2 + math.sqrt((u1 - 0.3) ** 2 - 2 * phi * (u1 - 0.3) * (0.1 - l2) + (0.1 - l2) ** 2)
    assert paired_difference_ci(1, 2, 0, 7) == pytest.approx((low, high), abs=1e-12)
    assert paired_difference_ci(0, 0, 0, 0) is None
    low, high = paired_difference_ci(0, 8, 0, 0)  # every pair differs one way: clipped at 1
    assert high == 1.0 and low == pytest.approx(0.5412184, abs=1e-6)
    with pytest.raises(ValueError):
        paired_difference_ci(-1, 0, 0, 0)


def test_report_says_no_mode_exceeds_the_control(tmp_path):
    text = build_report(three_arms(tmp_path), tmp_path / "out").read_text()
    section = text.split("## Control arm")[1].split("\n## ")[0]
    assert "`full@seed1` ran the episodes of `full` with another flow-matching noise stream (`eval.seed` 1 instead " \
           "of 0): on 11 pairs it has 1 cliff(s) and 1 rescue(s)" in section  # fmt: skip
    assert "| `cache3` | 10 | 3 | 1 | 1 | 2 | 0 | +2 | 20.0% [-13.5%, 50.2%] | 0.500 | 1 | 1 |" in section
    assert "**No mode exceeds the control arm**: no mode has more cliffs than `full@seed1` beyond chance" in section
    assert "More cliffs than the control arm" not in section
    headline = text.split("## Headline")[1].split("## Paired")[0]
    assert "| +2 (20.0% [-13.5%, 50.2%]), p 0.500 |" in headline and "| (control) |" in headline
    groups = json.loads((tmp_path / "out" / "report.json").read_text())["groups"]
    assert {k: (v["seed"], v["role"]) for k, v in groups.items()} == {
        "full": (0, "baseline"), "full@seed1": (1, "control"), "cache3": (0, "mode"),
    }  # fmt: skip


def divergence_pair(lag_shift_at_3: float = 0.3) -> tuple[dict, dict]:
    """``full`` and ``cache3`` traces of one episode: equal inputs (lag MAE) throughout except a shift at inference 3;
    the cache3 shadow cosine falls below 0.9 first at inference 4."""
    lags = [[], [1.0], [2.0, 2.5], [1.5, 3.0, 3.2], [1.2, 2.1, 3.9], [1.1, 2.0, 3.0]]
    base = [{"step": 5 * k, "infer_ms": 14.0, "used_full": True, "lag_mae": lags[k]} for k in range(6)]
    cos = [None, 0.97, 0.95, None, 0.85, 0.6]
    mode = []
    for k in range(6):
        entry = {"step": 5 * k, "infer_ms": 5.0, "used_full": k % 3 == 0, "window_pos": k % 3,
                 "pixel_mae": {"agentview": 0.5 * k, "wrist": 1.0 * k}, "lag_mae": list(lags[k])}  # fmt: skip
        if cos[k] is not None:
            entry["shadow_cos"] = cos[k]
        mode.append(entry)
    mode[3]["lag_mae"][1] += lag_shift_at_3
    return rec(KEYS[0], "full", "S", inferences=base), rec(KEYS[0], "cache3", "F", inferences=mode)


def test_divergence_point_on_a_constructed_pair():
    base, mode = divergence_pair(lag_shift_at_3=0.3)  # within the 0.5 input tolerance: the actions decide
    div = divergence_point(base, mode)
    assert (div.index, div.step, div.cause, div.value, div.kind) == (4, 20, "actions", 0.85, "cached")
    assert (div.window_pos, div.pixel_mae, div.shadow_cos) == (1, 4.0, 0.85)
    assert divergence_point(base, mode, views=["agentview"]).pixel_mae == 2.0
    assert divergence_point(base, mode, cos_tol=0.96).index == 2  # a stricter action tolerance: cos 0.95 at 2

    base, mode = divergence_pair(lag_shift_at_3=0.8)  # the inputs depart first, at inference 3
    div = divergence_point(base, mode)
    assert (div.index, div.cause, div.shadow_cos) == (3, "inputs", None)
    assert div.value == pytest.approx(0.8)
    assert div.describe() == "inputs (lag MAE Δ 0.80)"

    within = divergence_point(base, mode, cos_tol=0.5, mae_tol=1.0)
    assert within is None and has_evidence(base, mode)
    bare = [{"step": 5 * k, "used_full": True} for k in range(4)]
    blind = (rec(KEYS[0], "full", "S", inferences=bare), rec(KEYS[0], "cache3", "F", inferences=bare))
    assert divergence_point(*blind) is None and not has_evidence(*blind)


def test_report_lists_the_divergence_and_a_mode_that_exceeds_the_control(tmp_path):
    keys = [f"libero_goal/0/{e}" for e in range(8)]
    base_div, mode_div = divergence_pair(lag_shift_at_3=0.3)
    base = [rec(k, "full", "S") for k in keys]
    mode = [rec(k, "cache3", "F") for k in keys]  # eight cliffs...
    base[0]["inferences"], mode[0]["inferences"] = base_div["inferences"], mode_div["inferences"]
    control = [rec(k, "full", "S", seed=1) for k in keys]  # ...none under another seed
    paths = [write_run(tmp_path / n, r) for n, r in (("full", base), ("cache3", mode), ("control", control))]
    text = build_report(paths, tmp_path / "out").read_text()
    assert "**More cliffs than the control arm beyond chance** (p < 0.05): `cache3` (+8, p 0.008)." in text
    assert "**No mode exceeds" not in text
    assert "Where (see Cliff episodes): under `cache3`, 1 of 8 cliff episodes depart from `full` by inference 4 " \
           "(median), and in 1 of them the actions that departed came from a cached frame." in text  # fmt: skip
    cliffs = text.split("### `cache3`")[1]
    row = next(line for line in cliffs.splitlines() if line.startswith(f"| `{keys[0]}` |"))
    assert "| 4 / 20 | actions (shadow cos 0.850) | cached | 1 | 4.00 | 0.850 |" in row
    assert "Found in 1 of 8: median (lower) inference 4, 1 of them at a cached frame." in cliffs
    other = next(line for line in cliffs.splitlines() if line.startswith(f"| `{keys[1]}` |"))
    assert "| not recorded | – |" in other  # one full inference, no lag MAE, no shadow: nothing to compare


def test_per_suite_pairing_by_hand():
    base = [rec("libero_goal/0/0", "full", "S"), rec("libero_goal/1/0", "full", "S"),
            rec("libero_goal/1/1", "full", "F"), rec("libero_object/0/0", "full", "S"),
            rec("libero_object/0/1", "full", "F"), rec("libero_object/2/0", "full", "S")]  # fmt: skip
    outcomes = {
        "libero_goal/0/0": "F",
        "libero_goal/1/0": "F",
        "libero_goal/1/1": "S",
        "libero_object/0/0": "S",
        "libero_object/0/1": "S",
    }  # fmt: skip  -- libero_object/2/0 not run
    mode = [rec(k, "cache3", o) for k, o in outcomes.items()]
    rows = {r["suite"]: r for r in per_suite_deltas(pair_with_baseline(base, mode), base)}
    goal, obj = rows["libero_goal"], rows["libero_object"]
    assert (goal["pairs"], goal["baseline_successes"], goal["mode_successes"]) == (3, 2, 1)
    assert (goal["cliffs"], goal["rescues"], goal["delta"], goal["mcnemar_p"]) == (2, 1, -1 / 3, 1.0)
    assert (obj["pairs"], obj["baseline_successes"], obj["mode_successes"]) == (2, 1, 2)
    assert (obj["cliffs"], obj["rescues"], obj["delta"], obj["mcnemar_p"]) == (0, 1, 0.5, 1.0)


def test_paired_steps_by_hand(tmp_path):
    base_steps = [100, 120, 90, 150, 80, 110]
    mode_steps = [110, 124, 90, 148, 86, 118]  # Δ +10 +4 0 −2 +6 +8
    keys = [f"libero_goal/0/{e}" for e in range(7)]
    base = [rec(k, "full", "S", steps=s) for k, s in zip(keys, base_steps, strict=False)]
    mode = [rec(k, "cache3", "S", steps=s) for k, s in zip(keys, mode_steps, strict=False)]
    base.append(rec(keys[6], "full", "S", steps=95))
    mode.append(rec(keys[6], "cache3", "F", steps=220))  # a cliff: not a both-solved pair
    paired = paired_length(pair_with_baseline(base, mode), base, mode)
    assert paired.steps == [10, 4, 0, -2, 6, 8]
    assert (paired.pairs, paired.longer, paired.shorter, paired.ties) == (6, 4, 1, 1)
    assert (paired.median, paired.mean) == (5.0, pytest.approx(26 / 6))
    assert paired.sign_p == 0.375  # 2 * (1 + 5) / 2**5
    assert paired.wall_median == pytest.approx(0.1)  # wall_s = steps / 50 here: median Δ 5 steps
    summary = length_summary(mode)
    assert (summary["successes"], summary["steps_success_median"], summary["steps_finished_median"]) == (6, 114, 118)

    paths = [write_run(tmp_path / "full", base), write_run(tmp_path / "cache3", mode)]
    text = build_report(paths, tmp_path / "out").read_text()
    assert "| `cache3` | 6 | 114 | 118 | 2.28 | 6 | 5.0 / 4.3 | 4 / 1 / 1 | 0.375 | 0.10 |" in text


def test_synthetic_control_arm_renders_and_its_cliffs_diverge(tmp_path):
    from sim_eval.analysis.synthetic import make_sweep

    sweep = make_sweep(tmp_path / "s", modes=("full", "cache3"), tasks=4, episodes=5, control_seed=1, missing=0)
    groups = build_groups(load_runs([sweep]))
    assert [g.name for g in groups] == ["full", "full@seed1", "cache3"]
    base, control, mode = groups
    by_key = {id(g): {r["key"]: r for r in g.records} for g in groups}
    pairing = pair_with_baseline(base.records, mode.records)
    assert len(pairing.cliffs) >= 3  # the synthetic story must produce cliffs for this test to mean anything
    for key in pairing.cliffs:  # a synthetic cliff follows full until a stale cached grasp frame
        div = divergence_point(by_key[id(base)][key], by_key[id(mode)][key])
        assert div is not None and div.kind == "cached" and div.index > 0
    text = build_report([sweep], max_traces=1).read_text()
    assert "## Control arm (`full` at another noise seed)" in text and "| `cache3` | " in text.split("## Control")[1]
    # the control arm's own cliffs get trace plots too, named apart from the baseline's by the seed
    control_cliffs = pair_with_baseline(base.records, control.records).cliffs
    assert any((sweep / "report_plots").glob("trace_pi05_full_seed1_*.png")) == bool(control_cliffs)


def test_answer_opens_the_report_with_the_verdict_and_numbers(tmp_path):
    """Three arms where cache3 adds nothing beyond chance: the answer says so, with the largest loss; when a mode
    loses every episode the control keeps, it says cliffs, with the excess and its p."""
    text = build_report(three_arms(tmp_path), tmp_path / "out").read_text()
    assert text.index("## Answer") < text.index("## Headline")
    answer = text.split("## Answer")[1].split("\n## ")[0]
    assert "**no mode exceeds the control arm**: no mode has more cliffs than `full@seed1` beyond chance (p < " \
           "0.05); the largest paired loss is -18.2 points (`cache3`)." in answer  # fmt: skip
    assert "- `cache3` succeeds on 54.5% of 11 paired episodes (-18.2 points against `full`): 3 cliff(s), " \
           "1 rescue(s), +2 against the control arm's 1 on the same 10 episodes (exact p 0.500: within " \
           "chance)." in answer  # fmt: skip
    assert "For the model `pi05` (digest not recorded), over 11 paired episodes per mode: " in answer

    keys = [f"libero_goal/0/{e}" for e in range(8)]
    ident = {"policy.checkpoint": "sha256:" + "ab" * 32}
    runs = {
        "full": [rec(k, "full", "S", identity=ident, checkpoint="/x/small") for k in keys],
        "cache2": [rec(k, "cache2", "S" if i < 6 else "F", identity=ident, checkpoint="/x/small")
                   for i, k in enumerate(keys)],
        "cache3": [rec(k, "cache3", "F", identity=ident, checkpoint="/x/small") for k in keys],
        "control": [rec(k, "full", "S", seed=1, identity=ident, checkpoint="/x/small") for k in keys],
    }  # fmt: skip
    out = tmp_path / "cliffy"
    text = build_report([write_run(tmp_path / "c" / n, r) for n, r in runs.items()], out).read_text()
    answer = text.split("## Answer")[1].split("\n## ")[0]
    assert "For the model `small` (pi05, checkpoint sha256:abababababab…), over 8 paired episodes per mode: " \
           "**cliffs, not a smooth and bounded loss.** `cache3` lose episodes" in answer  # fmt: skip
    assert "+8 against the control arm's 0 on the same 8 episodes (exact p 0.008: beyond chance)" in answer
    assert "+2 against the control arm's 0 on the same 8 episodes (exact p 0.500: within chance)" in answer
    assert "Success by reuse window: `full` 100.0% → `cache2` 75.0% → `cache3` 0.0%." in answer
    assert json.loads((out / "report.json").read_text())["answer"]["exceeding_control"] == ["cache3"]


def test_runs_section_names_commit_overrides_and_machine(tmp_path):
    info = {"code_commit": "0123abc"}
    device = {"renderer": "Mesa / llvmpipe", "cpu": {"model": "AMD EPYC", "torch_capability": "AVX512"}}
    sim = {"sim.mujoco": "3.2.3", "sim.texture_colorspace": "linear"}
    full = [rec(k, "full", "S", info=info, device=device, identity=sim | {"policy.cache": "full"}) for k in KEYS[:3]]
    mode = [rec(k, "cache3", "F", info=info if i else {}, device=device) for i, k in enumerate(KEYS[:3])]
    paths = [write_run(tmp_path / "full", full), write_run(tmp_path / "cache3", mode)]
    (paths[1] / ".hydra").mkdir()
    (paths[1] / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["arm=cache3", "policy.shadow=true"]))
    text = build_report(paths, tmp_path / "out").read_text()
    runs = text.split("## Runs")[1].split("\n## ")[0]
    assert "| `../cache3` | `cache3` | 3 | `0123abc`; 1 record(s): not recorded | 3 record(s): not recorded | " \
           "`arm=cache3` `policy.shadow=true` | `Mesa / llvmpipe` | `AMD EPYC (AVX512)` |" in runs  # fmt: skip
    assert "| `../full` | `full` | 3 | `0123abc` | `MuJoCo 3.2.3, textures linear` | – |" in runs


def _mp4(path: Path, frames: int, level: int) -> str:
    import imageio.v2 as imageio
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=10, codec="libx264", macro_block_size=2) as writer:
        for _ in range(frames):
            writer.append_data(np.full((16, 32, 3), level, np.uint8))
    return path.name


def test_cliff_videos_from_re_runs_say_whether_they_repeat_the_record(tmp_path):
    """Study arms record no video; episodes re-run with ``eval.video`` (``--videos``) supply them, each marked as an
    identical repeat or not, and the side-by-side video is composed from the re-runs."""
    infs = [{"step": 5 * k, "infer_ms": 9.0, "used_full": True, "lag_mae": [1.0 * k] if k else []} for k in range(3)]
    base = [rec(k, "full", "S", steps=120, inferences=infs) for k in KEYS[:2]]
    mode = [rec(k, "cache3", "F", steps=280, inferences=infs) for k in KEYS[:2]]
    study = [write_run(tmp_path / "study" / "full", base), write_run(tmp_path / "study" / "cache3", mode)]
    rerun_base = [{**r, "video": "videos/" + _mp4(tmp_path / "again" / "full" / "videos" / "b.mp4", 4, 40)}
                  for r in base[:1]]  # fmt: skip
    moved = [dict(i, lag_mae=[x + 2.0 for x in i["lag_mae"]]) for i in infs]
    rerun_mode = [{**mode[0], "inferences": moved, "video": "videos/" + _mp4(tmp_path / "again" / "cache3" / "videos"
                                                                                / "m.mp4", 6, 200)}]  # fmt: skip
    write_run(tmp_path / "again" / "full", rerun_base)
    write_run(tmp_path / "again" / "cache3", rerun_mode)
    out = tmp_path / "out"
    build_report(study, out)
    assert "No videos were recorded" in (out / "report.md").read_text()
    text = build_report(study, out, video_paths=[tmp_path / "again"]).read_text()
    rows = [line for line in text.split("### `cache3`")[1].splitlines() if line.startswith("| `libero_goal/0/")]
    assert "[b.mp4](../again/full/videos/b.mp4) (re-run, identical)" in rows[0]
    assert "[m.mp4](../again/cache3/videos/m.mp4) (re-run, differs: failure in 280 steps)" in rows[0]
    assert "[side by side](report_videos/pi05_cache3_libero_goal_0_0.mp4)" in rows[0]
    assert (out / "report_videos" / "pi05_cache3_libero_goal_0_0.mp4").stat().st_size > 0
    assert rows[1].endswith("| – | – | – |")  # not re-run


def test_long_cliff_tables_fold_after_twenty_rows(tmp_path):
    keys = [f"libero_goal/0/{e}" for e in range(25)]
    paths = [
        write_run(tmp_path / "full", [rec(k, "full", "S") for k in keys]),
        write_run(tmp_path / "cache3", [rec(k, "cache3", "F") for k in keys]),
    ]
    cliffs = build_report(paths, tmp_path / "out").read_text().split("### `cache3`")[1]
    shown, folded = cliffs.split("<details><summary>5 more cliff episode(s) of `cache3`</summary>")
    assert sum(line.startswith("| `libero_goal/0/") for line in shown.splitlines()) == 20
    assert sum(line.startswith("| `libero_goal/0/") for line in folded.split("</details>")[0].splitlines()) == 5


def test_first_difference_and_compare_reruns(tmp_path):
    """Two runs of one setting: an exact repeat, a trace that departs at inference 1 (same outcome), one that departs
    and flips; the script counts them and the departures."""
    import subprocess
    import sys

    from sim_eval.analysis.divergence import first_difference

    infs = [{"step": 5 * k, "used_full": True, "lag_mae": [float(k)] if k else [], "pixel_mae": None} for k in range(3)]
    moved = [infs[0], {**infs[1], "lag_mae": [1.5]}, infs[2]]
    a = [rec(k, "full", "S", inferences=infs) for k in KEYS[:3]]
    b = [rec(KEYS[0], "full", "S", inferences=infs), rec(KEYS[1], "full", "S", inferences=moved),
         rec(KEYS[2], "full", "F", steps=280, inferences=infs)]  # fmt: skip
    assert [first_difference(x, y) for x, y in zip(a, b, strict=True)] == [None, 1, 3]
    assert first_difference(a[0], rec(KEYS[0], "full", "S", inferences=infs[:2])) == 2
    paths = [write_run(tmp_path / "a", a), write_run(tmp_path / "b", b)]
    script = Path(__file__).resolve().parents[1] / "scripts" / "compare_reruns.py"
    out = subprocess.run([sys.executable, script, *map(str, paths), "--list"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "3 common episodes: 1 repeat exactly, 2 differ" in out.stdout
    assert "outcome changed in 1: 1 succeed only in A, 0 only in B" in out.stdout
    assert f"{KEYS[2]}: from inference 3; steps 100 vs 280 OUTCOME" in out.stdout


def test_filmed_cliffs_are_plotted_first(tmp_path):
    base = [rec(k, "full", "S") for k in KEYS[:3]]
    mode = [rec(k, "cache3", "F") for k in KEYS[:3]]
    study = [write_run(tmp_path / "study" / "full", base), write_run(tmp_path / "study" / "cache3", mode)]
    video = "videos/" + _mp4(tmp_path / "again" / "cache3" / "videos" / "m.mp4", 3, 90)
    write_run(tmp_path / "again" / "cache3", [{**mode[2], "video": video}])
    text = build_report(study, tmp_path / "out", video_paths=[tmp_path / "again"], max_traces=1).read_text()
    cliffs = text.split("### `cache3`")[1]
    assert f"**`{KEYS[2]}`**" in cliffs and f"**`{KEYS[0]}`**" not in cliffs
    rows = [line for line in cliffs.splitlines() if line.startswith("| `libero_goal/0/")]
    assert rows[0].startswith(f"| `{KEYS[2]}` |") and "(re-run, identical)" in rows[0]

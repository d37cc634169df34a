"""The report's perturbation-family section on synthetic records: grouping by base suite and family, paired
comparisons against `full` within each suite, the family x mode heat map; absent for base suites only."""

from __future__ import annotations

import json

from sim_eval.analysis.render import build_report
from sim_eval.analysis.runs import build_groups, load_runs
from sim_eval.analysis.sections.families import BASE, family_of, heat_cells
from sim_eval.analysis.stats import pair_with_baseline
from sim_eval.analysis.synthetic import make_family_sweeps, make_sweep

SUITES = {
    "libero_object": (0.9, 1.0),
    "libero_object_swap": (0.2, 0.5),
    "libero_goal_swap": (0.2, 0.5),
    "libero_object_lan": (0.6, 0.9),
}


def _report(tmp_path):
    make_family_sweeps(tmp_path / "runs", SUITES, tasks=3, episodes=4, errors=False, missing=0)
    path = build_report([tmp_path / "runs"], tmp_path / "out")
    return path.read_text(), json.loads((tmp_path / "out" / "report.json").read_text())


def test_family_of_splits_suite_names():
    assert family_of("libero_object_swap") == ("libero_object", "swap")
    assert family_of("libero_goal") == ("libero_goal", BASE)
    assert family_of("libero_mine") == ("libero_mine", BASE)


def test_records_are_grouped_by_base_suite_and_family(tmp_path):
    text, report = _report(tmp_path)
    assert "## Perturbation families" in text
    rows = report["families"]
    keys = {(r["base_suite"], r["family"], r["mode"]) for r in rows}
    assert keys == {
        (base, family, mode)
        for base, family in [
            ("libero_object", BASE),
            ("libero_object", "swap"),
            ("libero_goal", "swap"),
            ("libero_object", "lan"),
        ]  # fmt: skip
        for mode in ("full", "cache3", "adaptive3")
    }
    assert {r["dimension"] for r in rows} == {"-", "position", "semantic"}
    # counts per row are exactly the records of that suite and mode
    runs = load_runs([tmp_path / "runs"])
    for group in build_groups(runs):
        for row in (r for r in rows if r["mode"] == group.mode):
            records = [x for x in group.records if x["suite"] == row["suite"]]
            assert row["finished"] == len(records) == 12
            assert row["successes"] == sum(bool(x["success"]) for x in records)


def test_paired_comparison_is_within_each_suite(tmp_path):
    _, report = _report(tmp_path)
    runs = load_runs([tmp_path / "runs"])
    groups = {g.mode: g for g in build_groups(runs)}
    for row in (r for r in report["families"] if r["mode"] == "cache3"):
        base = [x for x in groups["full"].records if x["suite"] == row["suite"]]
        mode = [x for x in groups["cache3"].records if x["suite"] == row["suite"]]
        pairing = pair_with_baseline(base, mode)
        assert row["paired"]["pairs"] == pairing.n_pairs == 12
        assert (row["paired"]["cliffs"], row["paired"]["rescues"]) == (len(pairing.cliffs), len(pairing.rescues))
    assert all(r["paired"] is None for r in report["families"] if r["mode"] == "full")


def test_heat_map_pools_a_family_over_base_suites(tmp_path):
    text, report = _report(tmp_path)
    assert (tmp_path / "out" / "report_plots" / "family_heatmap.png").read_bytes().startswith(b"\x89PNG")
    assert "![family x mode success](report_plots/family_heatmap.png)" in text
    families, cells = heat_cells(report["families"], ["full", "cache3"])
    assert families == [BASE, "lan", "swap"]
    swap = [r for r in report["families"] if r["family"] == "swap" and r["mode"] == "full"]
    assert cells[2][0] == (sum(r["successes"] for r in swap), 24)


def test_no_family_section_for_base_suites_only(tmp_path):
    make_sweep(tmp_path / "runs", tasks=2, episodes=2, errors=False, missing=0)
    text = build_report([tmp_path / "runs"], tmp_path / "out").read_text()
    assert "## Perturbation families" not in text
    assert "families" not in json.loads((tmp_path / "out" / "report.json").read_text())

"""LIBERO-PRO's registered benchmarks as suites: the shipped table matches the package, names split into base suite
and perturbation, perturbed suites inherit their base suite's step limit, presets expand to Hydra multiruns."""

from __future__ import annotations

import json

import pytest
from conftest import compose

from sim_eval.config import ConfigError, validate
from sim_eval.envs import benchmarks


def test_table_equals_the_live_registry():
    """benchmarks.json is what the installed package says (regenerate: python scripts/smoke_benchmarks.py
    --write)."""
    shipped = json.loads(benchmarks.TABLE.read_text())
    live = benchmarks.live_registry()
    assert {k: shipped[k] for k in ("package", "version", "benchmarks")} == live
    from libero.libero import benchmark

    assert set(shipped["benchmarks"]) == set(benchmark.get_benchmark_dict())
    assert len(shipped["benchmarks"]) == 83


def test_smoke_failures_name_registered_tasks():
    raw = json.loads(benchmarks.TABLE.read_text())
    for name, failures in raw.get("smoke_failures", {}).items():
        assert name in raw["benchmarks"]
        assert all(0 <= int(t) < raw["benchmarks"][name]["n_tasks"] for t in failures)


@pytest.mark.parametrize(
    ("name", "base", "perturbation", "dimension"),
    [
        ("libero_object", "libero_object", None, "none"),
        ("libero_10_swap", "libero_10", "swap", "position"),
        ("libero_100", None, None, "none"),  # not libero_10 + "0"
        ("libero_goal_with_diffpos_stick", "libero_goal", "with_diffpos_stick", "position"),
        ("libero_spatial_with_mug", "libero_spatial", "with_mug", "distractor"),
        ("libero_object_lan", "libero_object", "lan", "semantic"),
        ("libero_goal_relation_ood", "libero_goal", "relation_ood", "task"),
        ("libero_object_with_trigger_new", "libero_object", "with_trigger_new", "trigger"),
        ("libero_object_two_normal_episodes", "libero_object", "two_normal_episodes", "trigger"),
        ("libero_mine", None, None, "none"),
    ],
)
def test_names_split_into_base_suite_and_perturbation(name, base, perturbation, dimension):
    assert benchmarks.split_name(name) == (base, perturbation)
    assert benchmarks.dimension(perturbation) == dimension


def test_every_registered_perturbation_has_a_libero_pro_dimension():
    for bench in benchmarks.table().values():
        assert bench.dimension in (*benchmarks.DIMENSIONS, "none"), bench.name


@pytest.mark.parametrize(
    ("suite", "protocol", "steps", "source"),
    [
        ("libero_object_swap", "openpi", 280, "libero_object"),
        ("libero_spatial_lan", "openpi", 220, "libero_spatial"),
        ("libero_spatial_lan", "lerobot", 280, "libero_spatial"),  # follows the protocol's base-suite limit
        ("libero_goal_task", "openpi", 300, "libero_goal"),
        ("libero_10_object", "openpi", 520, "libero_10"),
        ("libero_10", "openpi", 520, "libero_10"),
    ],
)
def test_perturbed_suites_inherit_the_base_suites_step_limit(suite, protocol, steps, source):
    run = validate(compose(["policy=constant", f"suite={suite}", f"protocol={protocol}"]))
    assert run.max_steps == steps and run.step_limit_suite == source
    assert run.suite.n_tasks == benchmarks.get(suite).n_tasks


def test_records_say_whose_step_limit_they_ran_under():
    from sim_eval.runtime.runner import run_meta

    run = validate(compose(["policy=constant", "suite=libero_goal_swap", "eval.tasks=[0]"]))
    meta = run_meta(run)
    assert (meta["base_suite"], meta["perturbation"]) == ("libero_goal", "swap")
    assert meta["protocol"]["max_steps"] == 300 and meta["protocol"]["max_steps_from"] == "libero_goal"
    short = run_meta(validate(compose(["policy=constant", "suite=libero_goal_swap", "eval.max_steps=9"])))
    assert short["protocol"]["max_steps"] == 9 and short["protocol"]["max_steps_from"] == "eval.max_steps"


def test_a_suite_without_base_runs_only_with_an_explicit_step_limit():
    with pytest.raises(ConfigError, match="libero_study_table extends no base suite"):
        validate(compose(["policy=constant", "suite=libero_study_table"]))
    run = validate(compose(["policy=constant", "suite=libero_study_table", "eval.max_steps=50"]))
    assert run.max_steps == 50 and run.step_limit_suite is None


def test_partly_broken_suites_run_on_their_runnable_tasks():
    bench = benchmarks.get("libero_10_with_milk")
    assert bench.runnable == [0, 1, 2, 5, 6, 7, 8, 9]
    run = validate(compose(["policy=constant", "suite=libero_10_with_milk", "eval.tasks=[0,9]",
                            "eval.episodes_per_task=10"]))  # fmt: skip
    assert run.task_ids == [0, 9]
    with pytest.raises(ConfigError, match=r"task 3 broken .*runnable: eval.tasks=\[0,1,2,5,6,7,8,9\]"):
        validate(compose(["policy=constant", "suite=libero_10_with_milk", "eval.tasks=[3]",
                          "eval.episodes_per_task=1"]))  # fmt: skip


def test_unknown_names_get_close_matches_in_one_line():
    message = benchmarks.unknown_suite_message("libero_spatail_swap")
    assert "\n" not in message and "did you mean libero_spatial_swap" in message
    assert "python -m sim_eval --help" in benchmarks.unknown_suite_message("zzz")


def test_presets_hold_only_runnable_perturbed_suites():
    presets = benchmarks.presets()
    assert presets["pert_swap"] == ["libero_10_swap", "libero_goal_swap", "libero_object_swap", "libero_spatial_swap"]
    assert presets["base_libero_object"] == sorted(
        b.name for b in benchmarks.table().values()
        if b.base_suite == "libero_object" and b.perturbation and b.refusal() is None and b.dimension != "trigger"
    )  # fmt: skip
    for names in presets.values():
        for name in names:
            bench = benchmarks.get(name)
            assert bench.refusal() is None and bench.base_suite in benchmarks.PERTURBED_BASES


def test_a_preset_is_hydras_multirun_over_its_suites():
    from sim_eval.preflight import expand_suites, job_overrides

    overrides = expand_suites(["policy=constant", "suites=pert_swap", "policy.action=[0,0,0,0,0,0,1],[0,0,0,0,0,0,-1]"],
                              multirun=True)  # fmt: skip
    jobs = job_overrides(overrides, multirun=True)
    suites = [next(o for o in job if o.startswith("suite=")) for job in jobs]
    # the preset's suites are the outer loop, as Hydra's sweeper puts hydra.sweeper.params before the command line
    assert suites == [f"suite={s}" for s in benchmarks.presets()["pert_swap"] for _ in range(2)]
    cfg = compose(["policy=constant", "suites=pert_swap"])
    assert validate(cfg).suite.name == "libero_object"  # a preset alone changes nothing but the sweep


@pytest.mark.parametrize(
    ("suite", "task_id", "instruction"),
    [
        ("libero_object", 0, "pick up the alphabet soup and place it in the basket"),  # openpi: the task name
        ("libero_object_swap", 0, "pick up the alphabet soup and place it in the basket"),  # moved, same words
        ("libero_object_lan", 0, "grab alphabet soup and put it into basket"),  # reworded in the file
        ("libero_object_task", 0, "pick up the cream cheese and place it in the basket"),  # another base task
    ],
)
def test_instruction_is_the_base_task_name_unless_the_perturbation_changes_it(suite, task_id, instruction):
    task = benchmarks.quiet_suite(suite).get_task(task_id)
    assert benchmarks.task_instruction(suite, task) == instruction

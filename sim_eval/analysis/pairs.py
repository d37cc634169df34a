"""Every group's paired numbers, computed once for whoever shows them: the report (``sections.context``) and the
wandb logger read the same ``Pairing`` and ``ExcessCliffs`` objects, so a dashboard cannot disagree with the report.

Which group pairs with which is ``runs.baseline_of`` (a cache mode with the ``full`` group of its policy and seed, a
control arm with the baseline) and ``runs.controls_of``; both need every group of the sweep at once, which is why the
logger loads the sweep's records rather than pairing a job's records with whatever it finds first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim_eval.analysis.paired import ExcessCliffs, excess_cliffs
from sim_eval.analysis.runs import Group, baseline_of, build_groups, controls_of, load_runs
from sim_eval.analysis.stats import Pairing, pair_with_baseline


def labels(groups: Sequence[Group]) -> dict[int, str]:
    """Each group's name in tables and dashboards: the mode (``@seed<N>`` off the primary seed), prefixed with the
    policy when the groups hold more than one."""
    one_policy = len({g.policy for g in groups}) == 1
    return {id(g): (g.name if one_policy else g.label) for g in groups}


def pairings(groups: Sequence[Group]) -> dict[int, Pairing]:
    """Each group with a baseline among ``groups``, paired with it episode by episode (by ``id`` of the group)."""
    out = {}
    for group in groups:
        base = baseline_of(group, groups)
        if base is not None:
            out[id(group)] = pair_with_baseline(base.records, group.records)
    return out


def excess_by_group(groups: Sequence[Group], paired: dict[int, Pairing]) -> dict[int, list[tuple[Group, ExcessCliffs]]]:
    """Per paired cache mode: its cliffs against each control arm sharing its baseline, on the keys paired in both."""
    return {
        id(g): [(c, excess_cliffs(paired[id(g)], paired[id(c)])) for c in controls_of(g, groups) if id(c) in paired]
        for g in groups
        if id(g) in paired
    }


def paired_numbers(
    groups: Sequence[Group],
    paired: dict[int, Pairing] | None = None,
    excess: dict[int, list[tuple[Group, ExcessCliffs]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per group label, the flat numbers a dashboard logs and ``report.json`` holds (``paired``): the pairing with
    its baseline (pairs, cliffs, rescues, exact McNemar p, paired Δ success) and, per control arm, the excess cliffs
    (``excess/<control>/...``); a group without a baseline among ``groups`` has ``{}``. ``paired`` and ``excess``:
    what ``pairings`` and ``excess_by_group`` returned for ``groups``, when already computed."""
    paired = pairings(groups) if paired is None else paired
    excess = excess_by_group(groups, paired) if excess is None else excess
    names = labels(groups)
    out: dict[str, dict[str, Any]] = {}
    for group in groups:
        numbers: dict[str, Any] = {}
        pairing = paired.get(id(group))
        if pairing is not None:
            numbers = {
                "baseline": names[id(baseline_of(group, groups))],
                "pairs": pairing.n_pairs,
                "cliff_episodes": len(pairing.cliffs),
                "rescue_episodes": len(pairing.rescues),
                "mcnemar_p": pairing.mcnemar_p,
                "paired_success_delta": pairing.delta,
            }
        for control, found in excess.get(id(group), []):
            prefix = f"excess/{names[id(control)]}/"
            numbers.update({
                prefix + "pairs": found.pairs,
                prefix + "excess_cliffs": found.excess,
                prefix + "mode_cliffs": found.mode_cliffs,
                prefix + "control_cliffs": found.control_cliffs,
                prefix + "mcnemar_p": found.p_value,
            })  # fmt: skip
        out[names[id(group)]] = numbers
    return out


def sweep_groups(path: str | Path) -> list[Group]:
    """The groups of every run at or below ``path`` (a sweep dir, or one run's dir); raises like ``report`` does
    on records that must not be pooled (``runs.build_groups``) or a path without records."""
    return build_groups(load_runs([path]))

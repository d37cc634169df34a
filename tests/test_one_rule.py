"""Rules that live in one place: the baseline a group pairs with (the wandb logger and the report use one function),
the mode and arm grammar (one formatter, one parser), the refresh threshold's default and the protocol's defaults."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from conftest import compose
from omegaconf import OmegaConf

from sim_eval.analysis.runs import build_groups, load_runs
from sim_eval.analysis.sections.context import ReportContext
from sim_eval.analysis.stats import mode_sort_key, parse_mode
from sim_eval.analysis.summary import write_summary
from sim_eval.analysis.synthetic import make_sweep
from sim_eval.config import ProtocolConfig
from sim_eval.policies.cache_mode import DEFAULT_THRESHOLD, CacheMode, arm_name, parse_arm
from sim_eval.records.episodes import EPISODES_FILE, arm_mode, read_records
from sim_eval.runtime.loggers import WandbLogger


def _reseed(src, dst, seed: int) -> None:
    """A copy of run ``src`` as if it had run at ``eval.seed=seed``."""
    shutil.copytree(src, dst)
    records = []
    for record in read_records(dst):
        record["seed"] = seed
        record["identity"] = {**(record.get("identity") or {}), "eval.seed": seed}
        records.append(record)
    (dst / EPISODES_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    write_summary(dst, records)


def test_logger_and_report_choose_the_same_seed_aware_baseline(tmp_path):
    """full and cache3 at seed 0 and at seed 1: each cache mode pairs with the full run of its own seed (the same
    noise, only the cache differs), in the report and in the wandb logger alike -- never with whichever full run
    comes first (the logger's old rule)."""
    sweep = make_sweep(tmp_path / "sweep", modes=("full", "cache3"), tasks=2, episodes=4, control_seed=1, missing=0)
    _reseed(sweep / "1", sweep / "3", seed=1)  # jobs: 0 full@0, 1 cache3@0, 2 full@1, 3 cache3@1
    report = ReportContext([sweep], tmp_path / "report", None, None, max_traces=0)
    groups = build_groups(load_runs([sweep]))
    assert len(groups) == 4
    for job in ("1", "3"):
        records = read_records(sweep / job)
        logger = WandbLogger("offline", "p")
        logger._run, logger._group, logger._run_dir = object(), str(sweep), str(sweep / job)
        _, logged_base = logger._paired(records, {})
        group = next(g for g in report.groups if g.seed == records[0]["seed"] and g.mode == "cache3")
        base = report.baseline(group)
        assert base is not None and base.is_full and base.seed == group.seed
        assert {(r["key"], r["seed"]) for r in logged_base} == {(r["key"], r["seed"]) for r in base.records}


ARMS = [
    ("full", None, None, "full"),
    ("cache3", 4.2, None, "cache3"),  # only an adaptive mode carries a rule
    ("replay2", None, None, "replay2"),
    ("adaptive3", None, None, "adaptive3"),
    ("adaptive3", DEFAULT_THRESHOLD, ["agentview", "wrist"], "adaptive3"),
    ("adaptive3", 4.2, None, "adaptive3@mae4.2"),
    ("adaptive5", 2.0, ["wrist", "agentview"], "adaptive5@mae2"),
    ("adaptive3", 27.077, None, "adaptive3@mae27.077"),
    ("adaptive3", DEFAULT_THRESHOLD, ["agentview"], "adaptive3@mae6.5:agentview"),
    ("adaptive4", 1 / 3, None, f"adaptive4@mae{1 / 3!r}"),  # %g would lose digits: the name keeps them all
]


@pytest.mark.parametrize(("mode", "threshold", "views", "name"), ARMS)
def test_mode_and_arm_names_round_trip_through_one_formatter_and_parser(mode, threshold, views, name):
    assert arm_name(mode, threshold, views) == name
    arm = parse_arm(name)
    parsed = CacheMode.parse(mode)
    assert (arm.mode, arm.kind, arm.period) == (mode, parsed.kind, parsed.period)
    assert CacheMode.parse(arm.mode).name == mode
    if name != mode:
        assert arm.threshold == threshold
        assert arm.views == (None if name.count(":") == 0 else tuple(views))
        assert arm_name(arm.mode, arm.threshold, arm.views) == name
    assert parse_mode(name) == (parsed.kind, parsed.period)
    record = {"cache_mode": mode, "identity": {"policy.refresh.threshold": threshold, "policy.refresh.views": views}}
    assert arm_mode(record) == name  # records name their arm by the same formatter


def test_arm_parser_keeps_modes_outside_the_grammar_and_refuses_a_bad_rule():
    assert (parse_arm("-").kind, parse_arm("-").period) == ("-", None)
    assert parse_mode("-") == ("-", None)
    for bad in ("adaptive3@x4.2", "adaptive3@maeabc"):
        with pytest.raises(ValueError, match="arm"):
            parse_arm(bad)
    ordered = ["adaptive3@mae9", "cache2", "adaptive3", "full", "replay2", "adaptive3@mae2"]
    assert sorted(ordered, key=mode_sort_key) == ["full", "replay2", "cache2", "adaptive3@mae2", "adaptive3",
                                                   "adaptive3@mae9"]  # fmt: skip


def test_threshold_and_protocol_defaults_have_one_source():
    cfg = compose([])
    assert cfg.policy.refresh.threshold == DEFAULT_THRESHOLD  # sim_eval/conf/policy/pi05.yaml does not repeat it
    openpi = OmegaConf.to_container(compose(["protocol=openpi"]).protocol)
    assert openpi == dataclasses.asdict(ProtocolConfig())  # sim_eval/conf/protocol/openpi.yaml only selects the schema
    lerobot = OmegaConf.to_container(compose(["protocol=lerobot"]).protocol)
    assert lerobot == {**openpi, "name": "lerobot", "max_steps": {**openpi["max_steps"], "libero_spatial": 280}}

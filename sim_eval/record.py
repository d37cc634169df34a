"""``python -m sim_eval.record policy=scripted suite=libero_object out=DIR``: record demonstrations of a policy
(the scripted expert) from held-out start layouts (``sim_eval.demos.recorder`` says how).

Recorder options (everything else is the main app's config: ``suite=``, ``policy=``, ``eval.tasks=``, ``protocol.*``):
    out=DIR                          where demos and ``manifest.json`` go (required)
    record.placements=50             start layouts tried per task
    record.first_seed=100000         placement seed of a task's first episode
    record.held_out_tolerance=0.001  metres: a start layout this close to an evaluation init state is rejected
    record.dart_prob=0.3             probability per step of executing a perturbed action (0 = the expert's own)
    record.dart_sigma=0.3            std of the perturbation of the 6 arm dims (actions are in [-1, 1])
    record.frame_stride=2            keep the frames of every n-th step (only those are rendered: renders are what
                                     a CPU spends most of a step on); every step keeps its state, action and label
    record.image_size=128            the model's input size: stored images are what the engine computes at this size
    record.jpeg_quality=90           JPEG quality of the stored images
    record.num_workers=2             worker processes (0 = this process)

Rerunning into the same ``out`` skips episodes already attempted (their outcomes are in ``outcomes.jsonl``).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

_OPTION_KEYS = {"out": "out", "record.out": "out"} | {
    f"record.{name}": name
    for name in (
        "placements", "first_seed", "held_out_tolerance", "dart_prob", "dart_sigma", "frame_stride", "image_size",
        "jpeg_quality", "num_workers",
    )
}  # fmt: skip


def split_record_options(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Recorder options vs. overrides for the main app's config."""
    import yaml

    options, overrides = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in _OPTION_KEYS:
            options[_OPTION_KEYS[key]] = yaml.safe_load(value) if key != "out" and key != "record.out" else value
        else:
            overrides.append(arg)
    return options, overrides


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    from sim_eval.config import CONF_DIR, ConfigError, register_configs
    from sim_eval.demos.recorder import RecordOptions, job_from_config, record_demos
    from sim_eval.preflight import check_group_choices

    argv = sys.argv[1:] if argv is None else argv
    try:
        raw, overrides = split_record_options(argv)
        if "out" not in raw:
            raise ConfigError("out=DIR is required: the directory the demos and manifest.json are written to")
        options = RecordOptions(**raw)
        register_configs()
        check_group_choices(overrides)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        job, episodes = job_from_config(cfg, options)
    except ConfigError as err:
        print(f"sim_eval.record: error: {err}", file=sys.stderr)
        sys.exit(2)
    from tqdm import tqdm

    bar = tqdm(total=len(episodes), desc=f"record {job.suite} {job.policy_name}", unit="ep")
    counts = {"ok": 0, "fail": 0, "err": 0, "rejected": 0}

    def progress(outcome: dict[str, Any]) -> None:
        kind = "rejected" if outcome.get("rejected") else "err" if outcome.get("error") else None
        counts[kind or ("ok" if outcome["success"] else "fail")] += 1
        bar.update(1)
        bar.set_postfix(recorded=counts["ok"], failed=counts["fail"], rejected=counts["rejected"], errors=counts["err"])

    from sim_eval.runtime.workers import WorkerStartError

    try:
        manifest = record_demos(job, episodes, num_workers=options.num_workers, progress=progress)
    except WorkerStartError as err:  # no episode could run: one line, as for any bad input
        bar.close()
        print(f"sim_eval.record: error: policy: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        bar.close()
    print(
        f"recorded {manifest['successes']} demos of {manifest['episodes_run']} episodes "
        f"({manifest['failures']} failed, {len(manifest['rejected'])} rejected as not held out, "
        f"{len(manifest['errors'])} errors) in {job.out}"
    )
    return dataclasses.asdict(job) | {"manifest": manifest}


if __name__ == "__main__":
    main()

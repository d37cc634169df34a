"""``python -m sim_eval.export DEMO_DIR [DEMO_DIR ...] --out DIR [--crf N]``: pack demonstrations into a training set.

The set (``sim_eval.training.dataset``) is two H.264 videos and one array file: small enough to carry to a GPU
machine with no network (about 1 KB per frame and view at the default quality). The directories may come from
several suites (each manifest names its own; one set, one model for all of them); they must share the simulator,
image size and stride. Bad input is one line and exit code 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _fail(message: str) -> None:
    print(f"sim_eval.export: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m sim_eval.export", description=__doc__.splitlines()[0])
    ap.add_argument("demos", type=Path, nargs="+", help="directories written by python -m sim_eval.record")
    ap.add_argument("--out", type=Path, required=True, help="the training set directory to write")
    ap.add_argument("--crf", type=int, default=20, help="H.264 constant rate factor (0-51, lower = larger, better)")
    ap.add_argument("--per-task", type=int, default=None, help="take only the first N demos of each task")
    ap.add_argument(
        "--codec", default="h264", choices=("h264", "raw"),
        help="h264: small, to carry; raw: uncompressed .npy frames, to train where it was recorded (no encoder)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    for demos in args.demos:
        if not (demos / "manifest.json").is_file():
            _fail(f"{demos}: no manifest.json (record demonstrations with python -m sim_eval.record first)")
    if not 0 <= args.crf <= 51:
        _fail(f"--crf {args.crf}: allowed are 0..51")
    if args.per_task is not None and args.per_task < 1:
        _fail(f"--per-task {args.per_task}: must be >= 1")
    from sim_eval.demos.files import load_manifest
    from sim_eval.training.dataset import check_sources, export_dataset

    try:  # mixed simulators, frame sizes or strides: refused before a frame is decoded or a file written
        check_sources(args.demos, [load_manifest(d) for d in args.demos])
        meta = export_dataset(args.demos, args.out, crf=args.crf, per_task=args.per_task, codec=args.codec)
    except ValueError as err:
        _fail(str(err).splitlines()[0])
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"exported {meta['episodes']} demos, {meta['steps']} steps, {meta['frames']} frames per view "
          f"to {args.out} ({size / 2**20:.1f} MiB)")  # fmt: skip
    if len(meta["suites"]) > 1:
        print("  " + ", ".join(f"{s}: {v['episodes']} demos of {len(v['instructions'])} tasks"
                               for s, v in meta["suites"].items()))  # fmt: skip
    return meta


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

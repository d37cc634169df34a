"""``python -m sim_eval.export DEMO_DIR [DEMO_DIR ...] --out DIR [--crf N]``: pack demonstrations into a training set.

The set (``sim_eval.training.dataset``) is two H.264 videos and one array file: small enough to carry to a GPU
machine with no network (about 1 KB per frame and view at the default quality)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
            ap.error(f"{demos}: no manifest.json (record demonstrations with python -m sim_eval.record first)")
    if not 0 <= args.crf <= 51:
        ap.error(f"--crf {args.crf}: allowed are 0..51")
    from sim_eval.training.dataset import export_dataset

    if args.per_task is not None and args.per_task < 1:
        ap.error(f"--per-task {args.per_task}: must be >= 1")
    meta = export_dataset(args.demos, args.out, crf=args.crf, per_task=args.per_task, codec=args.codec)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"exported {meta['episodes']} demos, {meta['steps']} steps, {meta['frames']} frames per view "
          f"to {args.out} ({size / 2**20:.1f} MiB)")  # fmt: skip
    return meta


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

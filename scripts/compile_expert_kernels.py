"""Compile, without a GPU, every Triton kernel the denoise step launches, for a GPU architecture (default sm_90: H100,
H200), at batch 1 and over batches of slots: the engine's own ``TritonExpert.velocity`` runs on meta tensors of the
model's real sizes, and each launch is compiled (Triton's CUDA backend, ptxas included) instead of run.

What the CPU tests cannot see: they run the kernels under Triton's interpreter, which accepts code the compiler may
reject (types that change inside a branch, unsupported operations) and knows no shared-memory limit. This compiles
exactly the specializations a GPU run would (the constexprs of every launch: tiles, preloading, slot rows) and prints,
per (batch, chunk), how many distinct kernels that took and the most shared memory one of them asks for against the
architecture's limit. Exit status 1 if any kernel fails to compile or does not fit.

    TRITON_INTERPRET=0 python scripts/compile_expert_kernels.py --model-sizes pi05 --batches 1 2 4 8 16 --chunks 10 50

Specializations a launch makes from its pointers' alignment are assumed (16-byte aligned, as torch's allocations
are); register use and spills only show on the device (scripts/bench_expert_kernels.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":  # the interpreter has no compiler to check
    raise SystemExit("compile_expert_kernels: run with TRITON_INTERPRET=0 (or unset)")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends import DriverBase  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_eval.policies.pi05 import triton_expert as tx  # noqa: E402
from sim_eval.policies.pi05.config import apply_size_override, full_size, load_size_override  # noqa: E402
from sim_eval.policies.pi05.model import Pi05Model  # noqa: E402

KERNELS = ("_gemm_kernel", "_ada_kernel", "_attn_kernel", "_attn_combine_kernel")
SHARED_LIMIT = {90: 232448, 80: 166912, 89: 101376, 100: 232448}  # bytes of shared memory one block may use


class CompileOnlyDriver(DriverBase):
    """What Triton's launcher asks the driver, answered for ``arch`` with no device: launches compile, never run."""

    def __init__(self, arch: int):
        self.target = GPUTarget("cuda", arch, 32)

    @classmethod
    def is_active(cls):
        return True

    def map_python_to_cpp_type(self, ty: str) -> str:
        raise NotImplementedError("compile only")

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        return torch.device("meta")

    def get_benchmarker(self):
        raise NotImplementedError("compile only")

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


def compile_only(kernel, compiled: dict) -> None:
    """Make ``kernel[grid](...)`` compile its specialization (Triton's warm-up path) and record it in ``compiled``."""
    run = kernel.run

    def warm(*args, grid, warmup, **kwargs):
        del warmup
        launched = run(*args, grid=grid, warmup=True, **kwargs)
        compiled[(kernel.__name__, launched.hash)] = launched
        return launched

    kernel.run = warm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-sizes", default="pi05", help="a named size (pi05) or a config.json")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--chunks", type=int, nargs="+", default=[10, 50])
    p.add_argument("--prefix", type=int, default=736, help="prefix positions (a batch's padded length)")
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100, H200)")
    p.add_argument("--sm-count", type=int, default=132, help="the GPU's SMs (key splits of the attention)")
    args = p.parse_args()
    triton.runtime.driver.set_active(CompileOnlyDriver(args.arch))
    sizes = apply_size_override(full_size(), load_size_override(args.model_sizes))
    with torch.device("meta"):
        model = Pi05Model(sizes).to(torch.bfloat16)
    model.prepare_inference()
    e = sizes.expert
    limit = SHARED_LIMIT.get(args.arch)
    failed = False
    for chunk in args.chunks:
        for b in args.batches:
            compiled: dict = {}
            for name in KERNELS:
                compile_only(getattr(tx, name), compiled)
            expert = tx.TritonExpert(model, sm_count=args.sm_count, pdl=args.arch >= 90)
            kv = torch.empty(e.depth, b, 1, args.prefix, e.head_dim, dtype=torch.bfloat16, device="meta")
            x_t = torch.empty(b, chunk, sizes.max_action_dim, device="meta")
            mods = model.time_modulations(torch.ones(1, device="meta"))
            try:
                expert.velocity(kv, kv, None, torch.empty(b, dtype=torch.int64, device="meta"), x_t, mods)
            except Exception as exc:  # a kernel the compiler rejects: say which
                print(f"B={b:2d} chunk {chunk}: FAILED {type(exc).__name__}: {str(exc)[:1500]}", flush=True)
                failed = True
                continue
            finally:
                for name in KERNELS:
                    delattr(getattr(tx, name), "run")  # the class's own run again
            shared: dict[str, int] = {}
            for (name, _), k in compiled.items():
                shared[name] = max(shared.get(name, 0), k.metadata.shared)
            worst = max(compiled.items(), key=lambda item: item[1].metadata.shared)
            fits = limit is None or worst[1].metadata.shared <= limit
            failed |= not fits
            print(f"B={b:2d} chunk {chunk}: {len(compiled)} kernels compiled for sm_{args.arch}; most shared memory "
                  f"{worst[1].metadata.shared} bytes ({worst[0][0]}; limit {limit}){'' if fits else ' DOES NOT FIT'}; "
                  f"most per kernel {shared}", flush=True)  # fmt: skip
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""Which GPU each evaluation worker uses, for the policy (CUDA) and for rendering (EGL).

On a GPU node every worker runs its own engine and its own simulator. Worker slot k gets ``gpus[k % len(gpus)]``
for both: its policy runs on ``cuda:<gpu>`` and MuJoCo renders through the EGL device that *is* that GPU. The EGL
device list is not in CUDA's order (it also holds software devices, and the driver orders them its own way), so the
EGL index is looked up by asking each EGL device for its CUDA ordinal (``EGL_NV_device_cuda``), not assumed equal.
MuJoCo reads ``MUJOCO_EGL_DEVICE_ID`` when it first creates a context, so the worker sets it before building its
simulator. Every record names what its worker was given (``device`` below), so mixed or unexpected placement shows.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from sim_eval.envs.interrupts import interrupts_deferred

EGL_CUDA_DEVICE_NV = 0x323A  # EGL_NV_device_cuda: the CUDA device ordinal of an EGL device


@dataclass(frozen=True)
class WorkerDevice:
    """What one worker slot is given: the policy's torch device and the GPU it renders on (None: CPU / Mesa)."""

    policy: str  # "cpu", "cuda:N", or the policy's own setting when no GPU is assigned
    gpu: int | None  # CUDA ordinal this worker renders on, None when rendering is not pinned


def plan_worker_devices(num_workers: int, gpus: list[int], policy_device: str) -> list[WorkerDevice]:
    """One ``WorkerDevice`` per worker slot: slots go round-robin over ``gpus``. ``policy_device`` is the policy's
    setting (auto / cpu / cuda / cuda:N): ``auto`` and ``cuda`` follow the slot's GPU; ``cpu`` keeps the policy on the
    CPU while rendering still uses the slot's GPU; an explicit ``cuda:N`` is kept for every slot. No GPUs: nothing is
    pinned and the policy setting is passed through."""
    slots = max(int(num_workers), 1)
    if not gpus:
        return [WorkerDevice(policy=policy_device, gpu=None) for _ in range(slots)]
    plan = []
    for slot in range(slots):
        gpu = int(gpus[slot % len(gpus)])
        if policy_device in ("auto", "cuda"):
            policy = f"cuda:{gpu}"
        else:
            policy = policy_device
        plan.append(WorkerDevice(policy=policy, gpu=gpu))
    return plan


def visible_gpus(requested: list[int] | None) -> list[int]:
    """The CUDA ordinals workers are spread over: ``requested`` (checked against what is visible), else every visible
    device; none when torch sees no CUDA device."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested is None:
        return list(range(count))
    bad = [g for g in requested if not 0 <= g < count]
    if bad:
        from sim_eval.config import ConfigError

        raise ConfigError(f"eval.gpus={list(requested)}: CUDA devices {bad} are not visible ({count} visible)")
    return list(requested)


def cuda_device_count_hint() -> int | None:
    """How many CUDA devices this process would see, known without importing torch: ``CUDA_VISIBLE_DEVICES`` when
    set (empty = none), else the NVIDIA device nodes (none on a machine without the driver); None when unsure."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        parts = [p for p in visible.split(",") if p.strip()]
        return len(parts) if all(not p.strip().startswith("-") for p in parts) else None
    if not os.path.isdir("/dev"):
        return None
    return sum(1 for name in os.listdir("/dev") if name.startswith("nvidia") and name[6:].isdigit())


def egl_device_for_cuda(cuda_index: int) -> int | None:
    """Index into EGL's device list (what ``MUJOCO_EGL_DEVICE_ID`` means) of the EGL device that is CUDA device
    ``cuda_index``; None when no EGL device says so (no NVIDIA EGL, or no ``EGL_NV_device_cuda``)."""
    import ctypes

    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    from mujoco.egl import egl_ext as EGL  # MuJoCo's own device enumeration: the list MUJOCO_EGL_DEVICE_ID indexes

    devices = EGL.eglQueryDevicesEXT()
    address = EGL.eglGetProcAddress("eglQueryDeviceAttribEXT")
    if not address:
        return None
    query = ctypes.CFUNCTYPE(ctypes.c_uint, EGL.EGLDeviceEXT, ctypes.c_int, ctypes.POINTER(ctypes.c_ssize_t))(address)
    for index, device in enumerate(devices):
        value = ctypes.c_ssize_t(-1)
        if query(device, EGL_CUDA_DEVICE_NV, ctypes.byref(value)) == 1 and value.value == cuda_index:
            return index
    return None


def pin_worker(device: WorkerDevice) -> dict[str, Any]:
    """Apply ``device`` in this (fresh) worker process before any simulator exists; return what records carry."""
    info: dict[str, Any] = {**asdict(device), "egl_device": None, "gpu_name": None}
    if device.gpu is None:
        return info
    import torch

    info["gpu_name"] = torch.cuda.get_device_name(device.gpu)
    if os.environ.get("MUJOCO_GL", "egl") == "egl":
        egl = egl_device_for_cuda(device.gpu)
        if egl is None:
            raise RuntimeError(
                f"no EGL device reports CUDA ordinal {device.gpu} (EGL_NV_device_cuda): cannot render on that GPU; "
                "set eval.gpus=[] to leave rendering unpinned"
            )
        os.environ["MUJOCO_EGL_DEVICE_ID"] = str(egl)
        info["egl_device"] = egl
    return info


def cuda_memory_mib(device: Any) -> dict[str, float] | None:
    """What torch holds on the policy's CUDA device, in MiB: ``allocated`` now (weights, caches, graph outputs),
    ``peak`` allocated since the process started, ``reserved`` by its caching allocator (graph pools included).
    A process's footprint in ``nvidia-smi`` is ``reserved`` plus what torch does not see (the CUDA context, cuBLAS
    and Triton workspaces, loaded kernels). ``None`` off CUDA."""
    if getattr(device, "type", None) != "cuda":
        return None
    import torch

    mib = 1 / 2**20
    return {
        "allocated": round(torch.cuda.memory_allocated(device) * mib, 1),
        "peak": round(torch.cuda.max_memory_allocated(device) * mib, 1),
        "reserved": round(torch.cuda.memory_reserved(device) * mib, 1),
    }


def cpu_info() -> dict[str, str | None]:
    """The CPU this process computes on: its model name and the SIMD level torch dispatches its CPU kernels to
    (``DEFAULT``, ``AVX2``, ``AVX512``...). Float results, and so closed-loop episodes, can differ between CPUs of
    other levels: an episode re-run on the same machine repeats exactly, on another it may not (docs/benchmarks.md)."""
    model = None
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), None)
    except OSError:
        pass
    try:
        with interrupts_deferred():  # torch's import aborts the process if a Ctrl-C lands in it
            import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        capability = None
    return {"model": model, "torch_capability": capability}

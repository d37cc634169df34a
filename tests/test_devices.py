"""Per-worker device assignment on a GPU node (sim_eval.runtime.devices), checked without a GPU."""

import pytest

from sim_eval.config import ConfigError
from sim_eval.runtime.devices import WorkerDevice, pin_worker, plan_worker_devices, visible_gpus


def test_workers_go_round_robin_over_the_gpus():
    plan = plan_worker_devices(5, [0, 1], "auto")
    assert [d.gpu for d in plan] == [0, 1, 0, 1, 0]
    assert [d.policy for d in plan] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]


def test_a_subset_of_gpus_keeps_their_ordinals():
    plan = plan_worker_devices(4, [2, 5, 7], "cuda")
    assert [(d.policy, d.gpu) for d in plan] == [("cuda:2", 2), ("cuda:5", 5), ("cuda:7", 7), ("cuda:2", 2)]


def test_a_cpu_policy_stays_on_the_cpu_but_renders_on_its_gpu():
    plan = plan_worker_devices(3, [0, 1], "cpu")
    assert [(d.policy, d.gpu) for d in plan] == [("cpu", 0), ("cpu", 1), ("cpu", 0)]


def test_an_explicit_cuda_device_is_kept_for_every_worker():
    plan = plan_worker_devices(2, [0, 1], "cuda:1")
    assert [(d.policy, d.gpu) for d in plan] == [("cuda:1", 0), ("cuda:1", 1)]


def test_no_gpus_pins_nothing():
    assert plan_worker_devices(3, [], "auto") == [WorkerDevice("auto", None)] * 3
    assert plan_worker_devices(0, [], "cpu") == [WorkerDevice("cpu", None)]  # in-process: one slot


def test_unpinned_worker_records_no_gpu():
    assert pin_worker(WorkerDevice("cpu", None)) == {"policy": "cpu", "gpu": None, "egl_device": None, "gpu_name": None}


def test_gpus_that_are_not_visible_are_refused_in_one_line():
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=r"eval.gpus=\[.*\]: CUDA devices \[\d+\] are not visible"):
        visible_gpus([visible])
    assert visible_gpus(None) == list(range(visible))
    assert visible_gpus([]) == []


def test_cuda_memory_is_only_recorded_for_a_cuda_policy():
    import torch

    from sim_eval.runtime.devices import cuda_memory_mib

    assert cuda_memory_mib(torch.device("cpu")) is None
    assert cuda_memory_mib(None) is None
    assert cuda_memory_mib("cuda") is None  # a string is not a device: nothing is guessed


def test_records_name_the_cpu():
    from sim_eval.runtime.devices import cpu_info

    info = cpu_info()
    assert set(info) == {"model", "torch_capability"}
    assert info["torch_capability"] in {"DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256", "SVE128"}

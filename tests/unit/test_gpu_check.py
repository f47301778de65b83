"""bench/gpu_check.py: its CPU run measures every section with the real model and libraries; without
a GPU it stops at once with exit code 2 and says why; the NVML section reads devices through the
project's adapter (faked at the pynvml boundary: this machine has no NVIDIA driver)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = sys.modules.setdefault("gpu_check", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(gpu_check)


class FakeNvml:
    """pynvml's calls that the check makes; devices are (name, uuid, util %, used, total)."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices=None, uuid_points_to=None):
        self.devices = devices
        self.uuid_points_to = uuid_points_to or {}  # a broken lookup: uuid -> another index

    def nvmlInit(self):
        if self.devices is None:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid):
        found = next((i for i, d in enumerate(self.devices) if d[1] == uuid), None)
        if found is None:
            raise self.NVMLError("Not Found")  # pynvml's NVMLError_NotFound
        return self.uuid_points_to.get(uuid, found)

    def nvmlDeviceGetIndex(self, h):
        return h

    def nvmlDeviceGetName(self, h):
        return self.devices[h][0]

    def nvmlDeviceGetUUID(self, h):
        return self.devices[h][1]

    def nvmlDeviceGetUtilizationRates(self, h):
        return type("U", (), {"gpu": self.devices[h][2]})

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("M", (), {"used": self.devices[h][3], "total": self.devices[h][4]})


DEVICES = [("NVIDIA H200", "GPU-aaaa", 40, 2 * 2**30, 8 * 2**30), ("NVIDIA H200", "GPU-bbbb", 0, 0, 8 * 2**30)]


def test_nvml_section_reports_each_device_and_finds_it_again_by_uuid(capsys):
    run = gpu_check.CheckRun()
    gpu_check.nvml_section(run, FakeNvml(DEVICES), required=True)
    assert run.figures["nvml.devices"] == 2
    assert run.figures["nvml.gpu0.name"] == "NVIDIA H200" and run.units["nvml.gpu1.name"][1] == "GPU-bbbb"
    assert run.figures["nvml.gpu0.utilization"] == 40.0 and run.figures["nvml.gpu1.utilization"] == 0.0
    assert run.figures["nvml.gpu0.memory_used"] == 2.0 and "of 8.0 GiB (25.0%)" in run.units["nvml.gpu0.memory_used"][1]
    assert run.failed == [] and set(run.checks) == {"nvml.available", "nvml.gpu0.by_uuid", "nvml.gpu1.by_uuid",
                                                    "nvml.gpu0.not_found_is_absent", "nvml.gpu1.not_found_is_absent"}
    assert "nvml.gpu0.name" in capsys.readouterr().out  # printed as measured

    crossed = gpu_check.CheckRun()
    gpu_check.nvml_section(crossed, FakeNvml(DEVICES, uuid_points_to={"GPU-bbbb": 0}), required=True)
    assert crossed.failed == ["nvml.gpu1.by_uuid"]
    assert "is index 0, UUID GPU-aaaa" in crossed.checks["nvml.gpu1.by_uuid"][1]

    absent = gpu_check.CheckRun()
    gpu_check.nvml_section(absent, FakeNvml(None), required=True)
    assert absent.figures["nvml.devices"] == 0 and "NVML Shared Library Not Found" in absent.units["nvml.devices"][1]
    assert absent.failed == ["nvml.available"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_exits_2_saying_why(capsys):
    run = gpu_check.main([])
    assert run.exit_code == 2 and run.figures == {}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpu_check: no NVIDIA GPU found: NVML: ")
    assert "torch.cuda.is_available() is False" in err[0] and "--device cpu" in err[0]


def test_cpu_run_measures_every_section():
    run = gpu_check.main(["--device", "cpu", "--quick"])
    f = run.figures
    assert run.exit_code == 0 and run.failed == [], run.checks
    assert {"embed.vectors_agree", "train.device", "optimize.served_form"} <= set(run.checks)
    assert isinstance(f["nvml.devices"], int)
    assert f["embed.cpu.docs_per_s"] > 0 and f["embed.cpu_reference.docs_per_s"] > 0
    assert f["embed.min_cosine"] >= 0.999
    assert f["train.cpu.seconds"] > 0 and f["train.cpu.samples_per_s"] > 0 and f["train.peak_memory"] == "n/a"
    assert 0.0 <= f["train.accuracy"] <= 1.0 and f["train.cpu_reference.samples_per_s"] > 0
    assert f["optimize.size_ratio"] > 3  # int8 + 30% pruned, stored sparsely
    assert -1.0 <= f["optimize.cpu.accuracy_drop"] <= 1.0
    for batch in (1, 32):
        assert f[f"optimize.cpu.latency_batch{batch}.original"] > 0
        assert f[f"optimize.cpu.latency_batch{batch}.optimized"] > 0
    assert f["optimize.cpu.served_max_abs_diff"] <= gpu_check.SERVED_TOLERANCE

"""GPU utilisation and memory: from Triton's own GPU metrics when it has them, else from NVML
(nvidia-ml-py) on a machine that has GPUs (a node agent beside Triton, or an operator pinned to
the GPU node: opt-in with AIOPS_MONITOR_NVML=1, since NVML sees the local machine's GPUs only).
No GPU to read is *unknown* (None), never 0%: a zero would pass every threshold and look like an
idle, healthy device on a dashboard."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from aiops.monitoring.scrape import GpuReading

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuUsage:
    utilization_percent: float | None
    memory_percent: float | None
    source: str  # "triton", "nvml" or "unknown"


class GpuReader(Protocol):
    def read(self, indices: list[int] | None = None) -> GpuReading | None: ...


class NvmlReader:
    """NVML behind a small adapter. Initialised once; a machine without the library or without
    GPUs answers None for good (nvmlInit raises NVMLError_LibraryNotFound there) instead of
    retrying the load on every collection."""

    def __init__(self, nvml=None):
        self._nvml = nvml
        self._ok: bool | None = None

    def _init(self) -> bool:
        if self._ok is None:
            try:
                if self._nvml is None:
                    import pynvml  # nvidia-ml-py

                    self._nvml = pynvml
                self._nvml.nvmlInit()
                self._ok = self._nvml.nvmlDeviceGetCount() > 0
            except Exception as e:  # NVMLError_LibraryNotFound, driver not loaded, no device...
                log.info("NVML unavailable (%s): GPU metrics not in Triton's page stay unknown", e)
                self._ok = False
        return self._ok

    def read(self, indices: list[int] | None = None) -> GpuReading | None:
        if not self._init():
            return None
        nvml = self._nvml
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i)
                       for i in (indices if indices is not None else range(nvml.nvmlDeviceGetCount()))]
            utils = [nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0 for h in handles]
            mems = [nvml.nvmlDeviceGetMemoryInfo(h) for h in handles]
        except Exception as e:
            log.warning("reading NVML failed: %s", e)
            return None
        if not handles:
            return None
        return GpuReading(sum(utils) / len(utils), float(sum(m.used for m in mems)),
                          float(sum(m.total for m in mems)))


def gpu_usage(triton: list[GpuReading], nvml: GpuReader | None = None) -> GpuUsage:
    """Mean utilisation and total memory share over the pods' GPUs; Triton first, NVML second."""
    utils = [r.utilization for r in triton if r.utilization is not None]
    used = [r.memory_used_bytes for r in triton if r.memory_used_bytes is not None and r.memory_total_bytes]
    total = [r.memory_total_bytes for r in triton if r.memory_used_bytes is not None and r.memory_total_bytes]
    if utils or used:
        return GpuUsage(100.0 * sum(utils) / len(utils) if utils else None,
                        100.0 * sum(used) / sum(total) if used else None, "triton")
    reading = nvml.read() if nvml is not None else None
    if reading is not None:
        return GpuUsage(None if reading.utilization is None else 100.0 * reading.utilization,
                        reading.memory_percent, "nvml")
    return GpuUsage(None, None, "unknown")

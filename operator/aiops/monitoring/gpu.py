"""GPU utilisation and memory of a ModelDeployment's serving pods, from their devices only.

Which devices: the UUIDs each pod's Triton reports on its metrics page (it sees exactly the GPUs
the device plugin put in its NVIDIA_VISIBLE_DEVICES) and, where the operator can read it, the
kubelet's record of the assignment (`podresources`). Figures per device: Triton's `nv_gpu_*`
first, NVML (nvidia-ml-py) by UUID for what Triton's page lacks, where the operator sees the GPUs
(on the GPU node as root, or given NVIDIA_VISIBLE_DEVICES=all). A device neither source can read
stays unknown: never another device's figure, never an average over the host.

No GPU to read is *unknown* (None), never 0%: a zero would pass every threshold and look like an
idle, healthy device on a dashboard.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from aiops.monitoring.scrape import GpuDevice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuUsage:
    utilization_percent: float | None
    memory_percent: float | None
    source: str | None  # "triton", "nvml", "triton+nvml"; None when nothing was read
    devices: tuple[str, ...] = ()  # the UUIDs the figures cover, sorted


UNKNOWN = GpuUsage(None, None, None)


class GpuReader(Protocol):
    def read(self, uuids: Iterable[str]) -> dict[str, GpuDevice]: ...


class NvmlReader:
    """NVML behind a small adapter that reads devices by UUID only. Initialised once; a machine
    without the library or without GPUs answers {} for good (nvmlInit raises
    NVMLError_LibraryNotFound there) instead of retrying the load on every collection. A UUID this
    machine does not have (NVMLError_NotFound) is left out: it is another node's device."""

    def __init__(self, nvml=None):
        self._nvml = nvml
        self._ok: bool | None = None

    def available(self) -> bool:
        if self._ok is None:
            try:
                if self._nvml is None:
                    import pynvml  # nvidia-ml-py

                    self._nvml = pynvml
                self._nvml.nvmlInit()
                count = self._nvml.nvmlDeviceGetCount()
                self._ok = count > 0
                log.info("NVML sees %d GPU(s): serving pods' devices are read by UUID", count)
            except Exception as e:  # NVMLError_LibraryNotFound, driver not loaded, no device...
                log.info("NVML unavailable (%s): GPU figures come from Triton's pages only", e)
                self._ok = False
        return self._ok

    def _device(self, uuid: str) -> GpuDevice | None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        except Exception as e:  # NVMLError_NotFound: not one of this machine's GPUs
            log.debug("NVML has no device %s: %s", uuid, e)
            return None
        util = mem = None
        try:
            util = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
        except Exception as e:  # NVMLError_NotSupported (MIG instances), GPU lost...
            log.debug("NVML utilisation of %s: %s", uuid, e)
        try:
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception as e:
            log.debug("NVML memory of %s: %s", uuid, e)
        if util is None and mem is None:
            return None
        if mem is None:
            return GpuDevice(uuid, util)
        return GpuDevice(uuid, util, float(mem.used), float(mem.total))

    def read(self, uuids: Iterable[str]) -> dict[str, GpuDevice]:
        wanted = sorted(set(uuids))
        if not wanted or not self.available():
            return {}
        return {d.uuid: d for d in map(self._device, wanted) if d is not None}


def gpu_usage(pages: Iterable[dict[str, GpuDevice]], assigned: Iterable[str] = (),
              nvml: GpuReader | None = None) -> GpuUsage:
    """Mean utilisation and memory share over the distinct devices the pods hold: those their
    Triton pages report plus `assigned` (UUIDs from the kubelet); NVML fills what Triton lacks."""
    devices: dict[str, GpuDevice] = {}
    for page in pages:
        for uuid, d in page.items():
            devices[uuid] = devices[uuid].merged(d) if uuid in devices else d
    wanted = set(devices) | set(assigned)
    missing = [u for u in wanted if u not in devices or not devices[u].complete]
    from_nvml = nvml.read(missing) if nvml is not None and missing else {}
    sources = {"triton"} if any(d.utilization is not None or d.memory_used_bytes is not None
                                for d in devices.values()) else set()
    for uuid, d in from_nvml.items():
        before = devices.get(uuid, GpuDevice(uuid))
        devices[uuid] = before.merged(d)
        if devices[uuid] != before:
            sources.add("nvml")
    utils = [d.utilization for d in devices.values() if d.utilization is not None]
    mem = [d for d in devices.values() if d.memory_used_bytes is not None and d.memory_total_bytes]
    if not utils and not mem:
        return UNKNOWN
    read = sorted({u for u, d in devices.items() if d.utilization is not None} | {d.uuid for d in mem})
    return GpuUsage(100.0 * sum(utils) / len(utils) if utils else None,
                    100.0 * sum(d.memory_used_bytes for d in mem) / sum(d.memory_total_bytes for d in mem)
                    if mem else None, "+".join(sorted(sources, key=["triton", "nvml"].index)), tuple(read))

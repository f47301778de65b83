"""What the fake NVIDIA device plugin answers to Allocate and GetPreferredAllocation: pure functions
over the devices a plugin instance advertises (aiops.devenv.deviceplugin_layout), which the gRPC
server (aiops.devenv.deviceplugin) only wraps.

What is imitated, from NVIDIA/k8s-device-plugin (main after v0.18, read at commit 1b826acc):
- internal/plugin/server.go: Allocate validates the IDs, reduces replica IDs `<uuid>::<n>` to the
  GPU's own ID and drops duplicates (uniqueDeviceIDsFromAnnotatedDeviceIDs, since v0.18.0), and
  with the default flags (deviceListStrategy envvar, no CDI/GDS/MOFED/GDRCopy, passDeviceSpecs
  false) answers only `NVIDIA_VISIBLE_DEVICES=<ids joined by ','>`; unknown IDs fail the call with
  `invalid allocation request for "<resource>": invalid request: unknown device: <id>`.
- internal/rm/nvml_manager.go, allocate.go: GetPreferredAllocation on whole GPUs uses
  go-gpuallocator's best-effort policy (NVLink/PCIe topology; with identical links, as on this
  PCIe-only node, the first GPUs in order that include the required ones), on replicas the
  greedy "distributed" policy (fewest allocated replicas per GPU first).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from aiops.devenv.deviceplugin_layout import REPLICA_SEPARATOR, PluginDevice, PluginInstance


class AllocationError(ValueError):
    """A request the real plugin would refuse; its message is the one NVIDIA's plugin returns."""


def visible_devices(instance: PluginInstance, devices: Sequence[PluginDevice], requested: Sequence[str]) -> str:
    """NVIDIA_VISIBLE_DEVICES for an Allocate request: the IDs' GPUs, in request order, once each.
    Unknown IDs are refused as NVIDIA's ValidateRequest refuses them."""
    by_id = {d.id: d for d in devices}
    for device_id in requested:
        if device_id not in by_id:
            raise AllocationError(f'invalid allocation request for "{instance.advertised_resource}": '
                                  f"invalid request: unknown device: {device_id}")
    if instance.device_id_strategy == "index":
        ids = [str(by_id[i].plugin_index) for i in requested]
    else:
        ids = [by_id[i].visible_id for i in requested]
    return ",".join(dict.fromkeys(ids))


def preferred_allocation(devices: Sequence[PluginDevice], available: Sequence[str], required: Sequence[str],
                         size: int) -> list[str]:
    """The devices NVIDIA's plugin would prefer: the required ones, then either whole GPUs in
    order (best-effort policy with identical links) or replicas spread over the GPUs with the
    fewest allocated replicas (distributed policy)."""
    if not any(REPLICA_SEPARATOR in a for a in available):
        return _whole_gpu_preference(devices, available, required, size)
    return _distributed_replica_preference(devices, available, required, size)


def _whole_gpu_preference(devices, available, required, size) -> list[str]:
    if size <= 0 or len(available) < size or len(required) > size:
        return []  # go-gpuallocator's best-effort policy answers an empty set
    offered, must = set(available), set(required)
    rest = [d.id for d in devices if d.id in offered and d.id not in must]
    return list(required) + rest[:size - len(required)]


def _distributed_replica_preference(devices, available, required, size) -> list[str]:
    offered, must = set(available), set(required)
    candidates = [d for d in devices if d.id in offered and d.id not in must]
    needed = size - len(required)
    if len(candidates) < needed:
        raise AllocationError("not enough available devices to satisfy allocation")
    gpus = {d.gpu.uuid for d in candidates}
    total = Counter(d.gpu.uuid for d in devices if d.gpu.uuid in gpus)
    free = Counter(d.gpu.uuid for d in candidates)
    picked: Counter[str] = Counter()
    chosen = []
    for _ in range(needed):
        candidates.sort(key=lambda d: (total[d.gpu.uuid] - free[d.gpu.uuid], picked[d.gpu.uuid]))
        best = candidates.pop(0)
        picked[best.gpu.uuid] += 1
        free[best.gpu.uuid] -= 1
        chosen.append(best.id)
    return list(required) + chosen

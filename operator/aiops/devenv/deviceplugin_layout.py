"""The GPUs of a simulated node and the NVIDIA device plugin instances that advertise them, as pure
data: from the chart's `gpuLayout` values (the reference node) or from its rendered DaemonSets and
ConfigMaps, read as NVIDIA's plugin reads them. The plugin's gRPC side is aiops.devenv.deviceplugin.

What is imitated, from NVIDIA/k8s-device-plugin (main after v0.18, read at commit 1b826acc):
- internal/rm/devices.go, device_map.go: devices are advertised by UUID (`GPU-...`), Healthy, with
  a NUMA node only when sysfs gives one; a time-sliced GPU becomes `replicas` devices
  `<uuid>::0..n-1` under the renamed resource (`<name>.shared`, api/config/v1 consts.go); the
  index used by deviceIDStrategy=index is NVML's index inside the plugin's own container, so an
  instance that sees only GPU 2 calls it 0 (the host's GPU 0): uuid is the only safe strategy
  for the split, and it is the default.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from aiops.api.common import DEFAULT_GPU_RESOURCE

VISIBLE_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
SHARED_SUFFIX = ".shared"  # NVIDIA's DefaultSharedResourceNameSuffix
REPLICA_SEPARATOR = "::"  # NVIDIA's AnnotatedID: <uuid>::<replica>
DEVICE_ID_STRATEGIES = ("uuid", "index")

# The chart's values: their gpuLayout is what the reference node advertises, here as there.
CHART_VALUES = Path(__file__).resolve().parents[3] / "helm" / "aiops-operator" / "values.yaml"
SEED_GPU_PRODUCT = "NVIDIA RTX 4000 Ada Generation"  # as NVML names it
SEED_GPU_MEMORY_MIB = 20475


@dataclass(frozen=True)
class Gpu:
    """One physical GPU as NVML on the host reports it."""

    index: int
    uuid: str
    product: str = SEED_GPU_PRODUCT
    memory_mib: int = SEED_GPU_MEMORY_MIB
    numa_node: int | None = None  # None: sysfs has no node (-1), so no topology is advertised


@dataclass(frozen=True)
class PluginInstance:
    """One NVIDIA plugin deployment: the GPUs its container sees and its sharing config."""

    resource: str  # the configured resource, e.g. nvidia.com/gpu
    gpu_indexes: tuple[int, ...]  # host indexes of the GPUs in its NVIDIA_VISIBLE_DEVICES
    replicas: int = 1  # timeSlicing replicas per GPU; 1: not shared
    rename_by_default: bool = False  # timeSlicing renameByDefault: advertise <resource>.shared
    device_id_strategy: str = "uuid"

    @property
    def shared(self) -> bool:
        return self.replicas > 1

    @property
    def advertised_resource(self) -> str:
        return self.resource + SHARED_SUFFIX if self.shared and self.rename_by_default else self.resource

    @property
    def socket_name(self) -> str:
        """NVIDIA's getPluginSocketPath: one socket per advertised resource."""
        return f"nvidia-{self.advertised_resource.split('/', 1)[-1]}.sock"


@dataclass(frozen=True)
class PluginDevice:
    """One device as a plugin advertises it: a whole GPU, or one replica of a time-sliced GPU."""

    id: str
    gpu: Gpu
    plugin_index: int  # the GPU's NVML index inside the plugin's container (deviceIDStrategy index)

    @property
    def visible_id(self) -> str:
        """What NVIDIA_VISIBLE_DEVICES names for it with deviceIDStrategy uuid: the GPU itself."""
        return self.id.split(REPLICA_SEPARATOR, 1)[0]


def fake_gpu_uuid(node_name: str, index: int) -> str:
    """A stable, NVML-shaped UUID for a GPU that does not exist: the same on every run, so pods'
    NVIDIA_VISIBLE_DEVICES and the kubelet's checkpoint stay valid across restarts."""
    return f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'gpu{index}.{node_name}.aiops.dev')}"


@dataclass(frozen=True)
class GpuLayout:
    """The node's GPUs and the plugin instances that advertise them."""

    gpus: tuple[Gpu, ...]
    instances: tuple[PluginInstance, ...]

    def __post_init__(self) -> None:
        _check_layout(self)

    @classmethod
    def seed(cls, node_name: str = "aiops-gpu-0") -> GpuLayout:
        """The reference node (3 GPUs) with the chart's default gpuLayout: the one description of
        what the real node advertises, read from helm/aiops-operator/values.yaml."""
        values = yaml.safe_load(CHART_VALUES.read_text())
        return cls.from_values(values["gpuLayout"], node_name)

    @classmethod
    def from_values(cls, gpu_layout: dict, node_name: str = "aiops-gpu-0", gpus: int = 3) -> GpuLayout:
        """The layout the chart's `gpuLayout` values give on a node of `gpus` GPUs: one plugin
        instance per entry, as the chart's DaemonSets run NVIDIA's plugin (see
        templates/gpu-device-plugins.yaml): whole GPUs as nvidia.com/gpu, time-sliced ones as
        nvidia.com/gpu.shared."""
        node_gpus = tuple(Gpu(i, fake_gpu_uuid(node_name, i)) for i in range(gpus))
        return cls(node_gpus, tuple(
            PluginInstance(DEFAULT_GPU_RESOURCE, _visible_indexes(entry["devices"], node_gpus),
                           replicas=int(entry["replicas"]), rename_by_default=int(entry["replicas"]) > 1)
            for entry in gpu_layout["instances"]))

    @classmethod
    def from_rendered(cls, manifests: list[dict], node_name: str = "aiops-gpu-0", gpus: int = 3) -> GpuLayout:
        """The layout NVIDIA's plugin would advertise from rendered manifests (`helm template`):
        each DaemonSet running the plugin, with its container's NVIDIA_VISIBLE_DEVICES and the
        config file from its ConfigMap, read as the plugin reads them (api/config/v1: a
        `sharing.timeSlicing` resource with replicas > 1 is shared, renamed `.shared` with
        renameByDefault; without sharing, whole GPUs as nvidia.com/gpu)."""
        node_gpus = tuple(Gpu(i, fake_gpu_uuid(node_name, i)) for i in range(gpus))
        config_maps = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d
                       for d in manifests if d and d.get("kind") == "ConfigMap"}
        instances = []
        for ds in (d for d in manifests if d and d.get("kind") == "DaemonSet"):
            pod = ds["spec"]["template"]["spec"]
            plugin = next((c for c in pod["containers"] if "k8s-device-plugin" in c.get("image", "")), None)
            if plugin is None:
                continue
            env = {e["name"]: e.get("value") for e in plugin.get("env") or []}
            config_file = next(a.split("=", 1)[1] for a in plugin.get("args") or [] if a.startswith("--config-file="))
            mount = next(m for m in plugin["volumeMounts"] if config_file.startswith(m["mountPath"] + "/"))
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            cm = config_maps[(ds["metadata"].get("namespace"), volume["configMap"]["name"])]
            config = yaml.safe_load(cm["data"][config_file.rsplit("/", 1)[1]])
            if (config.get("flags", {}).get("plugin") or {}).get("deviceIDStrategy", "uuid") != "uuid":
                raise ValueError(f"{ds['metadata']['name']}: deviceIDStrategy must be uuid for a GPU subset")
            sliced = ((config.get("sharing") or {}).get("timeSlicing") or {})
            resources = sliced.get("resources") or []
            replicas = max((int(r.get("replicas", 1)) for r in resources), default=1)
            instances.append(PluginInstance(
                DEFAULT_GPU_RESOURCE, _visible_indexes(env.get(VISIBLE_DEVICES_ENV, "all"), node_gpus),
                replicas=replicas, rename_by_default=bool(sliced.get("renameByDefault"))))
        return cls(node_gpus, tuple(instances))

    def gpu(self, index: int) -> Gpu:
        return next(g for g in self.gpus if g.index == index)

    def devices(self, instance: PluginInstance) -> list[PluginDevice]:
        """The devices the instance advertises, GPU by GPU, replicas in order."""
        devices = []
        for plugin_index, host_index in enumerate(instance.gpu_indexes):
            gpu = self.gpu(host_index)
            if not instance.shared:
                devices.append(PluginDevice(gpu.uuid, gpu, plugin_index))
                continue
            devices += [PluginDevice(f"{gpu.uuid}{REPLICA_SEPARATOR}{r}", gpu, plugin_index)
                        for r in range(instance.replicas)]
        return devices


def _visible_indexes(devices: str, gpus: Sequence[Gpu]) -> tuple[int, ...]:
    """Host GPU indexes from an NVIDIA_VISIBLE_DEVICES value: "all", indexes, or GPU UUIDs."""
    if devices.strip() == "all":
        return tuple(g.index for g in gpus)
    by_uuid = {g.uuid: g.index for g in gpus}
    indexes = []
    for item in (d.strip() for d in devices.split(",")):
        if item.isdigit():
            indexes.append(int(item))
        elif item in by_uuid:
            indexes.append(by_uuid[item])
        else:
            raise ValueError(f"NVIDIA_VISIBLE_DEVICES {devices!r}: no GPU {item!r} on this node")
    return tuple(indexes)


def _check_layout(layout: GpuLayout) -> None:
    """Refuses layouts no real node could have: unknown or doubly advertised GPUs (two plugins
    would hand the same GPU out twice) and two plugins on one resource name (the kubelet keeps
    only the last one registered)."""
    known = {g.index for g in layout.gpus}
    seen: set[int] = set()
    names: set[str] = set()
    for inst in layout.instances:
        if missing := set(inst.gpu_indexes) - known:
            raise ValueError(f"{inst.advertised_resource}: no GPU with index {sorted(missing)}")
        if twice := seen & set(inst.gpu_indexes):
            raise ValueError(f"GPU {sorted(twice)} is advertised by two plugin instances")
        if inst.advertised_resource in names:
            raise ValueError(f"two plugin instances advertise {inst.advertised_resource}")
        if inst.replicas < 1 or inst.device_id_strategy not in DEVICE_ID_STRATEGIES:
            raise ValueError(f"{inst.advertised_resource}: replicas must be >= 1 and deviceIDStrategy "
                             f"one of {DEVICE_ID_STRATEGIES}")
        seen |= set(inst.gpu_indexes)
        names.add(inst.advertised_resource)


LAYOUTS = {"seed": GpuLayout.seed}

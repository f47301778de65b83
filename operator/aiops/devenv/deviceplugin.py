"""A fake NVIDIA device plugin: a real kubelet on a GPU-less machine advertises and allocates the
seed node's GPUs exactly as NVIDIA's k8s-device-plugin would on the real node.

The reference node (3 x RTX 4000 Ada) runs two plugin instances: A sees GPUs 0-1 and advertises
`nvidia.com/gpu`; B sees GPU 2 with time-slicing (2 replicas, renameByDefault) and advertises
`nvidia.com/gpu.shared` (see shared/GPU-LAYOUT-NOTES.md for why one instance cannot do both).
Here both instances run in one process, each with its own gRPC server and socket, as two
DaemonSets would.

What is imitated, from NVIDIA/k8s-device-plugin (main after v0.18, read at commit 1b826acc):
- internal/plugin/server.go: the socket is `nvidia-<resource name after the slash>.sock`
  (getPluginSocketPath); Register sends version v1beta1, the socket's base name and
  GetPreferredAllocationAvailable=true, and GetDevicePluginOptions says the same (no
  PreStartContainer; it answers empty if called); ListAndWatch sends the device list once, then
  again only when a device turns unhealthy, and stays open until the plugin stops; Allocate
  validates the IDs, reduces replica IDs `<uuid>::<n>` to the GPU's own ID and drops duplicates
  (uniqueDeviceIDsFromAnnotatedDeviceIDs, since v0.18.0), and with the default flags
  (deviceListStrategy envvar, no CDI/GDS/MOFED/GDRCopy, passDeviceSpecs false) answers only
  `NVIDIA_VISIBLE_DEVICES=<ids joined by ','>`; unknown IDs fail the call with
  `invalid allocation request for "<resource>": invalid request: unknown device: <id>`.
- internal/rm/devices.go, device_map.go: devices are advertised by UUID (`GPU-...`), Healthy, with
  a NUMA node only when sysfs gives one; a time-sliced GPU becomes `replicas` devices
  `<uuid>::0..n-1` under the renamed resource (`<name>.shared`, api/config/v1 consts.go); the
  index used by deviceIDStrategy=index is NVML's index inside the plugin's own container, so an
  instance that sees only GPU 2 calls it 0 (the host's GPU 0): uuid is the only safe strategy
  for the split, and it is the default.
- internal/rm/nvml_manager.go, allocate.go: GetPreferredAllocation on whole GPUs uses
  go-gpuallocator's best-effort policy (NVLink/PCIe topology; with identical links, as on this
  PCIe-only node, the first GPUs in order that include the required ones), on replicas the
  greedy "distributed" policy (fewest allocated replicas per GPU first).
- cmd/nvidia-device-plugin/main.go: a new kubelet.sock restarts every plugin: stop serving,
  serve a new socket, register again; a failed start is retried later (NVIDIA: after 30 s).
  The kubelet's devicemanager Start() removes every socket in the folder before it listens on
  kubelet.sock, so the old sockets are gone by then (pkg/kubelet/cm/devicemanager/manager.go).
- internal/rm/health.go: health comes from NVML XID events; with no GPU here every device is
  Healthy unless a test marks a GPU unhealthy (mark_unhealthy), which takes the XID path.

Why grpc.aio and not threaded gRPC: ListAndWatch streams stay open for the plugin's life; on
asyncio they cost no thread each, stopping a server cancels them cleanly, and the kubelet.sock
watcher and the signal handling live in the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml

from aiops.api.common import DEFAULT_GPU_RESOURCE
from aiops.devenv.deviceplugin_api import API_VERSION, DevicePluginApi, load_api

log = logging.getLogger(__name__)

DEFAULT_SOCKET_DIR = Path("/var/lib/kubelet/device-plugins")
KUBELET_SOCKET = "kubelet.sock"
HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"
VISIBLE_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
SHARED_SUFFIX = ".shared"  # NVIDIA's DefaultSharedResourceNameSuffix
REPLICA_SEPARATOR = "::"  # NVIDIA's AnnotatedID: <uuid>::<replica>
DEVICE_ID_STRATEGIES = ("uuid", "index")
REGISTER_TIMEOUT_SECONDS = 5.0  # NVIDIA's dial timeout for the kubelet's socket

# The chart's values: their gpuLayout is what the reference node advertises, here as there.
CHART_VALUES = Path(__file__).resolve().parents[3] / "helm" / "aiops-operator" / "values.yaml"
SEED_GPU_PRODUCT = "NVIDIA RTX 4000 Ada Generation"  # as NVML names it
SEED_GPU_MEMORY_MIB = 20475


class AllocationError(ValueError):
    """A request the real plugin would refuse; its message is the one NVIDIA's plugin returns."""


# ---------------------------------------------------------------------------------------------
# The layout: which GPUs exist and which plugin instance advertises them how (pure data).


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


# ---------------------------------------------------------------------------------------------
# What the plugin answers (pure functions over the advertised devices).


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


# ---------------------------------------------------------------------------------------------
# One plugin instance's gRPC server.


class DevicePluginServer:
    """One plugin instance: serves the DevicePlugin service on `<socket_dir>/<socket_name>` and
    registers it with the kubelet. The method names are the service's RPCs (gRPC looks them up)."""

    def __init__(self, layout: GpuLayout, instance: PluginInstance, socket_dir: Path,
                 api: DevicePluginApi | None = None):
        self.instance = instance
        self.devices = layout.devices(instance)
        self.socket = Path(socket_dir).absolute() / instance.socket_name
        self.api = api or load_api()
        self._health = {d.id: HEALTHY for d in self.devices}
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None

    @property
    def resource(self) -> str:
        return self.instance.advertised_resource

    async def serve(self) -> None:
        """Listens on the plugin's socket; a socket left by an earlier run is replaced."""
        self.socket.unlink(missing_ok=True)
        server = grpc.aio.server()
        self.api.grpc.add_DevicePluginServicer_to_server(self, server)
        server.add_insecure_port(f"unix://{self.socket}")
        await server.start()
        self._server = server
        log.info("serving %s on %s (%d devices)", self.resource, self.socket, len(self.devices))

    async def register(self, kubelet_socket: Path) -> None:
        pb = self.api.pb
        request = pb.RegisterRequest(
            version=API_VERSION, endpoint=self.socket.name, resource_name=self.resource,
            options=pb.DevicePluginOptions(get_preferred_allocation_available=True))
        async with grpc.aio.insecure_channel(f"unix://{kubelet_socket}") as channel:
            await self.api.grpc.RegistrationStub(channel).Register(request, timeout=REGISTER_TIMEOUT_SECONDS)
        log.info("registered %s with the kubelet at %s", self.resource, kubelet_socket)

    async def stop(self) -> None:
        """Stops serving (ends open ListAndWatch streams) and removes the socket."""
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        self.socket.unlink(missing_ok=True)

    async def mark_unhealthy(self, gpu_uuid: str) -> None:
        """What an XID event does: the GPU's devices turn Unhealthy (for good) and every open
        ListAndWatch sends the new list, so the kubelet lowers allocatable."""
        for d in self.devices:
            if d.gpu.uuid == gpu_uuid:
                self._health[d.id] = UNHEALTHY
        async with self._changed:
            self._changed.notify_all()

    def _device_list(self):
        pb = self.api.pb
        return pb.ListAndWatchResponse(devices=[
            pb.Device(ID=d.id, health=self._health[d.id], topology=self._topology(d)) for d in self.devices])

    def _topology(self, device: PluginDevice):
        if device.gpu.numa_node is None:
            return None
        pb = self.api.pb
        return pb.TopologyInfo(nodes=[pb.NUMANode(ID=device.gpu.numa_node)])

    async def GetDevicePluginOptions(self, request, context):
        return self.api.pb.DevicePluginOptions(get_preferred_allocation_available=True)

    async def ListAndWatch(self, request, context):
        yield self._device_list()
        while True:
            async with self._changed:
                await self._changed.wait()
            yield self._device_list()

    async def GetPreferredAllocation(self, request, context):
        pb = self.api.pb
        responses = []
        for req in request.container_requests:
            try:
                ids = preferred_allocation(self.devices, req.available_deviceIDs, req.must_include_deviceIDs,
                                           req.allocation_size)
            except AllocationError as e:
                await context.abort(grpc.StatusCode.UNKNOWN, f"error getting list of preferred allocation devices: {e}")
            responses.append(pb.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return pb.PreferredAllocationResponse(container_responses=responses)

    async def Allocate(self, request, context):
        pb = self.api.pb
        responses = []
        for req in request.container_requests:
            try:
                visible = visible_devices(self.instance, self.devices, req.devicesIDs)
            except AllocationError as e:
                await context.abort(grpc.StatusCode.UNKNOWN, str(e))
            responses.append(pb.ContainerAllocateResponse(envs={VISIBLE_DEVICES_ENV: visible}))
        return pb.AllocateResponse(container_responses=responses)

    async def PreStartContainer(self, request, context):
        return self.api.pb.PreStartContainerResponse()


# ---------------------------------------------------------------------------------------------
# All instances of a layout, kept registered with the kubelet.


def socket_identity(path: Path) -> tuple[int, int, int] | None:
    """Identifies one incarnation of a socket file; None while there is none. The change time is
    part of it because a recreated file can get the freed inode number back."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


class DevicePlugins:
    """Runs every plugin instance of a layout against one kubelet: starts them when kubelet.sock
    appears and restarts them (new sockets, new registrations) whenever it is recreated, polling
    its identity every `poll_seconds`; a failed start is retried after `retry_seconds`."""

    def __init__(self, layout: GpuLayout, socket_dir: Path = DEFAULT_SOCKET_DIR, *,
                 poll_seconds: float = 1.0, retry_seconds: float = 5.0):
        self.layout = layout
        self.socket_dir = Path(socket_dir).absolute()
        self.kubelet_socket = self.socket_dir / KUBELET_SOCKET
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.servers: list[DevicePluginServer] = []
        self.api = load_api()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; then every server stops and its socket is removed."""
        loop = asyncio.get_running_loop()
        registered_with = None
        retry_at = 0.0
        log.info("waiting for the kubelet at %s", self.kubelet_socket)
        try:
            while not stop.is_set():
                current = socket_identity(self.kubelet_socket)
                if current is not None and current != registered_with and loop.time() >= retry_at:
                    if await self._restart():
                        registered_with = current
                    else:
                        retry_at = loop.time() + self.retry_seconds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
        finally:
            await self._stop_all()

    async def _restart(self) -> bool:
        """Stops what runs, then serves and registers every instance afresh, as NVIDIA's plugin
        does on a kubelet restart (the kubelet removed the old sockets when it started)."""
        await self._stop_all()
        self.servers = [DevicePluginServer(self.layout, inst, self.socket_dir, self.api)
                        for inst in self.layout.instances]
        try:
            for server in self.servers:
                await server.serve()
                await server.register(self.kubelet_socket)
        except (grpc.RpcError, OSError, RuntimeError) as e:
            log.warning("could not start and register the device plugins (retrying in %.0f s): %s",
                        self.retry_seconds, e)
            await self._stop_all()
            return False
        return True

    async def _stop_all(self) -> None:
        for server in self.servers:
            await server.stop()
        self.servers = []


def run_until_signalled(layout: GpuLayout, socket_dir: Path = DEFAULT_SOCKET_DIR) -> int:
    """The CLI's foreground run: serves until SIGTERM or SIGINT, then removes its sockets."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await DevicePlugins(layout, socket_dir).run(stop)

    asyncio.run(main())
    return 0

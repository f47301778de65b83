"""A fake NVIDIA device plugin: a real kubelet on a GPU-less machine advertises and allocates the
seed node's GPUs exactly as NVIDIA's k8s-device-plugin would on the real node.

The reference node (3 x RTX 4000 Ada) runs two plugin instances: A sees GPUs 0-1 and advertises
`nvidia.com/gpu`; B sees GPU 2 with time-slicing (2 replicas, renameByDefault) and advertises
`nvidia.com/gpu.shared` (see shared/GPU-LAYOUT-NOTES.md for why one instance cannot do both).
Here both instances run in one process, each with its own gRPC server and socket, as two
DaemonSets would.

This module is the gRPC side: one DevicePlugin server per instance, registered with the kubelet
and restarted with it. Which GPUs exist and how each instance advertises them is
aiops.devenv.deviceplugin_layout; what Allocate and GetPreferredAllocation answer is
aiops.devenv.deviceplugin_allocation; the protocol stubs come from aiops.devenv.deviceplugin_api.

What is imitated, from NVIDIA/k8s-device-plugin (main after v0.18, read at commit 1b826acc):
- internal/plugin/server.go: the socket is `nvidia-<resource name after the slash>.sock`
  (getPluginSocketPath); Register sends version v1beta1, the socket's base name and
  GetPreferredAllocationAvailable=true, and GetDevicePluginOptions says the same (no
  PreStartContainer; it answers empty if called); ListAndWatch sends the device list once, then
  again only when a device turns unhealthy, and stays open until the plugin stops.
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
from pathlib import Path

import grpc

from aiops.devenv.deviceplugin_allocation import AllocationError, preferred_allocation, visible_devices
from aiops.devenv.deviceplugin_api import API_VERSION, DevicePluginApi, load_api
from aiops.devenv.deviceplugin_layout import VISIBLE_DEVICES_ENV, GpuLayout, PluginDevice, PluginInstance

log = logging.getLogger(__name__)

DEFAULT_SOCKET_DIR = Path("/var/lib/kubelet/device-plugins")
KUBELET_SOCKET = "kubelet.sock"
HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"
REGISTER_TIMEOUT_SECONDS = 5.0  # NVIDIA's dial timeout for the kubelet's socket


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

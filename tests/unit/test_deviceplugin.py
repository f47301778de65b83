"""The fake NVIDIA device plugin, seen from the kubelet's side: a Registration server generated from
the same proto on a unix socket in tmp_path, and calls to the plugin's own sockets as the kubelet
makes them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

import grpc
import pytest

from aiops.api.common import DEFAULT_GPU_RESOURCE, DEFAULT_SHARED_GPU_RESOURCE
from aiops.devenv import deviceplugin_api
from aiops.devenv.deviceplugin import DevicePlugins
from aiops.devenv.deviceplugin_allocation import AllocationError, preferred_allocation, visible_devices
from aiops.devenv.deviceplugin_layout import GpuLayout, PluginInstance, fake_gpu_uuid
from aiops.devenv.toolchain import cache_dir

API = deviceplugin_api.load_api()
PB = API.pb
SEED = GpuLayout.seed()
GPU0, GPU1, GPU2 = (g.uuid for g in SEED.gpus)
WHOLE, SHARED = SEED.instances


class FakeKubelet:
    """The kubelet's Registration service on `<dir>/kubelet.sock`; keeps every request it gets."""

    def __init__(self, socket_dir: Path):
        self.socket = socket_dir / "kubelet.sock"
        self.registrations: asyncio.Queue = asyncio.Queue()
        self._server: grpc.aio.Server | None = None

    async def Register(self, request, context):
        await self.registrations.put(request)
        return PB.Empty()

    async def start(self) -> FakeKubelet:
        self._server = grpc.aio.server()
        API.grpc.add_RegistrationServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix://{self.socket}")
        await self._server.start()
        return self

    async def stop(self) -> None:
        await self._server.stop(grace=None)
        self.socket.unlink(missing_ok=True)

    async def registered(self, count: int) -> dict[str, object]:
        """The next `count` registrations, by resource name."""
        requests = [await asyncio.wait_for(self.registrations.get(), 3) for _ in range(count)]
        return {r.resource_name: r for r in requests}


@contextlib.asynccontextmanager
async def node(socket_dir: Path):
    """A fake kubelet and the reference node's plugins registered with it."""
    kubelet = await FakeKubelet(socket_dir).start()
    plugins = DevicePlugins(SEED, socket_dir, poll_seconds=0.02, retry_seconds=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(plugins.run(stop))
    try:
        yield kubelet, plugins
    finally:
        stop.set()
        await asyncio.wait_for(task, 3)
        await kubelet.stop()


@contextlib.asynccontextmanager
async def plugin_stub(socket: Path):
    async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
        yield API.grpc.DevicePluginStub(channel)


async def stream_ends(stream) -> bool:
    """Whether a ListAndWatch stream ends (cleanly or cut off) instead of sending more."""
    try:
        return await asyncio.wait_for(stream.read(), 2) is grpc.aio.EOF
    except grpc.aio.AioRpcError:
        return True


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario, 10))


def allocate(*ids: str):
    return PB.AllocateRequest(container_requests=[PB.ContainerAllocateRequest(devicesIDs=list(ids))])


def test_both_instances_register_as_nvidias_would(tmp_path):
    async def scenario():
        async with node(tmp_path) as (kubelet, _):
            regs = await kubelet.registered(2)
            assert set(regs) == {DEFAULT_GPU_RESOURCE, DEFAULT_SHARED_GPU_RESOURCE}
            assert regs["nvidia.com/gpu"].endpoint == "nvidia-gpu.sock"
            assert regs["nvidia.com/gpu.shared"].endpoint == "nvidia-gpu.shared.sock"
            for r in regs.values():
                assert r.version == "v1beta1"
                assert r.options.get_preferred_allocation_available and not r.options.pre_start_required
                assert (tmp_path / r.endpoint).is_socket()
        assert sorted(p.name for p in tmp_path.iterdir()) == [], "sockets left behind after stop"

    run(scenario())


def test_list_and_watch_sends_the_devices_and_stays_open(tmp_path):
    async def scenario():
        async with node(tmp_path) as (kubelet, plugins):
            await kubelet.registered(2)
            async with plugin_stub(tmp_path / "nvidia-gpu.sock") as whole, \
                    plugin_stub(tmp_path / "nvidia-gpu.shared.sock") as shared:
                options = await whole.GetDevicePluginOptions(PB.Empty())
                assert options.get_preferred_allocation_available and not options.pre_start_required
                whole_stream, shared_stream = whole.ListAndWatch(PB.Empty()), shared.ListAndWatch(PB.Empty())
                first = await whole_stream.read()
                assert [(d.ID, d.health) for d in first.devices] == [(GPU0, "Healthy"), (GPU1, "Healthy")]
                assert not first.devices[0].HasField("topology")
                first = await shared_stream.read()
                assert [(d.ID, d.health) for d in first.devices] == [(f"{GPU2}::0", "Healthy"),
                                                                      (f"{GPU2}::1", "Healthy")]
                next_message = asyncio.ensure_future(whole_stream.read())
                done, _ = await asyncio.wait({next_message}, timeout=0.2)
                assert not done, "the stream must stay open, and quiet while nothing changes"
                await plugins.servers[0].mark_unhealthy(GPU1)
                update = await asyncio.wait_for(next_message, 2)
                assert [(d.ID, d.health) for d in update.devices] == [(GPU0, "Healthy"), (GPU1, "Unhealthy")]
                whole_stream.cancel()
                shared_stream.cancel()

    run(scenario())


def test_allocate_answers_nvidia_visible_devices_only(tmp_path):
    async def scenario():
        async with node(tmp_path) as (kubelet, _):
            await kubelet.registered(2)
            async with plugin_stub(tmp_path / "nvidia-gpu.sock") as whole, \
                    plugin_stub(tmp_path / "nvidia-gpu.shared.sock") as shared:
                two = (await whole.Allocate(allocate(GPU0, GPU1))).container_responses
                assert len(two) == 1
                assert dict(two[0].envs) == {"NVIDIA_VISIBLE_DEVICES": f"{GPU0},{GPU1}"}
                assert not two[0].mounts and not two[0].devices and not two[0].annotations
                one = (await shared.Allocate(allocate(f"{GPU2}::1"))).container_responses[0]
                assert dict(one.envs) == {"NVIDIA_VISIBLE_DEVICES": GPU2}
                both = (await shared.Allocate(allocate(f"{GPU2}::0", f"{GPU2}::1"))).container_responses[0]
                assert dict(both.envs) == {"NVIDIA_VISIBLE_DEVICES": GPU2}
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await shared.Allocate(allocate(GPU0))
                assert refused.value.code() == grpc.StatusCode.UNKNOWN
                assert refused.value.details() == ('invalid allocation request for "nvidia.com/gpu.shared": '
                                                   f"invalid request: unknown device: {GPU0}")

    run(scenario())


def test_preferred_allocation_over_grpc(tmp_path):
    async def scenario():
        async with node(tmp_path) as (kubelet, _):
            await kubelet.registered(2)
            async with plugin_stub(tmp_path / "nvidia-gpu.sock") as whole, \
                    plugin_stub(tmp_path / "nvidia-gpu.shared.sock") as shared:
                request = PB.PreferredAllocationRequest(container_requests=[
                    PB.ContainerPreferredAllocationRequest(available_deviceIDs=[GPU1, GPU0], allocation_size=1)])
                answer = await whole.GetPreferredAllocation(request)
                assert [list(r.deviceIDs) for r in answer.container_responses] == [[GPU0]]
                request = PB.PreferredAllocationRequest(container_requests=[
                    PB.ContainerPreferredAllocationRequest(available_deviceIDs=[f"{GPU2}::1"], allocation_size=1)])
                answer = await shared.GetPreferredAllocation(request)
                assert [list(r.deviceIDs) for r in answer.container_responses] == [[f"{GPU2}::1"]]

    run(scenario())


def test_registers_again_when_the_kubelet_restarts(tmp_path):
    async def scenario():
        async with node(tmp_path) as (kubelet, _), plugin_stub(tmp_path / "nvidia-gpu.sock") as before:
            await kubelet.registered(2)
            old_stream = before.ListAndWatch(PB.Empty())
            await old_stream.read()
            # A restarting kubelet removes every socket in the folder, then serves a new kubelet.sock.
            await kubelet.stop()
            for sock in tmp_path.glob("*.sock"):
                sock.unlink()
            await kubelet.start()
            regs = await kubelet.registered(2)
            assert set(regs) == {DEFAULT_GPU_RESOURCE, DEFAULT_SHARED_GPU_RESOURCE}
            assert await stream_ends(old_stream), "the old plugin server must be gone"
            async with plugin_stub(tmp_path / "nvidia-gpu.shared.sock") as shared:
                first = await shared.ListAndWatch(PB.Empty()).read()
                assert len(first.devices) == 2

    run(scenario())


def test_waits_for_the_kubelet_and_serves_nothing_meanwhile(tmp_path):
    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(DevicePlugins(SEED, tmp_path, poll_seconds=0.02).run(stop))
        await asyncio.sleep(0.1)
        assert list(tmp_path.iterdir()) == []
        kubelet = await FakeKubelet(tmp_path).start()
        assert len(await kubelet.registered(2)) == 2
        stop.set()
        await task
        await kubelet.stop()

    run(scenario())


# Pure parts: the layout and the answers.


def test_seed_layout_is_the_reference_node():
    assert [g.index for g in SEED.gpus] == [0, 1, 2]
    assert {g.product for g in SEED.gpus} == {"NVIDIA RTX 4000 Ada Generation"}
    assert {g.memory_mib for g in SEED.gpus} == {20475}
    assert fake_gpu_uuid("aiops-gpu-0", 0) == GPU0 and GPU0.startswith("GPU-") and len(GPU0) == 40
    assert len({GPU0, GPU1, GPU2}) == 3
    assert (WHOLE.advertised_resource, WHOLE.gpu_indexes, WHOLE.socket_name) == (
        "nvidia.com/gpu", (0, 1), "nvidia-gpu.sock")
    assert (SHARED.advertised_resource, SHARED.gpu_indexes, SHARED.socket_name) == (
        "nvidia.com/gpu.shared", (2,), "nvidia-gpu.shared.sock")


def test_layouts_no_node_could_have_are_refused():
    gpus = SEED.gpus
    with pytest.raises(ValueError, match="two plugin instances"):
        GpuLayout(gpus, (PluginInstance("nvidia.com/gpu", (0, 1)), PluginInstance("nvidia.com/gpu", (1,))))
    with pytest.raises(ValueError, match="two plugin instances advertise"):
        GpuLayout(gpus, (PluginInstance("nvidia.com/gpu", (0,)), PluginInstance("nvidia.com/gpu", (1,))))
    with pytest.raises(ValueError, match="no GPU with index"):
        GpuLayout(gpus, (PluginInstance("nvidia.com/gpu", (3,)),))


def test_index_strategy_names_the_gpu_as_the_plugins_container_sees_it():
    """Why the split needs deviceIDStrategy uuid: an instance that sees only host GPU 2 knows it
    as index 0."""
    shared = PluginInstance("nvidia.com/gpu", (2,), replicas=2, rename_by_default=True, device_id_strategy="index")
    layout = GpuLayout(SEED.gpus, (shared,))
    assert visible_devices(shared, layout.devices(shared), [f"{GPU2}::1"]) == "0"


def test_shared_without_rename_keeps_the_name_and_replica_ids():
    plain = PluginInstance("nvidia.com/gpu", (2,), replicas=2)
    assert plain.advertised_resource == "nvidia.com/gpu"
    assert [d.id for d in GpuLayout(SEED.gpus, (plain,)).devices(plain)] == [f"{GPU2}::0", f"{GPU2}::1"]


def test_replicas_are_spread_over_the_least_used_gpus():
    inst = PluginInstance("nvidia.com/gpu", (0, 1), replicas=2, rename_by_default=True)
    devices = GpuLayout(SEED.gpus, (inst,)).devices(inst)
    every = [d.id for d in devices]
    assert preferred_allocation(devices, every, [], 2) == [f"{GPU0}::0", f"{GPU1}::0"]
    # GPU 0 has one replica in use already: GPU 1's go first.
    assert preferred_allocation(devices, every[1:], [], 2) == [f"{GPU1}::0", f"{GPU0}::1"]
    assert preferred_allocation(devices, every, [f"{GPU1}::1"], 2) == [f"{GPU1}::1", f"{GPU0}::0"]
    with pytest.raises(AllocationError, match="not enough available devices"):
        preferred_allocation(devices, every[:1], [], 2)


def test_whole_gpus_preferred_in_order_with_the_required_ones():
    devices = SEED.devices(WHOLE)
    assert preferred_allocation(devices, [GPU1, GPU0], [GPU1], 2) == [GPU1, GPU0]
    assert preferred_allocation(devices, [GPU1], [], 2) == []  # best-effort answers nothing


# The proto.


def test_gogo_options_are_stripped_and_nothing_else():
    original = deviceplugin_api.PROTO.read_text()
    stripped = deviceplugin_api.strip_gogo(original)
    assert "gogo" not in stripped
    removed = set(original.splitlines()) - set(stripped.splitlines())
    assert len(removed) == 8 and all("gogo" in line for line in removed)


def test_shipped_proto_is_the_one_the_kubernetes_build_caches():
    cached = cache_dir() / "k8s-1.20.2" / "src" / "api.proto"
    if not cached.exists():
        pytest.skip(f"no Kubernetes build in the cache ({cached}): `make toolchain` builds it")
    assert hashlib.sha256(cached.read_bytes()).digest() == hashlib.sha256(
        deviceplugin_api.PROTO.read_bytes()).digest()

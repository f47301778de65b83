"""The kubelet's PodResources client against a gRPC server on a unix socket that speaks the
kubelet's wire format (the e2e tier reads the real kubelet's): GPU UUIDs per pod, time-sliced
replicas folded onto their GPU, other resources ignored, one List per interval for every monitor,
and a socket that is missing or refuses us reads as nothing, logged once."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from aiops.monitoring.podresources import PodResources, gpu_uuids, messages


class Kubelet:
    """A PodResourcesLister on `socket`; `pods` is [(namespace, name, {resource: [ids]})]."""

    def __init__(self, socket, pods, refuse: grpc.StatusCode | None = None):
        self.pods, self.refuse, self.calls = pods, refuse, 0
        m = messages()

        def list_(request, context):
            self.calls += 1
            if self.refuse is not None:
                context.abort(self.refuse, "permission denied")
            return m["ListPodResourcesResponse"](pod_resources=[
                m["PodResources"](namespace=ns, name=name, containers=[m["ContainerResources"](name="main", devices=[
                    m["ContainerDevices"](resource_name=r, device_ids=ids) for r, ids in devices.items()])])
                for ns, name, devices in self.pods])

        handler = grpc.method_handlers_generic_handler("v1.PodResourcesLister", {
            "List": grpc.unary_unary_rpc_method_handler(
                list_, request_deserializer=m["ListPodResourcesRequest"].FromString,
                response_serializer=lambda r: r.SerializeToString())})
        self.server = grpc.server(ThreadPoolExecutor(2))
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"unix://{socket}")
        self.server.start()

    def stop(self):
        self.server.stop(None)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


PODS = [("ml", "triton-0", {"nvidia.com/gpu": ["GPU-0", "GPU-1"], "example.com/nic": ["eth9"]}),
        ("ml", "milvus-0", {"nvidia.com/gpu.shared": ["GPU-2::0"]}),
        ("ml", "trainer", {"nvidia.com/gpu.shared": ["GPU-2::1"]}),
        ("web", "frontend", {})]


def test_replica_ids_fold_onto_their_gpu():
    assert gpu_uuids(["GPU-2::0", "GPU-2::1", "GPU-0", ""]) == {"GPU-0", "GPU-2"}


def test_gpus_per_pod_from_the_kubelet_read_once_per_interval(tmp_path):
    socket = tmp_path / "kubelet.sock"
    kubelet = Kubelet(socket, PODS)
    clock = Clock()
    reader = PodResources(socket, max_age=2.0, clock=clock)

    async def go():
        first = await reader.assigned()
        assert first == {("ml", "triton-0"): {"GPU-0", "GPU-1"}, ("ml", "milvus-0"): {"GPU-2"},
                         ("ml", "trainer"): {"GPU-2"}}  # the pod without devices is not listed
        await asyncio.gather(*(reader.assigned() for _ in range(5)))  # every monitor in one interval
        assert kubelet.calls == 1
        clock.now += 2.5
        kubelet.pods = PODS[:1]
        assert await reader.assigned() == {("ml", "triton-0"): {"GPU-0", "GPU-1"}} and kubelet.calls == 2

    try:
        asyncio.run(go())
    finally:
        reader.close()
        kubelet.stop()


@pytest.mark.parametrize("refuse", [None, grpc.StatusCode.PERMISSION_DENIED])
def test_an_unreadable_kubelet_reads_as_nothing_and_is_logged_once(tmp_path, caplog, refuse):
    socket = tmp_path / "kubelet.sock"
    kubelet = Kubelet(socket, PODS, refuse) if refuse else None
    clock = Clock()
    reader = PodResources(socket, timeout=1.0, retry_after=60, clock=clock)
    caplog.set_level(logging.INFO, "aiops.monitoring.podresources")

    async def go():
        assert await reader.assigned() == {}
        clock.now += 10
        assert await reader.assigned() == {}  # within retry_after: not even tried
        assert len([r for r in caplog.records if "not readable here" in r.getMessage()]) == 1
        return kubelet.calls if kubelet else 0

    try:
        assert asyncio.run(go()) == (1 if refuse else 0)
    finally:
        reader.close()
        if kubelet:
            kubelet.stop()

    # Once it answers, the next try after retry_after reads it.
    good = Kubelet(socket if not refuse else tmp_path / "other.sock", PODS)
    reader.socket = socket if not refuse else tmp_path / "other.sock"
    clock.now += 61
    try:
        assert asyncio.run(reader.assigned())[("ml", "triton-0")] == {"GPU-0", "GPU-1"}
    finally:
        reader.close()
        good.stop()

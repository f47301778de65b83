"""What the simulated node advertises: the chart's GPU layout, and allocatable memory below capacity."""

from aiops.api.common import DEFAULT_SHARED_GPU_RESOURCE
from aiops.devenv.deviceplugin_layout import GpuLayout
from aiops.devenv.nodespec import NodeSpec


def test_default_node_advertises_what_the_chart_s_gpu_layout_advertises():
    layout = GpuLayout.seed()
    advertised = {i.advertised_resource: str(len(layout.devices(i))) for i in layout.instances}
    cap = NodeSpec().capacity()
    assert {k: v for k, v in cap.items() if k.startswith("nvidia.com/")} == advertised
    assert advertised == {"nvidia.com/gpu": "2", DEFAULT_SHARED_GPU_RESOURCE: "2"}
    labels = NodeSpec().all_labels()
    assert labels["nvidia.com/gpu.count"] == str(len(layout.gpus))
    assert labels["nvidia.com/gpu.replicas"] == "2"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"


def test_allocatable_memory_is_capacity_less_the_reservations():
    node = NodeSpec()
    assert node.capacity()["memory"] == "128Gi" and node.allocatable()["memory"] == f"{125 * 1024}Mi"
    assert node.allocatable()["nvidia.com/gpu"] == node.capacity()["nvidia.com/gpu"]


def test_no_shared_gpu_when_turned_off():
    node = NodeSpec(shared_gpus=0)
    assert DEFAULT_SHARED_GPU_RESOURCE not in node.capacity()
    assert "nvidia.com/gpu.replicas" not in node.all_labels()

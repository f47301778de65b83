"""What the simulated node advertises: whole GPUs plus the time-sliced shared GPU."""

from aiops.api.common import DEFAULT_SHARED_GPU_RESOURCE
from aiops.devenv.gpunode import NodeSpec


def test_default_node_adds_the_shared_gpu_to_the_three_whole_ones():
    cap = NodeSpec().capacity()
    assert cap["nvidia.com/gpu"] == "3" and cap[DEFAULT_SHARED_GPU_RESOURCE] == "2"
    labels = NodeSpec().all_labels()
    assert labels["nvidia.com/gpu.replicas"] == "2"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"


def test_time_sliced_node_is_what_the_device_plugin_really_advertises():
    cap = NodeSpec.time_sliced(name="seed").capacity()
    assert cap["nvidia.com/gpu"] == "2" and cap[DEFAULT_SHARED_GPU_RESOURCE] == "2"


def test_no_shared_gpu_when_turned_off():
    node = NodeSpec(shared_gpus=0)
    assert DEFAULT_SHARED_GPU_RESOURCE not in node.capacity()
    assert "nvidia.com/gpu.replicas" not in node.all_labels()

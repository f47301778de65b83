"""The local control plane: warm start time, per-process memory, and how long the real scheduler
plus the simulated GPU node take to bring a 2-GPU pod to Ready.

The build itself (cold cache, ~10 min) is measured by `make toolchain` on a fresh machine, not
here: this benchmark needs the cached binaries.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kubernetes import client

from aiops.devenv.controlplane import LocalControlPlane, Ports
from aiops.devenv.gpunode import NodeAgent
from aiops.devenv.nodespec import NodeSpec
from aiops.devenv.session import api_client_for
from aiops.devenv.toolchain import ensure_toolchain
from report import figure

PODS = 20


def pod_ready(core: client.CoreV1Api, ns: str, name: str) -> bool:
    pod = core.read_namespaced_pod(name, ns)
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def main() -> None:
    tools = ensure_toolchain()
    with tempfile.TemporaryDirectory() as state:
        cp = LocalControlPlane(Path(state), Ports.free())
        t0 = time.monotonic()
        cp.up(tools=tools)
        figure("controlplane.start_to_readyz", time.monotonic() - t0, "s", "warm cache, 4 processes")
        try:
            api = api_client_for(cp)
            t0 = time.monotonic()
            agent = NodeAgent(api, [NodeSpec()]).start()
            figure("gpunode.register_to_schedulable", time.monotonic() - t0, "s", "taint lifted")
            core = client.CoreV1Api(api)
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="bench")))
            while not (sa := core.list_namespaced_service_account("bench").items) or not sa[0].secrets:
                time.sleep(0.05)
            latencies = []
            for i in range(PODS):
                gpus = "2" if i % 2 == 0 else "1"
                pod = client.V1Pod(metadata=client.V1ObjectMeta(name=f"p{i}"), spec=client.V1PodSpec(
                    containers=[client.V1Container(name="c", image="x", resources=client.V1ResourceRequirements(
                        limits={"nvidia.com/gpu": gpus}))]))
                t0 = time.monotonic()
                core.create_namespaced_pod("bench", pod)
                while not pod_ready(core, "bench", f"p{i}"):
                    time.sleep(0.01)
                latencies.append(time.monotonic() - t0)
                core.delete_namespaced_pod(f"p{i}", "bench")  # free the GPUs for the next one
                while core.list_namespaced_pod("bench", field_selector=f"metadata.name=p{i}").items:
                    time.sleep(0.01)
            latencies.sort()
            figure("gpu_pod.create_to_ready.p50", statistics.median(latencies) * 1000, "ms",
                   f"{PODS} pods, real scheduler + simulated node")
            figure("gpu_pod.create_to_ready.max", latencies[-1] * 1000, "ms")
            for component, mb in sorted(cp.memory_rss_mb().items()):
                figure(f"controlplane.rss.{component}", mb, "MiB", "RSS after the run")
            agent.stop()
        finally:
            cp.down()


if __name__ == "__main__":
    main()

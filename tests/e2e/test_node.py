"""The real node itself: containers run, the kubelet admits GPU pods by the device plugin's
resources and reports their GPUs through its PodResources API, cluster DNS answers cluster names
(and NXDOMAIN for missing ones inside the cluster domain), local-path volumes are writable by
non-root pods, and `kubectl logs` reaches the kubelet through the API server's client
certificate."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
import yaml
from e2ehelpers import wait_until
from kubernetes import client

from aiops.devenv.deviceplugin_layout import GpuLayout
from aiops.devenv.realcluster import CHART
from aiops.monitoring.podresources import PodResources

pytestmark = pytest.mark.timeout(900)


def pod(name: str, image: str, script: str, limits: dict | None = None, user: int = 1000, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": user, "runAsGroup": user},
                     "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                                     "command": ["python3", "-c", script],
                                     "resources": {"limits": limits or {}},
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "readOnlyRootFilesystem": True,
                                                         "capabilities": {"drop": ["ALL"]}}}],
                     **spec}}


def run_to_completion(core, ns: str, body: dict, timeout: float = 120) -> str:
    """Creates the pod, waits for it to finish, and returns its log; fails when it did not succeed."""
    name = body["metadata"]["name"]
    core.create_namespaced_pod(ns, body)
    phase = wait_until(lambda: (lambda p: p if p in ("Succeeded", "Failed") else None)(
        core.read_namespaced_pod(name, ns).status.phase), timeout, f"pod {name} to finish")
    logs = core.read_namespaced_pod_log(name, ns)
    assert phase == "Succeeded", f"pod {name} {phase}: {logs}"
    return logs


def test_node_is_ready_with_the_seed_gpus(real, core):
    """The GPUs as the chart's rendered device-plugin DaemonSets and configs make NVIDIA's plugin
    advertise them on the reference node: GPUs 0-1 whole, GPU 2 as two shared replicas."""
    node = core.read_node(real.node.name)
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    rendered = real.run(real.helm, "template", "aiops", str(CHART), "-n", "aiops-system").stdout
    layout = GpuLayout.from_rendered([d for d in yaml.safe_load_all(rendered) if d])
    expected = {i.advertised_resource: str(len(layout.devices(i))) for i in layout.instances}
    assert expected == {"nvidia.com/gpu": "2", "nvidia.com/gpu.shared": "2"}
    assert {k: v for k, v in node.status.allocatable.items() if k.startswith("nvidia.com/")} == expected
    capacity, allocatable = (int(client.ApiClient().sanitize_for_serialization(x)["memory"].removesuffix("Ki"))
                             for x in (node.status.capacity, node.status.allocatable))
    assert allocatable < capacity, "the kubelet reserves memory for the system, as a real node does"


def test_pods_start_in_containers_and_report_the_figure(real, core, ns):
    image = real.ref("debian-python")
    latencies = []
    for i in range(10):
        name = f"start-{i}"
        t0 = time.monotonic()
        core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                        "spec": {"containers": [{"name": "main", "image": image,
                                                                 "imagePullPolicy": "Never",
                                                                 "command": ["sleep", "3600"]}],
                                                 "terminationGracePeriodSeconds": 0}})
        wait_until(lambda n=name: core.read_namespaced_pod(n, ns).status.phase == "Running", 60,
                   f"pod {name} Running", interval=0.02)
        latencies.append(time.monotonic() - t0)
    print(f"\nreal node: pod create -> Running p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms over {len(latencies)}")
    assert statistics.median(latencies) < 10


def test_gpus_are_admitted_by_the_kubelet_with_nvidia_visible_devices(real, core, ns):
    image = real.ref("debian-python")
    show = "import os; print(os.environ.get('NVIDIA_VISIBLE_DEVICES', ''))"
    whole = run_to_completion(core, ns, pod("whole", image, show, {"nvidia.com/gpu": "2"})).split()[0].split(",")
    assert len(whole) == 2 and len(set(whole)) == 2 and all(g.startswith("GPU-") for g in whole)
    shared = run_to_completion(core, ns, pod("shared", image, show, {"nvidia.com/gpu.shared": "1"})).strip()
    assert shared.startswith("GPU-") and shared not in whole, "the shared replica is GPU 2, never 0 or 1"
    # Two whole GPUs held by a running pod leave none: the kubelet's accounting, not ours.
    hold = pod("hold", image, "import time; time.sleep(600)", {"nvidia.com/gpu": "2"})
    core.create_namespaced_pod(ns, hold)
    wait_until(lambda: core.read_namespaced_pod("hold", ns).status.phase == "Running", 60, "the GPU holder")
    # The kubelet's record of the assignment, as monitoring reads it: the holder's two GPUs by UUID.
    reader = PodResources(real.node.paths.kubelet_root / "pod-resources" / "kubelet.sock")
    try:
        assert asyncio.run(reader.assigned()).get((ns, "hold")) == set(whole)
    finally:
        reader.close()
    core.create_namespaced_pod(ns, pod("extra", image, "print(1)", {"nvidia.com/gpu": "1"}))

    def unschedulable() -> str | None:
        for c in core.read_namespaced_pod("extra", ns).status.conditions or []:
            if c.type == "PodScheduled" and c.status == "False" and "nvidia.com/gpu" in (c.message or ""):
                return c.message
        return None

    assert "Insufficient nvidia.com/gpu" in wait_until(unschedulable, 30, "the extra GPU pod refused")


RESOLVE = """
import socket, sys
for name in sys.argv[1:]:
    try:
        print(name, socket.gethostbyname(name))
    except socket.gaierror as e:
        print(name, "NXDOMAIN" if e.errno in (socket.EAI_NONAME, -2) else f"error {e}")
"""


def test_cluster_dns_answers_cluster_names_and_nxdomain(real, core, ns):
    core.create_namespaced_service(ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                        "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}})
    web_ip = core.read_namespaced_service("web", ns).spec.cluster_ip
    body = pod("dns", real.ref("debian-python"), RESOLVE)
    body["spec"]["containers"][0]["args"] = ["kubernetes.default.svc.cluster.local", "web", f"web.{ns}.svc",
                                             f"missing.{ns}.svc.cluster.local"]
    body["spec"]["containers"][0]["command"] = ["python3", "-c", RESOLVE, "-"]

    def answers():
        core.delete_namespaced_pod("dns", ns, grace_period_seconds=0) if _exists(core, "dns", ns) else None
        wait_until(lambda: not _exists(core, "dns", ns), 30, "the previous DNS pod gone")
        lines = dict(line.split(" ", 1) for line in run_to_completion(core, ns, body).strip().splitlines())
        return lines if lines.get("web") == web_ip else None  # a new Service's name takes a moment

    lines = wait_until(answers, 60, "the new Service's name to resolve", interval=1)
    assert lines["kubernetes.default.svc.cluster.local"] == "10.96.0.1"
    assert lines[f"web.{ns}.svc"] == web_ip
    assert lines[f"missing.{ns}.svc.cluster.local"] == "NXDOMAIN"


def _exists(core, name: str, ns: str) -> bool:
    try:
        core.read_namespaced_pod(name, ns)
        return True
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise


def test_local_path_volumes_are_writable_by_non_root_pods(real, core, ns):
    core.create_namespaced_persistent_volume_claim(ns, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    body = pod("writer", real.ref("debian-python"),
               "open('/data/hello', 'w').write('hi'); print(open('/data/hello').read())", user=1000,
               volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}])
    body["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    assert run_to_completion(core, ns, body).strip() == "hi"
    claim = core.read_namespaced_persistent_volume_claim("data", ns)
    assert claim.status.phase == "Bound"
    volume = core.read_persistent_volume(claim.spec.volume_name)
    assert volume.spec.node_affinity.required.node_selector_terms[0].match_expressions[0].values == [real.node.name]

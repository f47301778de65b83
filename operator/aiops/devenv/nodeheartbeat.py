"""The node half of a kubelet's duties for simulated nodes: register the Node, keep its Lease and
Ready condition fresh so the node lifecycle controller never taints it, and register it again if
someone deletes it."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from kubernetes import client
from kubernetes.client.rest import ApiException

from aiops.devenv.nodespec import NodeSpec

log = logging.getLogger(__name__)

SIMULATED_ANNOTATION = "aiops.dev/simulated-node"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10


class NodeHeartbeat:
    """Registers `nodes` and, in `run()`, keeps them alive until `stop` is set."""

    def __init__(self, api_client: client.ApiClient, nodes: list[NodeSpec], stop: threading.Event):
        self.nodes = nodes
        self._stop = stop
        self._core = client.CoreV1Api(api_client)
        self._leases = client.CoordinationV1Api(api_client)
        self.kubelet_port: int | None = None  # the simulated kubelet API (kubeletserver.py), if any

    def register(self, node: NodeSpec) -> None:
        body = client.V1Node(metadata=client.V1ObjectMeta(
            name=node.name, labels=node.all_labels(), annotations={SIMULATED_ANNOTATION: "true"}))
        try:
            self._core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
            self._core.patch_node(node.name, {"metadata": {"labels": node.all_labels()}})
        self._report_status(node)
        self._renew_lease(node)

    def wait_schedulable(self, timeout: float = 60.0) -> None:
        """New nodes carry a not-ready taint until the node lifecycle controller sees them Ready;
        returning before it is lifted would make the first pods wait for no visible reason."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while True:
                taints = self._core.read_node(node.name).spec.taints or []
                if not any(t.key.startswith("node.kubernetes.io/") for t in taints):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {node.name} still tainted after {timeout:.0f}s: {taints}")
                time.sleep(0.2)

    def run(self) -> None:
        beats = 0
        while not self._stop.wait(HEARTBEAT_SECONDS):
            beats += 1
            for node in self.nodes:
                try:
                    self._renew_lease(node)
                    if beats % 3 == 0:
                        self._report_status(node)
                except ApiException as e:
                    if e.status == 404:  # someone deleted the Node: come back, as a kubelet does
                        self.register(node)
                    else:
                        log.warning("heartbeat for %s failed: %s", node.name, e.reason)
                except Exception as e:  # noqa: BLE001 - the API server may be restarting; try again next beat
                    log.warning("heartbeat for %s failed: %s", node.name, e)

    def _report_status(self, node: NodeSpec) -> None:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        healthy = [("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                   ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                   ("PIDPressure", "False", "KubeletHasSufficientPID"),
                   ("Ready", "True", "KubeletReady")]
        status = {
            "capacity": node.capacity(), "allocatable": node.allocatable(),
            "conditions": [{"type": t, "status": s, "reason": r, "message": "simulated by aiops",
                            "lastHeartbeatTime": now, "lastTransitionTime": now} for t, s, r in healthy],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": node.name}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                         "kubeletVersion": "v1.20.2-aiops-sim", "kubeProxyVersion": "v1.20.2-aiops-sim",
                         "containerRuntimeVersion": "aiops-sim://1", "kernelVersion": "",
                         "osImage": "simulated", "machineID": "", "systemUUID": "", "bootID": ""},
        }
        if self.kubelet_port:
            status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": self.kubelet_port}}
        self._core.patch_node_status(node.name, {"status": status})

    def _renew_lease(self, node: NodeSpec) -> None:
        spec = {"holderIdentity": node.name, "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        try:
            self._leases.patch_namespaced_lease(node.name, LEASE_NAMESPACE, {"spec": spec})
        except ApiException as e:
            if e.status != 404:
                raise
            uid = self._core.read_node(node.name).metadata.uid
            self._leases.create_namespaced_lease(LEASE_NAMESPACE, {
                "metadata": {"name": node.name, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": uid}]},
                "spec": spec})

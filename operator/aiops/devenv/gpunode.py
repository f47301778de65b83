"""A simulated GPU node: the kubelet's part of the bargain for a control plane without kubelets.

The idea is KWOK's: register Nodes that advertise `nvidia.com/gpu`, keep their Lease and Ready
condition fresh so the node lifecycle controller never taints them, and move pods that the real
scheduler bound to them through the phases a kubelet would report (Running/Ready with a podIP in
127.0.0.0/8, or a failure on demand). Scheduling, GPU accounting, Deployments, Jobs and garbage
collection stay with the real control plane; only the container runtime is imaginary.

Pod behaviour comes from, in order: rules added with `NodeAgent.inject()` (tests), the pod
annotation `sim.aiops.dev/behaviour` (demos: `never-ready`, `crash-loop`, `exit:3`, `succeed`,
`succeed-after:2`), else `run` (Running and Ready until deleted).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

BEHAVIOUR_ANNOTATION = "sim.aiops.dev/behaviour"
SIMULATED_ANNOTATION = "aiops.dev/simulated-node"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node; the default is the seed's machine: 3 GPUs, 128 GiB."""

    name: str = "aiops-gpu-0"
    gpus: int = 3
    gpu_resource: str = "nvidia.com/gpu"
    gpu_product: str = "NVIDIA-RTX-4000-Ada-Generation"
    gpu_memory_mib: int = 20475
    cpu: str = "32"
    memory: str = "128Gi"
    max_pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    # Other extended resources, e.g. a time-sliced shared GPU: {"nvidia.com/gpu.shared": "2"}.
    extended_resources: dict[str, str] = field(default_factory=dict)

    def capacity(self) -> dict[str, str]:
        # Quantities as strings: server-side apply on 1.20 rejects bare numbers.
        return {"cpu": self.cpu, "memory": self.memory, "pods": str(self.max_pods),
                "ephemeral-storage": "2Ti", self.gpu_resource: str(self.gpus),
                **self.extended_resources}

    def all_labels(self) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": self.gpu_product, "nvidia.com/gpu.count": str(self.gpus),
            "nvidia.com/gpu.memory": str(self.gpu_memory_mib), **self.labels,
        }


@dataclass(frozen=True)
class Behaviour:
    """What the imaginary containers of a pod do."""

    kind: str = "run"  # run | never-ready | crash-loop | exit | succeed
    exit_code: int = 0
    after_seconds: float = 0.0  # for exit/succeed: how long the containers run first
    message: str = ""  # termination message, as a container would write it

    @classmethod
    def parse(cls, text: str) -> "Behaviour":
        name, _, arg = text.strip().partition(":")
        if name in ("run", "never-ready", "crash-loop"):
            return cls(name)
        if name == "exit":
            return cls("exit", exit_code=int(arg or 1))
        if name == "succeed":
            return cls("succeed")
        if name == "succeed-after":
            return cls("succeed", after_seconds=float(arg or 1))
        raise ValueError(f"unknown simulated behaviour {text!r}")


RUN = Behaviour()
NEVER_READY = Behaviour("never-ready")
CRASH_LOOP = Behaviour("crash-loop")


def exit_with(code: int, after_seconds: float = 0.0, message: str = "") -> Behaviour:
    return Behaviour("exit", exit_code=code, after_seconds=after_seconds, message=message)


def succeed(after_seconds: float = 0.0, message: str = "") -> Behaviour:
    return Behaviour("succeed", after_seconds=after_seconds, message=message)


PodMatcher = Callable[[client.V1Pod], bool]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


@dataclass
class _PodState:
    behaviour: Behaviour
    ip: str
    started: dt.datetime
    restarts: int = 0
    next_step: float = 0.0  # monotonic time of the next timed transition; 0 = none pending
    finished_at: dt.datetime | None = None  # when the containers last exited
    last_status: dict | None = None


class NodeAgent:
    """Runs the simulated nodes until `stop()`; thread-based, so tests can drive it directly."""

    def __init__(self, api_client: client.ApiClient, nodes: list[NodeSpec] | None = None,
                 crash_period: float = 1.0, ip_base: str = "127.100.0.1"):
        self.api = api_client
        self.nodes = nodes or [NodeSpec()]
        self.crash_period = crash_period
        self._core = client.CoreV1Api(api_client)
        self._leases = client.CoordinationV1Api(api_client)
        self._rules: list[tuple[PodMatcher, Behaviour]] = []
        self._pods: dict[str, _PodState] = {}
        self._events: queue.Queue[tuple[str, client.V1Pod]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_ip = ipaddress.IPv4Address(ip_base)
        self._used_ips: set[str] = set()
        self._lock = threading.Lock()

    # ---- public API ----------------------------------------------------------------------------
    def start(self) -> "NodeAgent":
        for node in self.nodes:
            self._register(node)
        self._spawn(self._heartbeat_loop, "heartbeat")
        for node in self.nodes:
            self._spawn(lambda n=node: self._watch_loop(n), f"watch-{node.name}")
        self._spawn(self._pod_loop, "pods")
        self._wait_schedulable()
        return self

    def _wait_schedulable(self, timeout: float = 60.0) -> None:
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

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"gpunode-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def inject(self, matcher: PodMatcher, behaviour: Behaviour) -> Callable[[], None]:
        """Pods matching `matcher` (seen from now on) behave as told; returns an undo function."""
        rule = (matcher, behaviour)
        with self._lock:
            self._rules.insert(0, rule)
        return lambda: self._rules.remove(rule) if rule in self._rules else None

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def pod_ip(self, namespace: str, name: str) -> str | None:
        pod = self._core.read_namespaced_pod(name, namespace)
        return pod.status.pod_ip

    # ---- nodes ---------------------------------------------------------------------------------
    def _register(self, node: NodeSpec) -> None:
        body = client.V1Node(metadata=client.V1ObjectMeta(
            name=node.name, labels=node.all_labels(), annotations={SIMULATED_ANNOTATION: "true"}))
        try:
            self._core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
            self._core.patch_node(node.name, {"metadata": {"labels": node.all_labels()}})
        self._report_node_status(node)
        self._renew_lease(node)

    def _report_node_status(self, node: NodeSpec) -> None:
        now = _now().isoformat()
        healthy = [("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                   ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                   ("PIDPressure", "False", "KubeletHasSufficientPID"),
                   ("Ready", "True", "KubeletReady")]
        status = {
            "capacity": node.capacity(), "allocatable": node.capacity(),
            "conditions": [{"type": t, "status": s, "reason": r, "message": "simulated by aiops",
                            "lastHeartbeatTime": now, "lastTransitionTime": now} for t, s, r in healthy],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": node.name}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                         "kubeletVersion": "v1.20.2-aiops-sim", "kubeProxyVersion": "v1.20.2-aiops-sim",
                         "containerRuntimeVersion": "aiops-sim://1", "kernelVersion": "",
                         "osImage": "simulated", "machineID": "", "systemUUID": "", "bootID": ""},
        }
        self._core.patch_node_status(node.name, {"status": status})

    def _renew_lease(self, node: NodeSpec) -> None:
        spec = {"holderIdentity": node.name, "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
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

    def _heartbeat_loop(self) -> None:
        beats = 0
        while not self._stop.wait(HEARTBEAT_SECONDS):
            beats += 1
            for node in self.nodes:
                try:
                    self._renew_lease(node)
                    if beats % 3 == 0:
                        self._report_node_status(node)
                except ApiException as e:
                    if e.status == 404:  # someone deleted the Node: come back, as a kubelet does
                        self._register(node)
                    else:
                        log.warning("heartbeat for %s failed: %s", node.name, e.reason)
                except Exception as e:  # the API server may be restarting; try again next beat
                    log.warning("heartbeat for %s failed: %s", node.name, e)

    # ---- pods ----------------------------------------------------------------------------------
    def _watch_loop(self, node: NodeSpec) -> None:
        selector = f"spec.nodeName={node.name}"
        core = client.CoreV1Api(self.api)
        while not self._stop.is_set():
            try:
                listed = core.list_pod_for_all_namespaces(field_selector=selector)
                for pod in listed.items:
                    self._events.put(("SYNC", pod))
                version = listed.metadata.resource_version
                while not self._stop.is_set():
                    stream = watch.Watch().stream(core.list_pod_for_all_namespaces,
                                                  field_selector=selector, resource_version=version,
                                                  timeout_seconds=5)
                    for event in stream:
                        self._events.put((event["type"], event["object"]))
                        version = event["object"].metadata.resource_version
            except ApiException as e:
                if e.status != 410:  # 410: our resourceVersion expired; re-list
                    log.warning("pod watch on %s failed: %s", node.name, e.reason)
                    self._stop.wait(1)
            except Exception as e:
                log.warning("pod watch on %s failed: %s", node.name, e)
                self._stop.wait(1)

    def _pod_loop(self) -> None:
        while not self._stop.is_set():
            try:
                kind, pod = self._events.get(timeout=0.2)
            except queue.Empty:
                kind, pod = None, None
            try:
                if pod is not None:
                    self._on_pod(kind, pod)
                self._timed_transitions()
            except ApiException as e:
                if e.status not in (404, 409):  # gone, or changed under us: the watch brings it again
                    log.warning("updating a pod failed: %s", e.reason)
            except Exception:
                log.exception("simulated node: unexpected error while handling a pod")

    def _behaviour_for(self, pod: client.V1Pod) -> Behaviour:
        with self._lock:
            for matcher, behaviour in self._rules:
                if matcher(pod):
                    return behaviour
        text = (pod.metadata.annotations or {}).get(BEHAVIOUR_ANNOTATION)
        if text:
            try:
                return Behaviour.parse(text)
            except ValueError:
                log.warning("pod %s/%s: %r is not a behaviour; running it normally",
                            pod.metadata.namespace, pod.metadata.name, text)
        return RUN

    def _on_pod(self, kind: str, pod: client.V1Pod) -> None:
        uid = pod.metadata.uid
        if kind == "DELETED":
            self._forget(uid)
            return
        if pod.metadata.deletion_timestamp:
            # The kubelet confirms graceful deletion once containers stopped; ours stop at once.
            self._forget(uid)
            self._core.delete_namespaced_pod(
                pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0,
                                            preconditions=client.V1Preconditions(uid=uid)))
            return
        if pod.status.phase in ("Succeeded", "Failed") and uid not in self._pods:
            return  # finished before we (re)started: a kubelet would leave it alone too
        state = self._pods.get(uid)
        if state is None:
            state = self._pods[uid] = _PodState(
                behaviour=self._behaviour_for(pod), ip=pod.status.pod_ip or self._allocate_ip(),
                started=_now(), next_step=time.monotonic())
            self._used_ips.add(state.ip)
            kind = state.behaviour.kind
            if kind == "crash-loop" or (kind in ("exit", "succeed") and not state.behaviour.after_seconds):
                state.finished_at = state.started
            if kind in ("exit", "succeed") and state.behaviour.after_seconds:
                state.next_step = time.monotonic() + state.behaviour.after_seconds
            elif kind in ("crash-loop", "exit", "succeed"):
                # Restarting containers that exit keep crashing: count restarts as a kubelet does.
                state.next_step = time.monotonic() + self.crash_period
        self._report(pod, state)

    def _forget(self, uid: str) -> None:
        state = self._pods.pop(uid, None)
        if state:
            self._used_ips.discard(state.ip)

    def _allocate_ip(self) -> str:
        while str(self._next_ip) in self._used_ips:
            self._next_ip += 1
        ip = str(self._next_ip)
        self._next_ip += 1
        return ip

    def _timed_transitions(self) -> None:
        now = time.monotonic()
        for uid, state in list(self._pods.items()):
            if state.next_step and now >= state.next_step and state.last_status:
                if state.finished_at is not None:  # exited before: the restart crashes again
                    state.restarts += 1
                state.finished_at = _now()
                state.next_step = now + self.crash_period
                ref = state.last_status["_ref"]
                pod = self._core.read_namespaced_pod(ref[1], ref[0])
                if pod.metadata.uid == uid and not pod.metadata.deletion_timestamp:
                    self._report(pod, state, force=True)

    def _report(self, pod: client.V1Pod, state: _PodState, force: bool = False) -> None:
        status = pod_status(pod, state.behaviour, ip=state.ip, started=state.started,
                            restarts=state.restarts, finished_at=state.finished_at)
        if status["phase"] in ("Succeeded", "Failed"):
            state.next_step = 0.0  # terminal: nothing restarts
        key = status
        if not force and state.last_status and state.last_status.get("_key") == key:
            return
        self._core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace,
                                               {"status": status})
        state.last_status = {"_key": key, "_ref": (pod.metadata.namespace, pod.metadata.name)}


def pod_status(pod: client.V1Pod, behaviour: Behaviour, ip: str, started: dt.datetime,
               restarts: int = 0, finished_at: dt.datetime | None = None) -> dict:
    """The status a kubelet would report for `pod` under `behaviour` (pure; tested directly).

    `finished_at` is when the containers last exited (None: they have not exited yet).
    """
    ts = started.isoformat()
    end = (finished_at or started).isoformat()
    restart_policy = pod.spec.restart_policy or "Always"
    kind = behaviour.kind
    if kind in ("exit", "succeed") and finished_at is None:
        kind = "run"
    if kind == "exit" and restart_policy != "Never":
        kind = "crash-loop"  # a restarting container that keeps exiting is a crash loop
    if kind == "succeed" and restart_policy == "Always":
        kind = "crash-loop"  # Always restarts even clean exits: Deployment pods must not exit

    phase, ready = "Running", kind == "run"
    exit_code = behaviour.exit_code if behaviour.kind == "exit" else 1
    if kind == "crash-loop":
        state = {"waiting": {"reason": "CrashLoopBackOff",
                             "message": f"back-off restarting failed container (simulated, exit {exit_code})"}}
        last = {"terminated": {"exitCode": exit_code, "reason": "Error", "startedAt": ts,
                               "finishedAt": end, "message": behaviour.message or None}}
    elif kind in ("exit", "succeed"):
        code = 0 if kind == "succeed" else behaviour.exit_code
        phase = "Succeeded" if code == 0 else "Failed"
        state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                "startedAt": ts, "finishedAt": end,
                                "message": behaviour.message or None}}
        last = {}
    else:
        state, last = {"running": {"startedAt": ts}}, {}

    containers = [{
        "name": c.name, "image": c.image, "imageID": f"sim://{c.image}",
        "containerID": f"sim://{pod.metadata.uid}/{c.name}", "ready": ready,
        "started": "running" in state, "restartCount": restarts, "state": state, "lastState": last,
    } for c in pod.spec.containers]
    not_ready_reason = None if ready else ("PodCompleted" if phase != "Running" else "ContainersNotReady")

    def cond(kind_: str, ok: bool) -> dict:
        c = {"type": kind_, "status": "True" if ok else "False", "lastTransitionTime": ts}
        if not ok:
            c["reason"] = not_ready_reason
        return c

    return {
        "phase": phase, "hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": ts,
        "conditions": [cond("Initialized", True), cond("Ready", ready), cond("ContainersReady", ready),
                       {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts}],
        "containerStatuses": containers,
        "initContainerStatuses": [{
            "name": c.name, "image": c.image, "imageID": f"sim://{c.image}", "ready": True,
            "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                        "startedAt": ts, "finishedAt": ts}},
        } for c in (pod.spec.init_containers or [])] or None,
    }

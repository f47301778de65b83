"""A simulated GPU node: the kubelet's part of the bargain for a control plane without kubelets.

The idea is KWOK's: register Nodes that advertise `nvidia.com/gpu`, keep their Lease and Ready
condition fresh so the node lifecycle controller never taints them, and move pods that the real
scheduler bound to them through the phases a kubelet would report (Running/Ready with a podIP in
127.0.0.0/8, or a failure on demand). Scheduling, GPU accounting, Deployments, Jobs and garbage
collection stay with the real control plane.

What runs in a pod comes from, in order:
1. rules added with `NodeAgent.inject()` (tests) and the pod annotation `sim.aiops.dev/behaviour`
   (demos: `never-ready`, `crash-loop`, `exit:3`, `succeed`, `succeed-after:2`): an imaginary
   container that behaves as told;
2. a launcher (see launchers.py) matching one of its containers: the real program runs as a local
   process (the real `tritonserver`, the project's worker, `python`), with probes performed against
   it, restarts, exit codes and termination messages as a kubelet reports them (podruntime.py);
3. else `run`: imaginary, Running and Ready until deleted.

Beside the pods, the agent plays two more parts of a real node's environment: a local-path
provisioner for PersistentVolumeClaims (storage.py: default StorageClass `local-path`, a directory
per claim under `volumes_root`) and cluster DNS for the Python processes it launches
(servicedns.py: `<svc>.<ns>.svc:<port>` to a ready endpoint, from a table it keeps current).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.utils.quantity import parse_quantity

from aiops.api.common import DEFAULT_SHARED_GPU_RESOURCE
from aiops.devenv.kubeletevents import record_event
from aiops.devenv.launchers import DEFAULT_LAUNCHERS, Launcher, TritonRuntime
from aiops.devenv.podenv import api_claim_lookup, api_lookup
from aiops.devenv.podruntime import NodeRuntime, PodProcesses, plan_pod, stop_all
from aiops.devenv.podstatus import carry_transition_times, process_pod_status
from aiops.devenv.processes import PidRegistry, RuntimeOptions
from aiops.devenv.servicedns import ServiceDnsPublisher
from aiops.devenv.storage import LocalPathProvisioner
from aiops.devenv.tritonruntime import TritonUnavailable, locate_triton_runtime, put_triton_on_path

log = logging.getLogger(__name__)

BEHAVIOUR_ANNOTATION = "sim.aiops.dev/behaviour"
SIMULATED_ANNOTATION = "aiops.dev/simulated-node"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
RETRY_SECONDS = 2.0  # how soon a pod whose processes could not start is tried again
WATCH_SECONDS = 2  # a watch request's lifetime: bounds how long `stop()` waits for the watch thread


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node; the default is the reference node (3 GPUs, 128 GiB) advertising what
    the chart's gpuLayout makes NVIDIA's device plugin advertise there: GPUs 0 and 1 whole
    (`nvidia.com/gpu: 2`), GPU 2 as two time-sliced replicas (`nvidia.com/gpu.shared: 2`, for Milvus
    and training). tests/unit/test_sim_node_resources.py holds the default to the chart's layout.

    Allocatable memory is the capacity less what a kubelet keeps for the system and its eviction
    threshold (`reserved_memory`), as on a real node; the rest of allocatable equals capacity."""

    name: str = "aiops-gpu-0"
    gpus: int = 2  # whole GPUs, as the plugin instance without sharing advertises them
    gpu_resource: str = "nvidia.com/gpu"
    gpu_product: str = "NVIDIA-RTX-4000-Ada-Generation"
    gpu_memory_mib: int = 20475
    physical_gpus: int = 3  # GPU feature discovery's nvidia.com/gpu.count: every GPU of the machine
    cpu: str = "32"
    memory: str = "128Gi"
    reserved_memory: str = "3Gi"  # --system-reserved + --kube-reserved + the eviction threshold
    max_pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    shared_gpus: int = 2  # replicas of the time-sliced GPU (0: no shared resource)
    shared_gpu_resource: str = DEFAULT_SHARED_GPU_RESOURCE
    # Other extended resources, e.g. {"example.com/fpga": "1"}.
    extended_resources: dict[str, str] = field(default_factory=dict)

    def capacity(self) -> dict[str, str]:
        # Quantities as strings: server-side apply on 1.20 rejects bare numbers.
        shared = {self.shared_gpu_resource: str(self.shared_gpus)} if self.shared_gpus else {}
        return {"cpu": self.cpu, "memory": self.memory, "pods": str(self.max_pods),
                "ephemeral-storage": "2Ti", self.gpu_resource: str(self.gpus),
                **shared, **self.extended_resources}

    def allocatable(self) -> dict[str, str]:
        memory = parse_quantity(self.memory) - parse_quantity(self.reserved_memory)
        return {**self.capacity(), "memory": f"{int(memory) // 2**20}Mi"}

    def all_labels(self) -> dict[str, str]:
        # GPU feature discovery's labels; with time-slicing it adds the replica count and strategy.
        sharing = {"nvidia.com/gpu.replicas": str(self.shared_gpus),
                   "nvidia.com/gpu.sharing-strategy": "time-slicing"} if self.shared_gpus else {}
        return {
            "kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": self.gpu_product,
            "nvidia.com/gpu.count": str(max(self.physical_gpus, self.gpus)),
            "nvidia.com/gpu.memory": str(self.gpu_memory_mib), **sharing, **self.labels,
        }


@dataclass(frozen=True)
class Behaviour:
    """What the imaginary containers of a pod do."""

    kind: str = "run"  # run | never-ready | crash-loop | exit | succeed
    exit_code: int = 0
    after_seconds: float = 0.0  # for exit/succeed: how long the containers run first
    message: str = ""  # termination message, as a container would write it

    @classmethod
    def parse(cls, text: str) -> Behaviour:
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
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class _PodState:
    behaviour: Behaviour
    ip: str
    started: dt.datetime
    restarts: int = 0
    next_step: float = 0.0  # monotonic time of the next timed transition; 0 = none pending
    finished_at: dt.datetime | None = None  # when the containers last exited
    last_status: dict | None = None
    pod: client.V1Pod | None = None  # the latest version seen (process pods report from it)
    procs: PodProcesses | None = None  # real processes, when a launcher runs the pod
    terminating: bool = False  # its processes are being stopped for a deletion
    reported: dict | None = None  # the status last patched, for condition transition times
    retry_at: float = 0.0  # when to try again to start processes that could not start


def default_state_dir(api_client: client.ApiClient, nodes: list[NodeSpec]) -> Path:
    """One state dir per API server and node set: a restarted agent finds (and reaps) what its
    predecessor started, while agents of other clusters or other nodes never touch it."""
    url = urlparse(api_client.configuration.host)
    names = "+".join(sorted(n.name for n in nodes))
    key = f"{url.hostname}-{url.port}-{hashlib.sha256(names.encode()).hexdigest()[:8]}"
    return Path(tempfile.gettempdir()) / f"aiops-node-agent-{key}"


class NodeAgent:
    """Runs the simulated nodes until `stop()`; thread-based, so tests can drive it directly.

    `state_dir` holds pod working dirs, logs, pid records and the DNS table (default: per API
    server and node set, under the temp dir); `volumes_root` holds the volumes the provisioner
    creates (`<root>/pvc-<uid>_<ns>_<claim>`) and backs claims bound to no local volume
    (`<root>/<ns>/<claim>`), default `<state_dir>/volumes`; `launchers=()` makes every pod
    imaginary (benchmarks); `provision_volumes=False` leaves claims to someone else;
    `runtime` tunes probe timing and back-off (the back-off starts at `crash_period`)."""

    def __init__(self, api_client: client.ApiClient, nodes: list[NodeSpec] | None = None,
                 crash_period: float = 1.0, ip_base: str | None = None,
                 state_dir: Path | None = None, volumes_root: Path | None = None,
                 launchers: tuple[Launcher, ...] | list[Launcher] = DEFAULT_LAUNCHERS,
                 runtime: RuntimeOptions | None = None, provision_volumes: bool = True):
        self.api = api_client
        self.nodes = nodes or [NodeSpec()]
        self.crash_period = crash_period
        self.state_dir = Path(state_dir or default_state_dir(api_client, self.nodes))
        self.volumes_root = Path(volumes_root or self.state_dir / "volumes")
        self.launchers = tuple(launchers)
        self.provision_volumes = provision_volumes
        self.dns_file = self.state_dir / "dns" / "services.json"
        self.options = runtime or RuntimeOptions(backoff_base=crash_period,
                                                 backoff_cap=30 * crash_period)
        self._registry: PidRegistry | None = None
        self._triton: tuple[TritonRuntime | None, str] | None = None
        self._core = client.CoreV1Api(api_client)
        self._leases = client.CoordinationV1Api(api_client)
        self._rules: list[tuple[PodMatcher, Behaviour]] = []
        self._pods: dict[str, _PodState] = {}
        self._events: queue.Queue[tuple[str, object]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # A random /24 of 127.100/16 by default: agents of concurrent test sessions on one
        # machine must not hand out the same pod IP, or their real servers' ports would collide.
        self._next_ip = ipaddress.IPv4Address(ip_base or f"127.100.{random.randint(1, 254)}.1")
        self._used_ips: set[str] = set()
        self._lock = threading.Lock()

    # ---- public API ----------------------------------------------------------------------------
    def start(self) -> NodeAgent:
        # Worker pods (validation) find `tritonserver` on PATH, as in their image: the wheel's here.
        why = put_triton_on_path()
        if why is not None:
            log.warning("worker pods will find no tritonserver: %s", why)
        self._registry = PidRegistry(self.state_dir / "pids")
        reaped = self._registry.reap()
        if reaped:
            log.warning("stopped %d process(es) left running by a previous node agent", len(reaped))
        shutil.rmtree(self.state_dir / "pods", ignore_errors=True)
        for node in self.nodes:
            self._register(node)
        self._start_node_services()
        self._spawn(self._heartbeat_loop, "heartbeat")
        for node in self.nodes:
            self._spawn(lambda n=node: self._watch_loop(n), f"watch-{node.name}")
        self._spawn(self._pod_loop, "pods")
        self._wait_schedulable()
        return self

    def _start_node_services(self) -> None:
        """The volume provisioner and the DNS table, each on watches of its own."""
        if self.provision_volumes:
            provisioner = LocalPathProvisioner(self.api, [n.name for n in self.nodes], self.volumes_root,
                                               self._stop)
            provisioner.ensure_storage_class()
            self._spawn(provisioner.claims.run, "claims")
            self._spawn(provisioner.volumes.run, "volumes")
        dns = ServiceDnsPublisher(self.api, self.dns_file, self._stop)
        self._spawn(dns.services.run, "services")
        self._spawn(dns.endpoints.run, "endpoints")

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

    def stop(self, grace: float = 15.0) -> None:
        """Stops the node and every process it started (SIGTERM, SIGKILL after `grace`). The
        grace outlasts milvusserver's own 10 s for its Milvus: that server runs in a session of
        its own, so killing the container's process group sooner would leave it running."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        stop_all([s.procs for s in self._pods.values() if s.procs], grace)
        self._tidy_state_dir()

    def _tidy_state_dir(self) -> None:
        """Nothing runs any more: drop pod dirs and logs, keep claim data (a PV outlives its
        node's kubelet), and leave no empty dirs behind in the temp dir."""
        for name in ("pods", "triton", "dns"):
            shutil.rmtree(self.state_dir / name, ignore_errors=True)
        for root, _dirs, _files in sorted(os.walk(self.state_dir), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(root)  # only empty ones go

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

    def _procs(self, namespace: str, name: str) -> PodProcesses | None:
        for state in list(self._pods.values()):
            pod = state.pod
            if state.procs and pod and (pod.metadata.namespace, pod.metadata.name) == (namespace, name):
                return state.procs
        return None

    def container_log(self, namespace: str, name: str, container: str | None = None) -> str:
        """What the pod's real processes printed (all their runs); '' for imaginary pods."""
        procs = self._procs(namespace, name)
        return procs.log(container) if procs else ""

    def container_pids(self, namespace: str, name: str) -> dict[str, int]:
        """Container name -> pid of its running process (none while waiting or imaginary)."""
        procs = self._procs(namespace, name)
        return procs.pids() if procs else {}

    def claim_path(self, namespace: str, claim: str) -> Path:
        """The local directory behind a PersistentVolumeClaim on this node: its bound volume's,
        else where an unbound (or not yet created) claim's data would go."""
        bound = api_claim_lookup(self._core)(namespace, claim)
        return Path(bound) if bound else self.volumes_root / namespace / claim

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
                except Exception as e:  # noqa: BLE001 - the API server may be restarting; try again next beat
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
                                                  timeout_seconds=WATCH_SECONDS)
                    for event in stream:
                        self._events.put((event["type"], event["object"]))
                        version = event["object"].metadata.resource_version
            except ApiException as e:
                if e.status != 410:  # 410: our resourceVersion expired; re-list
                    log.warning("pod watch on %s failed: %s", node.name, e.reason)
                    self._stop.wait(1)
            except Exception as e:  # noqa: BLE001 - a dropped watch is re-listed below
                log.warning("pod watch on %s failed: %s", node.name, e)
                self._stop.wait(1)

    def _pod_loop(self) -> None:
        while not self._stop.is_set():
            try:
                kind, item = self._events.get(timeout=0.2)
            except queue.Empty:
                kind, item = None, None
            try:
                if kind == "EVENT":
                    self._emit_event(*item)
                elif kind == "STOPPED":
                    self._confirm_deletion(item)
                elif item is not None:
                    self._on_pod(kind, item)
                self._timed_transitions()
            except ApiException as e:
                if e.status not in (404, 409):  # gone, or changed under us: the watch brings it again
                    log.warning("updating a pod failed: %s", e.reason)
            except Exception:
                log.exception("simulated node: unexpected error while handling a pod")

    def _fault_for(self, pod: client.V1Pod) -> Behaviour | None:
        """An injected rule or the behaviour annotation: these win over launchers, so a test can
        make any pod, Triton's included, never-ready or crash-looping without a real failure."""
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
        return None

    def _behaviour_for(self, pod: client.V1Pod) -> Behaviour:
        return self._fault_for(pod) or RUN

    def _node_runtime(self) -> NodeRuntime:
        return NodeRuntime(self.state_dir, self.volumes_root, self._registry, self.options,
                           self.launchers, self._triton_runtime, sys.executable,
                           claims=api_claim_lookup(self._core), dns_file=self.dns_file)

    def _triton_runtime(self) -> tuple[TritonRuntime | None, str]:
        if self._triton is None:
            try:
                self._triton = (locate_triton_runtime(self.state_dir), "")
            except TritonUnavailable as e:
                self._triton = (None, str(e))
        return self._triton

    def _start_processes(self, pod: client.V1Pod, state: _PodState) -> bool:
        """Runs the pod as local processes if a launcher knows one of its containers."""
        launchers = plan_pod(pod, self.launchers)
        if not launchers:
            return False
        uid = pod.metadata.uid
        state.procs = PodProcesses(
            pod, state.ip, self._node_runtime(), launchers,
            on_change=lambda: self._events.put(("TICK", None)),
            on_event=lambda container, kind, reason, message: self._events.put(
                ("EVENT", (uid, container, kind, reason, message))))
        state.procs.start(api_lookup(self._core))
        if state.procs.error:  # e.g. a ConfigMap not created yet: the kubelet retries too
            state.retry_at = time.monotonic() + RETRY_SECONDS
        return True

    def _on_pod(self, kind: str, pod: client.V1Pod) -> None:
        uid = pod.metadata.uid
        if kind == "TICK":
            return
        if kind == "DELETED":
            self._forget(uid)
            return
        state = self._pods.get(uid)
        if pod.metadata.deletion_timestamp:
            if state and state.procs:
                self._stop_for_deletion(pod, state)
                return
            # The kubelet confirms graceful deletion once containers stopped; ours stop at once.
            self._confirm_deletion(pod)
            return
        if pod.status.phase in ("Succeeded", "Failed") and uid not in self._pods:
            return  # finished before we (re)started: a kubelet would leave it alone too
        if state is None:
            fault = self._fault_for(pod)
            state = self._pods[uid] = _PodState(
                behaviour=fault or RUN, ip=pod.status.pod_ip or self._allocate_ip(),
                started=_now(), pod=pod)  # no timed step: only exits and crash loops have one
            self._used_ips.add(state.ip)
            if fault is None and self._start_processes(pod, state):
                self._report(pod, state)
                return
            kind = state.behaviour.kind
            if kind == "crash-loop" or (kind in ("exit", "succeed") and not state.behaviour.after_seconds):
                state.finished_at = state.started
            if kind in ("exit", "succeed") and state.behaviour.after_seconds:
                state.next_step = time.monotonic() + state.behaviour.after_seconds
            elif kind in ("crash-loop", "exit", "succeed"):
                # Restarting containers that exit keep crashing: count restarts as a kubelet does.
                state.next_step = time.monotonic() + self.crash_period
        state.pod = pod
        self._report(pod, state)

    def _stop_for_deletion(self, pod: client.V1Pod, state: _PodState) -> None:
        """SIGTERM now, SIGKILL after the pod's grace period, then confirm the deletion; in a
        thread, so one slow container never holds up the other pods."""
        if state.terminating:
            return
        state.terminating = True
        grace = pod.metadata.deletion_grace_period_seconds
        grace = float(grace if grace is not None else pod.spec.termination_grace_period_seconds or 30)

        def stop() -> None:
            state.procs.stop(grace)
            self._events.put(("STOPPED", pod))

        threading.Thread(target=stop, name=f"gpunode-stop-{pod.metadata.name}", daemon=True).start()

    def _confirm_deletion(self, pod: client.V1Pod) -> None:
        uid = pod.metadata.uid
        self._forget(uid)
        self._core.delete_namespaced_pod(
            pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0,
            body=client.V1DeleteOptions(grace_period_seconds=0,
                                        preconditions=client.V1Preconditions(uid=uid)))

    def _forget(self, uid: str) -> None:
        state = self._pods.pop(uid, None)
        if state:
            self._used_ips.discard(state.ip)
            if state.procs and not state.terminating:  # deleted without grace: stop them anyway
                state.terminating = True
                threading.Thread(target=state.procs.stop, args=(0.0,), daemon=True).start()

    def _emit_event(self, uid: str, container: str, kind: str, reason: str, message: str) -> None:
        state = self._pods.get(uid)
        if state is not None and state.pod is not None:
            record_event(self._core, state.pod, container, kind, reason, message)

    def _allocate_ip(self) -> str:
        while str(self._next_ip) in self._used_ips:
            self._next_ip += 1
        ip = str(self._next_ip)
        self._next_ip += 1
        return ip

    def _timed_transitions(self) -> None:
        now = time.monotonic()
        for uid, state in list(self._pods.items()):
            if state.procs:
                if state.terminating or state.pod is None:
                    continue
                if state.procs.error and now >= state.retry_at:
                    self._start_processes(state.pod, state)
                self._report(state.pod, state)  # patched only when something changed
                continue
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
        if state.procs:
            status = process_pod_status(pod, state.procs.snapshots(), ip=state.ip, started=state.started)
        else:
            status = pod_status(pod, state.behaviour, ip=state.ip, started=state.started,
                                restarts=state.restarts, finished_at=state.finished_at)
        if status["phase"] in ("Succeeded", "Failed"):
            state.next_step = 0.0  # terminal: nothing restarts
        key = status
        if not force and state.last_status and state.last_status.get("_key") == key:
            return
        stamped = carry_transition_times(status, state.reported, _now().isoformat())
        self._core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace,
                                               {"status": stamped})
        state.reported = stamped
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

    # A never-ready container's probes never pass, its startupProbe included.
    containers = [{
        "name": c.name, "image": c.image, "imageID": f"sim://{c.image}",
        "containerID": f"sim://{pod.metadata.uid}/{c.name}", "ready": ready,
        "started": "running" in state and not (kind == "never-ready" and c.startup_probe is not None),
        "restartCount": restarts, "state": state, "lastState": last,
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

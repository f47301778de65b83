"""A simulated GPU node: the kubelet's part of the bargain for a control plane without kubelets.

The idea is KWOK's: register Nodes that advertise `nvidia.com/gpu`, keep their Lease and Ready
condition fresh so the node lifecycle controller never taints them (nodeheartbeat.py), and move
pods that the real scheduler bound to them through the phases a kubelet would report (Running/Ready
with a podIP in 127.0.0.0/8, or a failure on demand). Scheduling, GPU accounting, Deployments, Jobs
and garbage collection stay with the real control plane.

What runs in a pod comes from, in order:
1. rules added with `NodeAgent.inject()` (tests) and the pod annotation `sim.aiops.dev/behaviour`
   (demos: `never-ready`, `crash-loop`, `exit:3`, `succeed`, `succeed-after:2`): an imaginary
   container that behaves as told (podbehaviour.py);
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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from kubernetes import client
from kubernetes.client.rest import ApiException

from aiops.devenv.kubeletevents import record_event
from aiops.devenv.kubeletserver import KubeletServer
from aiops.devenv.launchers import DEFAULT_LAUNCHERS, Launcher, TritonRuntime
from aiops.devenv.nodeheartbeat import NodeHeartbeat
from aiops.devenv.nodespec import NodeSpec
from aiops.devenv.podbehaviour import RUN, Behaviour, FaultRules, PodMatcher, pod_status
from aiops.devenv.podenv import api_claim_lookup, api_lookup
from aiops.devenv.podruntime import NodeRuntime, PodProcesses, plan_pod, stop_all
from aiops.devenv.podstatus import carry_transition_times, process_pod_status
from aiops.devenv.podwatch import watch_node_pods
from aiops.devenv.processes import PidRegistry, RuntimeOptions
from aiops.devenv.servicedns_table import ServiceDnsPublisher
from aiops.devenv.storage import LocalPathProvisioner
from aiops.devenv.tritonruntime import TritonUnavailable, locate_triton_runtime, put_triton_on_path

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0  # how soon a pod whose processes could not start is tried again


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
                 runtime: RuntimeOptions | None = None, provision_volumes: bool = True,
                 kubelet_tls: tuple[Path, Path, Path] | None = None):
        self.api = api_client
        # (serving certificate, key, cluster CA) of the node's kubelet API (container logs through
        # the API server); None: no kubelet API, the API server answers log reads with an error.
        self.kubelet_tls = kubelet_tls
        self._kubelet: KubeletServer | None = None
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
        self._faults = FaultRules()
        self._pods: dict[str, _PodState] = {}
        self._events: queue.Queue[tuple[str, object]] = queue.Queue()
        self._stop = threading.Event()
        self._heartbeat = NodeHeartbeat(api_client, self.nodes, self._stop)
        self._threads: list[threading.Thread] = []
        # A random /24 of 127.100/16 by default: agents of concurrent test sessions on one
        # machine must not hand out the same pod IP, or their real servers' ports would collide.
        self._next_ip = ipaddress.IPv4Address(ip_base or f"127.100.{random.randint(1, 254)}.1")
        self._used_ips: set[str] = set()

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
        if self.kubelet_tls:
            self._kubelet = KubeletServer(self._log_file, *self.kubelet_tls).start()
            self._heartbeat.kubelet_port = self._kubelet.port
        for node in self.nodes:
            self._heartbeat.register(node)
        self._start_node_services()
        self._spawn(self._heartbeat.run, "heartbeat")
        for node in self.nodes:
            self._spawn(lambda n=node: watch_node_pods(self.api, n.name, self._events, self._stop),
                        f"watch-{node.name}")
        self._spawn(self._pod_loop, "pods")
        self._heartbeat.wait_schedulable()
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

    def stop(self, grace: float = 15.0) -> None:
        """Stops the node and every process it started (SIGTERM, SIGKILL after `grace`). The
        grace outlasts milvusserver's own 10 s for its Milvus: that server runs in a session of
        its own, so killing the container's process group sooner would leave it running."""
        self._stop.set()
        if self._kubelet is not None:
            self._kubelet.stop()
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
        return self._faults.add(matcher, behaviour)

    def clear_faults(self) -> None:
        self._faults.clear()

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

    def _log_file(self, namespace: str, name: str, container: str) -> Path | None:
        """Where the kubelet API finds a container's log; None for imaginary pods."""
        procs = self._procs(namespace, name)
        if procs is None or container not in procs.containers:
            return None
        return procs.dir / "logs" / f"{container}.log"

    def container_pids(self, namespace: str, name: str) -> dict[str, int]:
        """Container name -> pid of its running process (none while waiting or imaginary)."""
        procs = self._procs(namespace, name)
        return procs.pids() if procs else {}

    def claim_path(self, namespace: str, claim: str) -> Path:
        """The local directory behind a PersistentVolumeClaim on this node: its bound volume's,
        else where an unbound (or not yet created) claim's data would go."""
        bound = api_claim_lookup(self._core)(namespace, claim)
        return Path(bound) if bound else self.volumes_root / namespace / claim

    # ---- pods ----------------------------------------------------------------------------------
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
            # Faults win over launchers: a test can make any pod, Triton's included, never-ready or
            # crash-looping without a real failure.
            fault = self._faults.for_pod(pod)
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

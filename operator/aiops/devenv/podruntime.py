"""A pod run as local processes: resolves its volumes and env, picks launchers, supervises.

The node agent asks `plan_pod` whether a pod is one it can run (some container matches a
launcher), then `PodProcesses.start` prepares the pod's directory, materializes its volumes and
starts one `ContainerProcess` per launched container. Containers no launcher knows (a sidecar,
say) stay imaginary: running and ready, as the node reports every container it cannot run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from kubernetes import client

from aiops.devenv.launchers import (
    TERMINATION_ENV,
    LaunchContext,
    Launcher,
    LaunchError,
    TritonRuntime,
    launcher_for,
    translate_path,
)
from aiops.devenv.podenv import (
    ClaimLookup,
    DataLookup,
    claim_volume_paths,
    container_env,
    container_mounts,
    materialize,
    plan_volumes,
)
from aiops.devenv.probes import ProbeSpec
from aiops.devenv.processes import (
    ContainerPaths,
    ContainerProcess,
    ContainerSnapshot,
    PidRegistry,
    RuntimeOptions,
    utcnow,
)
from aiops.devenv.servicedns import pod_env

# The agent's environment passed on to containers: enough to find caches and tools, never its
# credentials (a pod gets what its spec gives it).
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "AIOPS_CACHE", "HF_HOME", "HF_HUB_OFFLINE",
              "TRANSFORMERS_OFFLINE")


@dataclass(frozen=True)
class NodeRuntime:
    """What every pod on the node shares: where things live, how to launch, how fast to probe."""

    state_dir: Path
    volumes_root: Path
    registry: PidRegistry
    options: RuntimeOptions
    launchers: tuple[Launcher, ...]
    triton: Callable[[], tuple[TritonRuntime | None, str]]  # (runtime, why not), located lazily
    python: str
    claims: ClaimLookup | None = None  # claim -> its bound volume's directory
    dns_file: Path | None = None  # the cluster DNS table launched Python processes resolve with


def plan_pod(pod: client.V1Pod, launchers: tuple[Launcher, ...]) -> dict[str, Launcher]:
    """Container name -> launcher, for the containers this node can run for real."""
    found = {c.name: launcher_for(c, launchers) for c in pod.spec.containers}
    return {name: launcher for name, launcher in found.items() if launcher}


def pod_dir(state_dir: Path, pod: client.V1Pod) -> Path:
    m = pod.metadata
    return state_dir / "pods" / f"{m.namespace}_{m.name}_{m.uid[:8]}"


class PodProcesses:
    """The processes of one pod, and snapshots of all its containers in spec order."""

    def __init__(self, pod: client.V1Pod, ip: str, runtime: NodeRuntime,
                 launchers: dict[str, Launcher], on_change: Callable[[], None],
                 on_event: Callable[[str, str, str, str], None]):
        self.pod, self.ip, self.runtime, self.launchers = pod, ip, runtime, launchers
        self.dir = pod_dir(runtime.state_dir, pod)
        self._on_change, self._on_event = on_change, on_event
        self.containers: dict[str, ContainerProcess] = {}
        self._static: dict[str, ContainerSnapshot] = {}
        self.error = ""  # why the pod could not be prepared (its containers then wait)

    def start(self, lookup: DataLookup) -> PodProcesses:
        pod = self.pod
        self.dir.mkdir(parents=True, exist_ok=True)
        plans = plan_volumes(pod, self.runtime.volumes_root, self.dir,
                             claim_volume_paths(pod, self.runtime.claims))
        try:
            materialize(plans, pod.metadata.namespace, lookup)
        except KeyError as e:
            return self._cannot("ContainerCreating", f"MountVolume.SetUp failed: {e.args[0]}",
                                event="FailedMount")
        base = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
        for c in pod.spec.containers:
            launcher = self.launchers.get(c.name)
            if launcher is None:  # imaginary: running and ready like any container we can't run
                self._static[c.name] = ContainerSnapshot(c.name, c.image, "running", ready=True,
                                                         started=True, started_at=utcnow())
                continue
            try:
                proc = self._container(c, launcher, plans, base, lookup)
            except KeyError as e:
                return self._cannot("CreateContainerConfigError", str(e.args[0]), c.name)
            except (LaunchError, ValueError) as e:
                return self._cannot("CreateContainerError", str(e), c.name)
            self.containers[c.name] = proc
        for proc in self.containers.values():
            proc.start()
        return self

    def _container(self, c: client.V1Container, launcher: Launcher, plans, base: dict[str, str],
                   lookup: DataLookup) -> ContainerProcess:
        paths = ContainerPaths(log=self.dir / "logs" / f"{c.name}.log",
                               termination=self.dir / c.name / "termination-log",
                               cwd=self.dir / c.name / "work")
        mounts = container_mounts(c, plans, str(paths.termination))
        env = container_env(self.pod, c, self.ip, lookup, base)
        env[TERMINATION_ENV] = str(paths.termination)
        workdir = str(paths.cwd)
        if c.working_dir:
            translated = translate_path(c.working_dir, mounts)
            workdir = translated if translated != c.working_dir else workdir
        triton, why = self.runtime.triton() if launcher.name == "tritonserver" else (None, "")
        ctx = LaunchContext(self.ip, env, mounts, workdir, self.runtime.python, triton, why)
        spec = launcher.build(c, ctx)
        if self.runtime.dns_file:  # after the launcher: these are paths on this machine already
            spec = replace(spec, env={**spec.env, **pod_env(self.runtime.dns_file, self.pod.metadata.namespace,
                                                            spec.env.get("PYTHONPATH", ""))})
        ports = {p.name: p.container_port for p in c.ports or [] if p.name}
        scale = self.runtime.options.probe_time_scale
        probes = {"startup": ProbeSpec.from_probe(c.startup_probe, ports, scale),
                  "readiness": ProbeSpec.from_probe(c.readiness_probe, ports, scale),
                  "liveness": ProbeSpec.from_probe(c.liveness_probe, ports, scale)}
        m = self.pod.metadata
        return ContainerProcess(
            key=f"{m.uid}_{c.name}", name=c.name, image=c.image, spec=spec, paths=paths,
            restart_policy=self.pod.spec.restart_policy or "Always", probes=probes, pod_ip=self.ip,
            registry=self.runtime.registry, options=self.runtime.options,
            fallback_to_logs=c.termination_message_policy == "FallbackToLogsOnError",
            on_change=self._on_change, mounts=mounts,
            on_event=lambda kind, reason, msg, name=c.name: self._on_event(name, kind, reason, msg))

    def _cannot(self, reason: str, message: str, container: str = "",
                event: str = "") -> PodProcesses:
        """The pod cannot start (missing ConfigMap, no tritonserver...): its containers wait with
        the kubelet's reason, a Warning event says why, and the agent tries again later."""
        self.error = f"{reason}: {message}"
        for c in self.pod.spec.containers:
            self._static[c.name] = ContainerSnapshot(c.name, c.image, "waiting", reason=reason,
                                                     message=message)
        self.containers.clear()
        self._on_event(container, "Warning", event or reason, message)
        return self

    def snapshots(self) -> list[ContainerSnapshot]:
        out = []
        for c in self.pod.spec.containers:
            proc = self.containers.get(c.name)
            out.append(proc.snapshot() if proc else self._static[c.name])
        return out

    def pids(self) -> dict[str, int]:
        return {name: s.pid for name, p in self.containers.items() if (s := p.snapshot()).pid}

    def log(self, container: str | None = None) -> str:
        names = [container] if container else list(self.containers)
        parts = []
        for name in names:
            path = self.dir / "logs" / f"{name}.log"
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self, grace: float | None = None) -> None:
        """Stops every container at once (each SIGTERM, then SIGKILL after the grace)."""
        for proc in self.containers.values():
            proc.stop(grace, wait=False)
        for proc in self.containers.values():
            proc.stop(grace, wait=True)


def stop_all(pods: list[PodProcesses], grace: float) -> None:
    """Stops many pods concurrently (agent shutdown): the slowest grace bounds the wait."""
    threads = [threading.Thread(target=p.stop, args=(grace,), daemon=True) for p in pods]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

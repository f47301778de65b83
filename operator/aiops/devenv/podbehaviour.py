"""Faults for imaginary pods: what their containers do (run, never become ready, crash-loop, exit,
succeed), which pods get one, and the status a kubelet would report for them. Tests inject these
into the node agent; demos ask for them with the `sim.aiops.dev/behaviour` pod annotation."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client

log = logging.getLogger(__name__)

BEHAVIOUR_ANNOTATION = "sim.aiops.dev/behaviour"


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


class FaultRules:
    """The faults a pod gets: injected rules first (newest wins), then its behaviour annotation."""

    def __init__(self):
        self._rules: list[tuple[PodMatcher, Behaviour]] = []
        self._lock = threading.Lock()

    def add(self, matcher: PodMatcher, behaviour: Behaviour) -> Callable[[], None]:
        """Pods matching `matcher` behave as told; returns an undo function."""
        rule = (matcher, behaviour)
        with self._lock:
            self._rules.insert(0, rule)
        return lambda: self._rules.remove(rule) if rule in self._rules else None

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def for_pod(self, pod: client.V1Pod) -> Behaviour | None:
        """None: no fault, the pod runs as it would anyway."""
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

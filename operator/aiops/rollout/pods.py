"""What a Triton pod's status says, in the terms a rollout decides on. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

WAITING_FAILURES = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                    "CreateContainerError", "InvalidImageName", "RunContainerError"}


@dataclass(frozen=True)
class PodProblem:
    reason: str
    message: str
    # Unschedulable is often temporary: a replaced pod's GPUs are held until it has terminated.
    # Only the progress deadline turns it into a failure.
    fatal: bool = True


def _name(pod: dict) -> str:
    return pod["metadata"]["name"]


def pod_problem(pod: dict) -> PodProblem | None:
    """A failure a rollout should not wait out: crash loops, image problems, unschedulable."""
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return PodProblem("PodFailed", f"pod {_name(pod)} failed: {status.get('message') or status.get('reason')}")
    for c in status.get("containerStatuses") or []:
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in WAITING_FAILURES:
            last = ((c.get("lastState") or {}).get("terminated") or {})
            detail = f", last exit code {last['exitCode']}" if "exitCode" in last else ""
            reason = "CrashLoop" if waiting["reason"] == "CrashLoopBackOff" else waiting["reason"]
            return PodProblem(reason, f"pod {_name(pod)} container {c['name']}: {waiting['reason']} "
                              f"after {c.get('restartCount', 0)} restarts{detail}")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and \
                cond.get("reason") == "Unschedulable":
            return PodProblem("Unschedulable", f"pod {_name(pod)} cannot be scheduled: {cond.get('message', '')}",
                              fatal=False)
    return None


def unschedulable_reason(message: str) -> str:
    """The condition reason for a scheduler's FailedScheduling message ("0/1 nodes are available:
    1 Insufficient memory."): what is short, in the words the capacity check uses."""
    short = {word.rstrip(".,") for word in re.findall(r"Insufficient (\S+)", message)}
    if "memory" in short:
        return "InsufficientMemory"
    if any("/" in name for name in short):
        return "InsufficientGPU"
    if "cpu" in short:
        return "InsufficientCPU"
    return "Unschedulable"


def unschedulable(pod: dict) -> bool:
    return any(c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pod_running_ip(pod: dict) -> str | None:
    """The IP of a pod whose containers run and have not been marked for deletion."""
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp") or status.get("phase") != "Running":
        return None
    statuses = status.get("containerStatuses") or []
    if not statuses or not all("running" in (c.get("state") or {}) for c in statuses):
        return None
    return status.get("podIP")


def pod_started(pod: dict) -> bool:
    """Every container has passed its startupProbe (the kubelet's `started`; a cluster too old to
    report it counts as started, and the caller asks the server itself)."""
    return all(c.get("started", True) for c in (pod.get("status") or {}).get("containerStatuses") or [])


def pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def restarts(pod: dict) -> int:
    return sum(c.get("restartCount", 0) for c in (pod.get("status") or {}).get("containerStatuses") or [])

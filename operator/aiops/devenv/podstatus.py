"""The status a kubelet reports for a pod whose containers are real local processes (pure).

Phase follows the kubelet's rules: Pending until every container has started once; Succeeded or
Failed when every container has terminated for good (all exit 0 -> Succeeded); Running otherwise,
including while a container waits in CrashLoopBackOff. Ready only when every container is ready,
which for a launched container means its readinessProbe passed against the real program.
"""

from __future__ import annotations

import datetime as dt

from kubernetes import client

from aiops.devenv.processes import ContainerSnapshot, Terminated


def _ts(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None


def terminated_status(t: Terminated, container_id: str) -> dict:
    out = {"exitCode": t.exit_code, "reason": t.reason, "message": t.message or None,
           "startedAt": _ts(t.started_at), "finishedAt": _ts(t.finished_at),
           "containerID": container_id}
    if t.signal:
        out["signal"] = t.signal
    return out


def container_status(pod: client.V1Pod, s: ContainerSnapshot) -> dict:
    cid = f"aiops-sim://{pod.metadata.uid}/{s.name}/{s.restart_count}"
    if s.state == "running":
        state = {"running": {"startedAt": _ts(s.started_at)}}
    elif s.state == "terminated" and s.terminated:
        state = {"terminated": terminated_status(s.terminated, cid)}
    else:
        state = {"waiting": {"reason": s.reason or "ContainerCreating", "message": s.message or None}}
    last = {"terminated": terminated_status(s.last_terminated, cid)} if s.last_terminated else {}
    return {"name": s.name, "image": s.image, "imageID": f"aiops-sim://{s.image}",
            "containerID": cid if s.state != "waiting" else None, "ready": s.ready,
            "started": s.started, "restartCount": s.restart_count, "state": state, "lastState": last}


def pod_phase(snapshots: list[ContainerSnapshot]) -> str:
    if snapshots and all(s.final for s in snapshots):
        ok = all(s.terminated and s.terminated.exit_code == 0 for s in snapshots)
        return "Succeeded" if ok else "Failed"
    if any(s.state == "waiting" and s.restart_count == 0 for s in snapshots):
        return "Pending"
    return "Running"


def process_pod_status(pod: client.V1Pod, snapshots: list[ContainerSnapshot], ip: str,
                       started: dt.datetime) -> dict:
    """`snapshots` in the order of `pod.spec.containers`."""
    phase = pod_phase(snapshots)
    ready = phase == "Running" and all(s.ready for s in snapshots)
    ts = started.isoformat()
    reason = None if ready else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady")

    def cond(kind: str, ok: bool) -> dict:
        c = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": ts}
        if not ok:
            c["reason"] = reason
            waiting = [s.name for s in snapshots if not s.ready]
            c["message"] = f"containers with unready status: [{' '.join(waiting)}]" if waiting else None
        return c

    return {
        "phase": phase, "hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": ts,
        "conditions": [cond("Initialized", True), cond("Ready", ready), cond("ContainersReady", ready),
                       {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts}],
        "containerStatuses": [container_status(pod, s) for s in snapshots],
        "initContainerStatuses": [{
            "name": c.name, "image": c.image, "imageID": f"aiops-sim://{c.image}", "ready": True,
            "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                        "startedAt": ts, "finishedAt": ts}},
        } for c in (pod.spec.init_containers or [])] or None,
    }


def carry_transition_times(new: dict, old: dict | None, now: str) -> dict:
    """Conditions keep their lastTransitionTime while their status holds and take `now` when it
    flips, as the kubelet's do: controllers time phases (e.g. how long until Ready) from them."""
    if not old:
        return new
    before = {c["type"]: c for c in old.get("conditions") or []}
    conditions = []
    for c in new.get("conditions") or []:
        prev = before.get(c["type"])
        stamp = prev["lastTransitionTime"] if prev and prev["status"] == c["status"] else now
        conditions.append({**c, "lastTransitionTime": stamp})
    return {**new, "conditions": conditions}

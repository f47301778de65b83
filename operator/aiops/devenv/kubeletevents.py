"""Kubelet-style Events for pods on the simulated node (Started, Unhealthy, Killing, BackOff...),
so `kubectl describe pod` and controllers that watch Events see what a real node would say.
A repeated event is counted up on one object, as the kubelet's event recorder does."""

from __future__ import annotations

import datetime as dt
import hashlib

from kubernetes import client


def record_event(core: client.CoreV1Api, pod: client.V1Pod, container: str, kind: str, reason: str,
                 message: str) -> None:
    """`kind` is Normal or Warning; `container` names the container (may be empty)."""
    meta = pod.metadata
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    key = hashlib.sha256(f"{meta.uid}/{container}/{reason}/{message}".encode()).hexdigest()[:10]
    name, ns = f"{meta.name}.{key}", meta.namespace
    try:
        current = core.read_namespaced_event(name, ns)
        core.patch_namespaced_event(name, ns, {"count": (current.count or 1) + 1, "lastTimestamp": now})
        return
    except client.ApiException as e:
        if e.status != 404:
            raise
    involved = {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": meta.name, "uid": meta.uid}
    if container:
        involved["fieldPath"] = f"spec.containers{{{container}}}"
    core.create_namespaced_event(ns, {
        "metadata": {"name": name, "namespace": ns}, "involvedObject": involved, "reason": reason,
        "message": message[:1024], "type": kind, "count": 1, "firstTimestamp": now,
        "lastTimestamp": now, "source": {"component": "kubelet", "host": pod.spec.node_name}})

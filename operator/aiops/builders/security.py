"""The restricted Pod Security Standard, as every pod the operator makes applies it: a non-root
user of the image, the runtime's default seccomp profile, no privilege escalation and no
capabilities. Each builder passes the uid its image runs as."""

from __future__ import annotations


def pod_security(uid: int) -> dict:
    """The pod's securityContext: runs as `uid` (and its group), volumes owned by that group."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security(read_only_root: bool = True) -> dict:
    """A container's securityContext; `read_only_root`: whether the root filesystem is read-only
    (the Milvus StatefulSet leaves it writable, as it always has)."""
    context = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    if read_only_root:
        context["readOnlyRootFilesystem"] = True
    return context

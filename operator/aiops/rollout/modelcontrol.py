"""The key that opens each ModelDeployment's Triton model control (load, unload, the repository
index) to the operator alone: the Triton pods restrict that API to requests carrying it
(builders/triton.py).

The operator never reads a Secret in a workload namespace for it. Each ModelDeployment's key is
derived (HMAC-SHA256) from the operator's own key and the ModelDeployment's namespace and name, so
the operator computes it again whenever it needs it, restarts included. The operator writes it once
into a Secret the Triton pods read (create only); that Secret's name carries a fingerprint of the
key, so a changed operator key makes a new Secret and new pods rather than pods whose key nobody
knows. The operator's own key is one Secret in the operator's namespace, made on first use: the
only Secret the operator may read (a Role limited to its name)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

from aiops.builders.triton import (
    KIND_LABEL,
    MODEL_CONTROL_HEADER,
    build_model_control_secret,
    model_control_secret_name,
)
from aiops.kube.client import KubeClient
from aiops.kube.objects import owned_by

OPERATOR_KEY_SECRET = "aiops-operator-key"  # in the operator's namespace
OPERATOR_KEY = "key"


class OperatorKeyError(RuntimeError):
    """The operator's key Secret exists but holds no usable key."""


def build_operator_key_secret(namespace: str, name: str = OPERATOR_KEY_SECRET) -> dict:
    """A fresh random operator key (256 bits)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "aiops-operator",
                                    "app.kubernetes.io/component": "operator-key"}},
            "data": {OPERATOR_KEY: base64.b64encode(secrets.token_bytes(32)).decode()}}


class OperatorKey:
    """The operator's own key: read from its Secret once, or made there when there is none (a
    second operator making it at the same moment loses the create and reads the winner's)."""

    def __init__(self, kube: KubeClient, namespace: str, name: str = OPERATOR_KEY_SECRET):
        self.kube, self.namespace, self.name = kube, namespace, name
        self._key: bytes | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> bytes:
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    secret = await self.kube.read("Secret", self.namespace, self.name)
                    if secret is None:
                        secret = await self.kube.create_or_read(build_operator_key_secret(self.namespace, self.name))
                    raw = base64.b64decode((secret.get("data") or {}).get(OPERATOR_KEY) or "")
                    if len(raw) < 16:
                        raise OperatorKeyError(
                            f"Secret {self.namespace}/{self.name} has no key {OPERATOR_KEY!r} of 16 bytes or more: "
                            "delete it and the operator makes a new one (Triton pods are then replaced once)")
                    self._key = raw
        return self._key


def fingerprint(key: str) -> str:
    """What a model-control Secret's name says of its key (no way back to the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class ModelControlKeys:
    def __init__(self, kube: KubeClient, operator_key: OperatorKey):
        self.kube = kube
        self.operator_key = operator_key

    async def key(self, namespace: str, md_name: str) -> str:
        master = await self.operator_key.get()
        return hmac.new(master, f"model-control\0{namespace}\0{md_name}".encode(), hashlib.sha256).hexdigest()

    async def secret_name(self, namespace: str, md_name: str) -> str:
        """The name of the Secret the ModelDeployment's Triton pods read their key from."""
        return model_control_secret_name(md_name, fingerprint(await self.key(namespace, md_name)))

    async def ensure(self, md: dict) -> None:
        """Creates the ModelDeployment's key Secret, owned by it; one of its name is left as it is
        (the operator may not read it: its name, fingerprint included, says whose key it holds)."""
        meta = md["metadata"]
        key = await self.key(meta["namespace"], meta["name"])
        await self.kube.create_unread(owned_by(build_model_control_secret(meta["name"], key, fingerprint(key)), md))

    async def headers(self, pod: dict) -> dict[str, str] | None:
        """What model-control calls to `pod`'s Triton carry; None for a pod of no ModelDeployment."""
        meta = pod["metadata"]
        owner = (meta.get("labels") or {}).get(KIND_LABEL)
        if not owner:
            return None
        return {MODEL_CONTROL_HEADER: await self.key(meta["namespace"], owner)}

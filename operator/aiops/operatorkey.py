"""The operator's own key: 256 random bits in one Secret of the operator's namespace, made on first
use, the only Secret the operator may read everywhere (a Role limited to its name). What the
operator hands to the servers it runs (Triton's model-control keys, the managed Milvus's root
password) is derived from it per object, so the operator computes those again whenever it needs
them instead of reading them back from workload namespaces."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

from aiops.kube.client import KubeClient

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

    async def derive(self, purpose: str, namespace: str, name: str) -> str:
        """The secret for `purpose` of the object namespace/name: 64 hex digits."""
        message = f"{purpose}\0{namespace}\0{name}".encode()
        return hmac.new(await self.get(), message, hashlib.sha256).hexdigest()

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

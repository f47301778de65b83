"""The key that opens each ModelDeployment's Triton model control (load, unload, the repository
index) to the operator alone: the Triton pods restrict that API to requests carrying it
(builders/triton.py). One random key per ModelDeployment, in a Secret it owns, made with its
first Triton pods; the operator keeps the keys it made or read in memory and reads a Secret back
only after a restart."""

from __future__ import annotations

import base64
import secrets

from aiops.builders.triton import (
    KIND_LABEL,
    MODEL_CONTROL_HEADER,
    MODEL_CONTROL_KEY,
    build_model_control_secret,
    model_control_secret_name,
)
from aiops.kube.client import KubeClient
from aiops.kube.objects import owned_by

Key = tuple[str, str]  # (namespace, ModelDeployment name)


def new_secret(md: dict) -> dict:
    """A model-control Secret with a fresh key, owned by the ModelDeployment `md`."""
    return owned_by(build_model_control_secret(md["metadata"]["name"], secrets.token_hex(32)), md)


def key_of(secret: dict) -> str | None:
    data = (secret.get("data") or {}).get(MODEL_CONTROL_KEY)
    return base64.b64decode(data).decode() if data else None


class ModelControlKeys:
    def __init__(self, kube: KubeClient):
        self.kube = kube
        self._keys: dict[Key, str] = {}

    def remember(self, namespace: str, md_name: str, secret: dict) -> None:
        key = key_of(secret)
        if key:
            self._keys[(namespace, md_name)] = key

    def forget(self, namespace: str, md_name: str) -> None:
        self._keys.pop((namespace, md_name), None)

    async def ensure(self, md: dict) -> dict:
        """The ModelDeployment's Secret as the API server has it, made when missing (the caller
        checks it is ours before its pods use it)."""
        secret = await self.kube.create_or_read(new_secret(md))
        self.remember(md["metadata"]["namespace"], md["metadata"]["name"], secret)
        return secret

    async def headers(self, pod: dict) -> dict[str, str] | None:
        """What model-control calls to `pod`'s Triton carry; None where no key exists (pods made
        before the API was restricted accept the calls without one)."""
        meta = pod["metadata"]
        owner = (meta.get("labels") or {}).get(KIND_LABEL)
        if not owner:
            return None
        where = (meta["namespace"], owner)
        if where not in self._keys:
            secret = await self.kube.read("Secret", meta["namespace"], model_control_secret_name(owner))
            if secret is None:
                return None
            self.remember(*where, secret)
        key = self._keys.get(where)
        return {MODEL_CONTROL_HEADER: key} if key else None

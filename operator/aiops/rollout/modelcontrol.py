"""The key that opens each ModelDeployment's Triton model control (load, unload, the repository
index) to the operator alone: the Triton pods restrict that API to requests carrying it
(builders/triton.py).

The operator never reads a Secret in a workload namespace for it. Each ModelDeployment's key is
derived (HMAC-SHA256) from the operator's own key and the ModelDeployment's namespace and name, so
the operator computes it again whenever it needs it, restarts included. The operator writes it once
into a Secret the Triton pods read (create only); that Secret's name carries a fingerprint of the
key, so a changed operator key makes a new Secret and new pods rather than pods whose key nobody
knows. The operator's own key: aiops.operatorkey."""

from __future__ import annotations

from aiops.builders.triton import (
    KIND_LABEL,
    MODEL_CONTROL_HEADER,
    build_model_control_secret,
    model_control_secret_name,
)
from aiops.kube.client import KubeClient
from aiops.kube.objects import owned_by
from aiops.operatorkey import OperatorKey, fingerprint


class ModelControlKeys:
    def __init__(self, kube: KubeClient, operator_key: OperatorKey):
        self.kube = kube
        self.operator_key = operator_key

    async def key(self, namespace: str, md_name: str) -> str:
        return await self.operator_key.derive("model-control", namespace, md_name)

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

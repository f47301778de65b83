"""What a container sees, resolved to this machine: its volumes as local directories and its
environment with `valueFrom` filled in.

Planning is pure (`plan_volumes`, `container_mounts`, `container_env`); only `materialize` and
`api_lookup` touch the disk or the API. Volume kinds map the way a single-node dev cluster would:
`hostPath` is the path itself, a `persistentVolumeClaim` is the directory of the PersistentVolume
bound to it (a hostPath or local volume: what the node's local-path provisioner creates, see
storage.py) or, for a claim not bound to such a volume, `<volumes_root>/<namespace>/<claim>`;
`emptyDir`, `configMap`, `secret` and `downwardAPI` are directories under the pod's own dir.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from aiops.devenv.launchers import expand

DEFAULT_TERMINATION_PATH = "/dev/termination-log"

# (kind: "configmap" | "secret", namespace, name) -> the object's data as text, or None if missing
DataLookup = Callable[[str, str, str], "dict[str, str] | None"]
# (namespace, claim) -> the local directory of the volume bound to it, or None if none is known
ClaimLookup = Callable[[str, str], "str | None"]


@dataclass(frozen=True)
class VolumePlan:
    name: str
    kind: str  # hostPath | persistentVolumeClaim | emptyDir | configMap | secret | downwardAPI
    path: str  # local directory (or file, for a hostPath of type File)
    source: str = ""  # configMap/secret name
    items: tuple[tuple[str, str], ...] = ()  # (key, relative path) when the volume lists items
    optional: bool = False
    fields: tuple[tuple[str, str], ...] = ()  # downwardAPI: (relative path, value)


def plan_volumes(pod: client.V1Pod, volumes_root: Path, pod_dir: Path,
                 claim_paths: dict[str, str] | None = None) -> dict[str, VolumePlan]:
    """Local paths for the pod's volumes; kinds this node cannot provide are left out (a
    container mounting one then sees no such path, which fails loudly enough). `claim_paths`:
    claim name -> directory of its bound volume (see `claim_volume_paths`)."""
    plans: dict[str, VolumePlan] = {}
    ns = pod.metadata.namespace
    for vol in pod.spec.volumes or []:
        own = str(pod_dir / "volumes" / vol.name)
        if vol.host_path:
            plans[vol.name] = VolumePlan(vol.name, "hostPath", vol.host_path.path)
        elif vol.persistent_volume_claim:
            claim = vol.persistent_volume_claim.claim_name
            path = (claim_paths or {}).get(claim) or str(volumes_root / ns / claim)
            plans[vol.name] = VolumePlan(vol.name, "persistentVolumeClaim", path)
        elif vol.empty_dir is not None:
            plans[vol.name] = VolumePlan(vol.name, "emptyDir", own)
        elif vol.config_map:
            cm = vol.config_map
            plans[vol.name] = VolumePlan(vol.name, "configMap", own, cm.name,
                                         tuple((i.key, i.path) for i in cm.items or []), bool(cm.optional))
        elif vol.secret:
            s = vol.secret
            plans[vol.name] = VolumePlan(vol.name, "secret", own, s.secret_name,
                                         tuple((i.key, i.path) for i in s.items or []), bool(s.optional))
        elif vol.downward_api:
            values = tuple((i.path, field_value(pod, i.field_ref.field_path, ""))
                           for i in vol.downward_api.items or [] if i.field_ref)
            plans[vol.name] = VolumePlan(vol.name, "downwardAPI", own, fields=values)
    return plans


def container_mounts(container: client.V1Container, plans: dict[str, VolumePlan],
                     termination_file: str) -> dict[str, str]:
    """container path -> local path, with subPath applied; the termination message file is a
    mount too, so a command naming `/dev/termination-log` writes the file the node reads."""
    mounts = {}
    for m in container.volume_mounts or []:
        plan = plans.get(m.name)
        if plan is None:
            continue
        local = os.path.join(plan.path, m.sub_path) if m.sub_path else plan.path
        mounts[m.mount_path] = local
    mounts[container.termination_message_path or DEFAULT_TERMINATION_PATH] = termination_file
    return mounts


def field_value(pod: client.V1Pod, path: str, pod_ip: str) -> str:
    """The downward API's fieldRef values the simulated node knows."""
    meta = pod.metadata
    known = {"metadata.name": meta.name, "metadata.namespace": meta.namespace,
             "metadata.uid": meta.uid, "spec.nodeName": pod.spec.node_name,
             "spec.serviceAccountName": pod.spec.service_account_name,
             "status.podIP": pod_ip, "status.hostIP": "127.0.0.1"}
    if path.startswith(("metadata.labels['", "metadata.annotations['")):
        source = meta.labels if path.startswith("metadata.labels") else meta.annotations
        return (source or {}).get(path.split("'")[1], "")
    return known.get(path) or ""


def container_env(pod: client.V1Pod, container: client.V1Container, pod_ip: str,
                  lookup: DataLookup, base: dict[str, str] | None = None) -> dict[str, str]:
    """The container's environment as the kubelet builds it: `envFrom` first, then `env` in
    order (later entries may use `$(EARLIER)`), `valueFrom` resolved. Missing required
    references raise KeyError, which the kubelet reports as CreateContainerConfigError."""
    ns = pod.metadata.namespace
    env = dict(base or {})
    env.setdefault("HOSTNAME", pod.metadata.name)
    for src in container.env_from or []:
        ref, kind = (src.config_map_ref, "configmap") if src.config_map_ref else (src.secret_ref, "secret")
        data = lookup(kind, ns, ref.name)
        if data is None:
            if ref.optional:
                continue
            raise KeyError(f"{kind} {ns}/{ref.name} not found")
        env.update({f"{src.prefix or ''}{k}": v for k, v in data.items()})
    for var in container.env or []:
        if var.value_from is None:
            env[var.name] = expand(var.value or "", env)
            continue
        vf = var.value_from
        if vf.field_ref:
            env[var.name] = field_value(pod, vf.field_ref.field_path, pod_ip)
        elif vf.config_map_key_ref or vf.secret_key_ref:
            ref = vf.config_map_key_ref or vf.secret_key_ref
            kind = "configmap" if vf.config_map_key_ref else "secret"
            data = lookup(kind, ns, ref.name)
            if data is None or ref.key not in data:
                if ref.optional:
                    continue
                raise KeyError(f"{kind} {ns}/{ref.name} has no key {ref.key!r}")
            env[var.name] = data[ref.key]
    return env


def api_lookup(core: client.CoreV1Api) -> DataLookup:
    """A DataLookup that reads ConfigMaps and Secrets from the API (secrets decoded)."""

    def lookup(kind: str, namespace: str, name: str) -> dict[str, str] | None:
        try:
            if kind == "configmap":
                return dict(core.read_namespaced_config_map(name, namespace).data or {})
            raw = core.read_namespaced_secret(name, namespace).data or {}
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in raw.items()}
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise

    return lookup


def claim_volume_paths(pod: client.V1Pod, claims: ClaimLookup | None) -> dict[str, str]:
    """Claim name -> local directory, for the pod's claims whose volume `claims` knows."""
    if claims is None:
        return {}
    found = {}
    for vol in pod.spec.volumes or []:
        if vol.persistent_volume_claim:
            name = vol.persistent_volume_claim.claim_name
            path = claims(pod.metadata.namespace, name)
            if path:
                found[name] = path
    return found


def api_claim_lookup(core: client.CoreV1Api) -> ClaimLookup:
    """A ClaimLookup that follows claim -> bound PersistentVolume -> its hostPath or local path
    (the kinds whose data is a directory on this machine)."""

    def lookup(namespace: str, claim: str) -> str | None:
        try:
            pvc = core.read_namespaced_persistent_volume_claim(claim, namespace)
            if not pvc.spec.volume_name:
                return None
            pv = core.read_persistent_volume(pvc.spec.volume_name)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise
        source = pv.spec.host_path or pv.spec.local
        return source.path if source else None

    return lookup


def materialize(plans: dict[str, VolumePlan], namespace: str, lookup: DataLookup) -> None:
    """Creates the pod's own volume directories and writes configMap/secret/downwardAPI files.
    Raises KeyError for a missing, non-optional source (the kubelet's FailedMount)."""
    for plan in plans.values():
        if plan.kind in ("hostPath", "persistentVolumeClaim"):
            if plan.kind == "persistentVolumeClaim":
                Path(plan.path).mkdir(parents=True, exist_ok=True)
            continue
        root = Path(plan.path)
        root.mkdir(parents=True, exist_ok=True)
        if plan.kind == "downwardAPI":
            for rel, value in plan.fields:
                _write(root / rel, value)
        elif plan.kind in ("configMap", "secret"):
            data = lookup(plan.kind.lower(), namespace, plan.source)
            if data is None:
                if plan.optional:
                    continue
                raise KeyError(f"{plan.kind} {namespace}/{plan.source} not found")
            for key, rel in plan.items or tuple((k, k) for k in data):
                if key in data:
                    _write(root / rel, data[key])


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)

"""The ingest Job of a VectorIndex (new documents -> embeddings on GPU 2 -> store with
metadata): the project's worker (`aiops worker embed`) with the document source mounted, on the
shared GPU, writing its counts as the container's termination message. Pure functions."""

from __future__ import annotations

import hashlib
import json

from aiops.api.common import memory_request
from aiops.api.vectorindex import VectorIndexSpec
from aiops.builders.jobs import spec_file, worker_job
from aiops.builders.milvus import AUTH_PASSWORD_KEY, AUTH_USER_KEY, VECTOR_INDEX_LABEL
from aiops.builders.triton import MANAGED_BY, child_name

SPEC_MOUNT = "/etc/aiops/spec"
SOURCE_MOUNT = "/etc/aiops/source"
CREDENTIALS_MOUNT = "/etc/aiops/milvus-credentials"
ROLE_LABEL = "aiops.dev/role"


def ingest_key(spec: VectorIndexSpec, source_version: str) -> str:
    """What an ingest run is for: the spec and the version of the source it reads. The same key
    is the same Job, so an event storm or an operator restart never starts a second one."""
    wire = json.dumps({"spec": spec.to_wire(), "source": source_version}, sort_keys=True)
    return hashlib.sha256(wire.encode()).hexdigest()[:10]


def ingest_job_name(vi_name: str, key: str) -> str:
    return child_name(vi_name, f"ingest-{key}")


def _labels(vi_name: str, key: str) -> dict[str, str]:
    return {VECTOR_INDEX_LABEL: vi_name, ROLE_LABEL: "ingest", "aiops.dev/ingest-key": key,
            "app.kubernetes.io/name": "aiops-ingest", "app.kubernetes.io/managed-by": MANAGED_BY}


def _spec_text(spec: VectorIndexSpec) -> str:
    return json.dumps(spec.to_wire(), sort_keys=True, separators=(",", ":"))


def build_ingest_configmap(vi_name: str, spec: VectorIndexSpec, key: str) -> dict | None:
    """The run's spec ConfigMap, only for a spec too big to ride on its Job (None otherwise)."""
    return spec_file(ingest_job_name(vi_name, key), _labels(vi_name, key), _spec_text(spec))[2]


def _source(spec: VectorIndexSpec) -> tuple[str, dict, dict]:
    src = spec.source
    mount = {"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": True}
    if src.config_map:
        volume: dict = {"name": "source", "configMap": {"name": src.config_map.name}}
        if src.config_map.key:
            volume["configMap"]["items"] = [{"key": src.config_map.key, "path": src.config_map.key}]
        return SOURCE_MOUNT, volume, mount
    pvc = src.persistent_volume_claim
    path = f"{SOURCE_MOUNT}/{pvc.sub_path}" if pvc.sub_path else SOURCE_MOUNT
    return path, {"name": "source", "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": True}}, mount


def _resources(spec: VectorIndexSpec) -> dict:
    res = spec.embedding.resources
    requests: dict[str, str] = {"memory": memory_request(res)}
    limits: dict[str, str] = {"memory": str(res.memory)}
    if res.gpus and spec.embedding.device != "cpu":
        requests[res.gpu_resource_name] = limits[res.gpu_resource_name] = str(res.gpus)
    if res.cpu is not None:
        requests["cpu"] = str(res.cpu)
    return {"requests": requests, "limits": limits}


def build_ingest_job(vi_name: str, spec: VectorIndexSpec, key: str, milvus_uri: str, image: str,
                     namespace: str, log_format: str = "text", managed_credentials: str | None = None) -> dict:
    """The Job of one ingest run; the collection is recorded as belonging to namespace/vi_name.
    `managed_credentials`: the Secret with the managed Milvus's credentials (builders/milvus.py)."""
    name = ingest_job_name(vi_name, key)
    labels = _labels(vi_name, key)
    source, source_volume, source_mount = _source(spec)
    spec_volume, annotations, _ = spec_file(name, labels, _spec_text(spec))
    volumes = [spec_volume, source_volume, {"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True}, source_mount,
              {"name": "tmp", "mountPath": "/tmp"}]
    args = [f"--spec={SPEC_MOUNT}/spec.json", f"--source={source}", f"--milvus-uri={milvus_uri}",
            f"--owner={namespace}/{vi_name}", "--result=/dev/termination-log"]
    external = spec.milvus.external
    secret, keys = None, []
    if external and external.credentials:
        creds = external.credentials
        secret = creds.secret_name
        keys = [creds.token_key] if creds.token_key else [creds.username_key, creds.password_key]
    elif managed_credentials:
        secret, keys = managed_credentials, [AUTH_USER_KEY, AUTH_PASSWORD_KEY]
    if secret:
        volumes.append({"name": "credentials", "secret": {
            "secretName": secret, "items": [{"key": k, "path": k} for k in keys]}})
        mounts.append({"name": "credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": True})
        args.append(f"--credentials-dir={CREDENTIALS_MOUNT}")
    container = {
        "name": "embed",
        "image": image,
        "command": ["aiops", "worker", "embed"],
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "PYTHONUNBUFFERED", "value": "1"}],
        "volumeMounts": mounts,
        "resources": _resources(spec),
    }
    # Ingestion is idempotent (upsert by id, skip by content hash): a retry resumes, it never
    # duplicates, so retrying is safe.
    return worker_job(name, labels, container, volumes, backoff_limit=spec.ingest.backoff_limit,
                      pod_annotations=annotations, about=("VectorIndex", vi_name), log_format=log_format)

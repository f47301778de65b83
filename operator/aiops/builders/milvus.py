"""The managed Milvus of a VectorIndex (seed: vector-db on GPU 2, 32 GB): a one-replica StatefulSet
running Milvus standalone with its data on a PVC, a Service, and a ConfigMap with the settings the
operator controls (the GPU memory pool cap, so Milvus cannot take the shared GPU from training).
Pure functions: spec in, dicts out."""

from __future__ import annotations

from aiops.api.common import memory_request
from aiops.api.vectorindex import ManagedMilvus, VectorIndexSpec
from aiops.builders.security import container_security, pod_security
from aiops.builders.triton import MANAGED_BY, child_name

VECTOR_INDEX_LABEL = "aiops.dev/vectorindex"
GRPC_PORT = 19530
METRICS_PORT = 9091  # also /healthz
DATA_MOUNT = "/var/lib/milvus"
USER_CONFIG_MOUNT = "/milvus/configs/user.yaml"
ETCD_CONFIG_MOUNT = "/milvus/configs/embedEtcd.yaml"
# Milvus's own standalone_embed.sh writes this file: etcd inside the Milvus process, on the volume.
# Its script listens on every interface; here etcd, which holds every collection's metadata and
# takes writes without authentication, answers on the pod's loopback only (Milvus is its only client;
# its peer port is on loopback by etcd's default).
EMBED_ETCD_CONFIG = (
    "listen-client-urls: http://127.0.0.1:2379\n"
    "advertise-client-urls: http://127.0.0.1:2379\n"
    "quota-backend-bytes: 4294967296\n"
    "auto-compaction-mode: revision\n"
    "auto-compaction-retention: '1000'\n"
)
RUN_AS_USER = 1000
# Milvus's environment override of common.security.authorizationEnabled: every client signs in.
# A new Milvus has root with a built-in password; the operator changes it to one derived from its
# own key before anything else uses Milvus (indexing/probe.py secure), and writes it into a Secret
# the ingest Jobs (and the namespace's applications) mount (build_milvus_auth_secret).
AUTHORIZATION_ENV = "COMMON_SECURITY_AUTHORIZATIONENABLED"
AUTH_USER_KEY, AUTH_PASSWORD_KEY = "username", "password"


def milvus_name(vi_name: str) -> str:
    return child_name(vi_name, "milvus")


def milvus_uri(vi_name: str, namespace: str) -> str:
    return f"http://{milvus_name(vi_name)}.{namespace}.svc:{GRPC_PORT}"


def milvus_auth_secret_name(vi_name: str, fingerprint: str) -> str:
    """The Secret with Milvus's root credentials; `fingerprint` names the password it holds."""
    return child_name(vi_name, f"milvus-auth-{fingerprint}")


def build_milvus_auth_secret(vi_name: str, user: str, password: str, fingerprint: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
            "metadata": {"name": milvus_auth_secret_name(vi_name, fingerprint), "labels": milvus_labels(vi_name)},
            "stringData": {AUTH_USER_KEY: user, AUTH_PASSWORD_KEY: password}}


def milvus_labels(vi_name: str) -> dict[str, str]:
    """Selector labels: stable for the object's lifetime (a StatefulSet selector is immutable)."""
    return {"app.kubernetes.io/name": "milvus", "app.kubernetes.io/instance": vi_name,
            "app.kubernetes.io/managed-by": MANAGED_BY, VECTOR_INDEX_LABEL: vi_name}


def uses_gpu(spec: VectorIndexSpec) -> bool:
    return spec.index.type.startswith("GPU_")


def milvus_user_config(managed: ManagedMilvus) -> str:
    """Overrides on top of Milvus's milvus.yaml. The GPU pool sizes are MiB in Milvus's config."""
    pool = managed.gpu_memory_pool
    return (
        "# Written by aiops-operator from the VectorIndex spec; edits are overwritten.\n"
        "etcd:\n"
        "  endpoints: [127.0.0.1:2379]  # the embedded etcd, on loopback only (embedEtcd.yaml)\n"
        "gpu:\n"
        f"  initMemSize: {pool.initial_mib}\n"
        f"  maxMemSize: {pool.max_mib}\n"
    )


def build_milvus_configmap(vi_name: str, spec: VectorIndexSpec) -> dict:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": milvus_name(vi_name), "labels": milvus_labels(vi_name)},
        "data": {"user.yaml": milvus_user_config(spec.milvus.managed), "embedEtcd.yaml": EMBED_ETCD_CONFIG},
    }


def build_milvus_service(vi_name: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": milvus_name(vi_name), "labels": milvus_labels(vi_name)},
        "spec": {
            "selector": milvus_labels(vi_name),
            "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
                      {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}],
        },
    }


def _resources(spec: VectorIndexSpec) -> dict:
    res = spec.milvus.managed.resources
    requests: dict[str, str] = {"memory": memory_request(res)}
    limits: dict[str, str] = {"memory": str(res.memory)}
    if uses_gpu(spec) and res.gpus:
        requests[res.gpu_resource_name] = limits[res.gpu_resource_name] = str(res.gpus)
    if res.cpu is not None:
        requests["cpu"] = str(res.cpu)
    return {"requests": requests, "limits": limits}


def build_milvus_statefulset(vi_name: str, spec: VectorIndexSpec) -> dict:
    managed = spec.milvus.managed
    labels = milvus_labels(vi_name)
    probe = {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10, "timeoutSeconds": 3}
    claim: dict = {"metadata": {"name": "data"},
                   "spec": {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": str(managed.storage_size)}}}}
    if managed.storage_class_name:
        claim["spec"]["storageClassName"] = managed.storage_class_name
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": milvus_name(vi_name), "labels": labels},
        "spec": {
            "replicas": 1,
            "serviceName": milvus_name(vi_name),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(RUN_AS_USER),
                    "containers": [{
                        "name": "milvus",
                        "image": managed.image,
                        "imagePullPolicy": managed.image_pull_policy,
                        "args": ["milvus", "run", "standalone"],
                        # Standalone with embedded etcd and local storage: one pod, one volume.
                        "env": [{"name": "ETCD_USE_EMBED", "value": "true"},
                                {"name": "ETCD_DATA_DIR", "value": f"{DATA_MOUNT}/etcd"},
                                {"name": "ETCD_CONFIG_PATH", "value": ETCD_CONFIG_MOUNT},
                                {"name": "COMMON_STORAGETYPE", "value": "local"},
                                {"name": AUTHORIZATION_ENV, "value": "true"}],
                        "ports": [{"name": "grpc", "containerPort": GRPC_PORT},
                                  {"name": "metrics", "containerPort": METRICS_PORT}],
                        "readinessProbe": {**probe, "initialDelaySeconds": 5, "failureThreshold": 3},
                        "livenessProbe": {**probe, "initialDelaySeconds": 90, "failureThreshold": 6},
                        "resources": _resources(spec),
                        "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT},
                                         {"name": "config", "mountPath": USER_CONFIG_MOUNT,
                                          "subPath": "user.yaml", "readOnly": True},
                                         {"name": "config", "mountPath": ETCD_CONFIG_MOUNT,
                                          "subPath": "embedEtcd.yaml", "readOnly": True}],
                        "securityContext": container_security(read_only_root=False),
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": milvus_name(vi_name)}}],
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }

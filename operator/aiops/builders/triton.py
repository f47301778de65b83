"""Desired objects for a ModelDeployment: the Triton Deployment and Service, and the model
configuration the operator loads into Triton. Pure functions of the spec; no I/O.

Why the model version is not in the pod template: versions are swapped inside the running server
through Triton's explicit model control (load the new version beside the old, check it, unload
the old). A version change therefore never needs a second set of GPUs — on the reference node the two
serving GPUs are all there is, and a surge pod could never schedule. The readiness probe asks for
the model itself, so a pod that restarted is not Ready (and gets no traffic) until the operator
has loaded the serving version into it again.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from aiops.api.common import memory_request, quantity_str
from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.builders.security import container_security, pod_security

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
MODEL_MOUNT = "/models"
MANAGED_BY = "aiops-operator"
KIND_LABEL = "aiops.dev/modeldeployment"
NAME_LABEL, TRITON = "app.kubernetes.io/name", "triton"  # what tells Triton children apart
RUN_AS_USER = 1000  # the Triton image's non-root `triton-server` user


def child_name(owner: str, suffix: str, limit: int = 63) -> str:
    """`<owner>-<suffix>`, shortened with a stable hash when it would not fit a DNS label."""
    name = f"{owner}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{owner[: limit - len(suffix) - 10]}-{digest}-{suffix}"


def triton_labels(md_name: str) -> dict[str, str]:
    """The selector labels: stable for the object's lifetime (a Deployment selector is immutable)."""
    return {NAME_LABEL: TRITON, "app.kubernetes.io/instance": md_name,
            "app.kubernetes.io/managed-by": MANAGED_BY, KIND_LABEL: md_name}


def repository_volume(spec: ModelDeploymentSpec) -> tuple[str, list[dict], list[dict], list[dict]]:
    """(--model-repository value, volumes, volumeMounts, envFrom) for the spec's repository."""
    repo = spec.repository
    if repo.object_store:
        env_from = ([{"secretRef": {"name": repo.object_store.credentials_secret}}]
                    if repo.object_store.credentials_secret else [])
        return repo.object_store.uri, [], [], env_from
    mount = {"name": "model-repository", "mountPath": MODEL_MOUNT, "readOnly": True}
    if repo.persistent_volume_claim:
        pvc = repo.persistent_volume_claim
        volume = {"name": "model-repository",
                  "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": True}}
        if pvc.sub_path:
            mount["subPath"] = pvc.sub_path
    else:
        volume = {"name": "model-repository",
                  "hostPath": {"path": repo.host_path.path, "type": "Directory"}}
    return MODEL_MOUNT, [volume], [mount], []


def _env(spec: ModelDeploymentSpec) -> list[dict]:
    out = []
    for var in spec.runtime.env:
        item: dict[str, Any] = {"name": var.name}
        if var.value_from and var.value_from.secret_key_ref:
            ref = var.value_from.secret_key_ref
            item["valueFrom"] = {"secretKeyRef": {"name": ref.name, "key": ref.key}}
        elif var.value_from and var.value_from.config_map_key_ref:
            ref = var.value_from.config_map_key_ref
            item["valueFrom"] = {"configMapKeyRef": {"name": ref.name, "key": ref.key}}
        else:
            item["value"] = var.value or ""
        out.append(item)
    return out


# Model control (load, unload, the repository index) answers only requests that carry this
# header with the ModelDeployment's key: any pod may infer, none but the operator may swap or
# unload the model. The key lives in a Secret of its own (model_control_secret) and reaches
# tritonserver through an environment variable that Kubernetes expands in the arguments, so the
# pod spec never holds it.
MODEL_CONTROL_HEADER = "aiops-model-control"
MODEL_CONTROL_ENV = "AIOPS_MODEL_CONTROL_KEY"
MODEL_CONTROL_KEY = "key"


def model_control_secret_name(md_name: str, fingerprint: str) -> str:
    """The Secret of the key whose fingerprint (rollout/modelcontrol.py) is `fingerprint`."""
    return child_name(md_name, f"model-control-{fingerprint}")


def build_model_control_secret(md_name: str, key: str, fingerprint: str) -> dict:
    """The Secret holding the key the Triton pods demand for model control."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": model_control_secret_name(md_name, fingerprint), "labels": triton_labels(md_name)},
            "data": {MODEL_CONTROL_KEY: base64.b64encode(key.encode()).decode()}}


def triton_args(spec: ModelDeploymentSpec, repository: str) -> list[str]:
    restricted = f"model-repository:{MODEL_CONTROL_HEADER}=$({MODEL_CONTROL_ENV})"
    return [f"--model-repository={repository}", "--model-control-mode=explicit",
            f"--http-port={HTTP_PORT}", f"--grpc-port={GRPC_PORT}", f"--metrics-port={METRICS_PORT}",
            f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}",
            "--allow-metrics=true", "--allow-gpu-metrics=true",
            # Exact latency quantiles for monitoring (a summary), not only per-interval means.
            "--metrics-config=summary_latencies=true", *cache_args(spec), *spec.runtime.args]


def cache_args(spec: ModelDeploymentSpec) -> list[str]:
    """The server's response cache, where the spec enables it for the model."""
    cache = spec.serving.response_cache
    return [f"--cache-config=local,size={int(parse_quantity(cache.size))}"] if cache.enabled else []


def build_triton_deployment(md_name: str, spec: ModelDeploymentSpec, surge: bool, control_secret: str) -> dict:
    """The Triton Deployment. `surge`: whether a replacement pod fits beside the old ones (the
    caller checked GPU capacity); without it a template change replaces pods one at a time.
    `control_secret`: the Secret holding the model-control key (model_control_secret_name)."""
    labels = triton_labels(md_name)
    repository, volumes, mounts, env_from = repository_volume(spec)
    res = spec.resources
    limits = {res.gpu_resource_name: quantity_str(res.gpus), "memory": quantity_str(res.memory)}
    requests = {"memory": quantity_str(memory_request(res))}
    if res.cpu is not None:
        requests["cpu"] = quantity_str(res.cpu)
    if res.gpus == 0:
        del limits[res.gpu_resource_name]
    hc = spec.health_check
    model = spec.model.name
    container = {
        "name": "triton",
        "image": spec.runtime.image,
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "command": ["tritonserver"],
        "args": triton_args(spec, repository),
        # The spec may not set this name (a validation rule): the arguments expand this value.
        "env": [{"name": MODEL_CONTROL_ENV, "valueFrom": {"secretKeyRef": {
            "name": control_secret, "key": MODEL_CONTROL_KEY}}}, *_env(spec)],
        "envFrom": env_from,
        "ports": [{"name": "http", "containerPort": HTTP_PORT},
                  {"name": "grpc", "containerPort": GRPC_PORT},
                  {"name": "metrics", "containerPort": METRICS_PORT}],
        "resources": {"limits": limits, "requests": requests},
        # Ready only when the model answers: a restarted pod gets traffic after the operator
        # loaded the serving version again, never while empty.
        "readinessProbe": {"httpGet": {"path": f"/v2/models/{model}/ready", "port": "http"},
                           "periodSeconds": 2, "timeoutSeconds": hc.timeout_seconds,
                           "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                          "periodSeconds": 10, "timeoutSeconds": hc.timeout_seconds,
                          "failureThreshold": 3},
        "startupProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                         "periodSeconds": 2, "failureThreshold": 150},
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "shm", "mountPath": "/dev/shm"}],
        "securityContext": container_security(),
    }
    pod_spec = {
        "containers": [container],
        "volumes": [*volumes, {"name": "tmp", "emptyDir": {}},
                    # The Python backend exchanges tensors through shared memory.
                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
        "nodeSelector": dict(spec.node_selector),
        # GPU nodes are commonly tainted with the GPU resource name; GPU pods tolerate it.
        "tolerations": [{"key": res.gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"}],
        "securityContext": pod_security(RUN_AS_USER),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": child_name(md_name, "triton"), "labels": labels},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": labels},
            "progressDeadlineSeconds": hc.progress_deadline_seconds,
            "revisionHistoryLimit": spec.rollback.history_limit,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": (
                {"maxSurge": 1, "maxUnavailable": 0} if surge else {"maxSurge": 0, "maxUnavailable": 1})},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def build_triton_service(md_name: str) -> dict:
    """A ClusterIP Service over the ready Triton pods: the model's stable endpoint."""
    labels = triton_labels(md_name)
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": child_name(md_name, "triton"), "labels": labels},
        "spec": {"type": "ClusterIP", "selector": labels, "ports": [
            {"name": "http", "port": HTTP_PORT, "targetPort": "http"},
            {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
            {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}]},
    }


GRAPH_LEVELS = {"all": 0, "extended": 1, "basic": -1, "none": 2}  # Triton's onnxruntime backend's levels


def triton_model_config(base: dict, spec: ModelDeploymentSpec, versions: list[int]) -> dict:
    """The model configuration to load: the repository's config.pbtxt (as JSON) with exactly
    `versions` loaded and the spec's dynamic batching and serving options applied.

    Loading with an explicit version list is what makes a swap atomic from the client's side:
    Triton keeps serving what it had until the new configuration has loaded."""
    config = {k: v for k, v in base.items() if k not in ("version_policy", "dynamic_batching")}
    config["name"] = spec.model.name
    config["version_policy"] = {"specific": {"versions": sorted(set(versions))}}
    batching = spec.batching
    if batching.enabled and int(base.get("max_batch_size", 0)) > 0:
        config["max_batch_size"] = batching.max_batch_size
        dyn: dict[str, Any] = {"max_queue_delay_microseconds": batching.max_queue_delay_microseconds}
        if batching.preferred_batch_sizes:
            dyn["preferred_batch_size"] = list(batching.preferred_batch_sizes)
        config["dynamic_batching"] = dyn
    serving = spec.serving
    if serving.instances is not None:
        kind = "KIND_GPU" if spec.resources.gpus > 0 else "KIND_CPU"
        config["instance_group"] = [{"count": serving.instances, "kind": kind}]
    if serving.threads_per_instance is not None:
        config["parameters"] = {**base.get("parameters", {}),
                                "intra_op_thread_count": {"string_value": str(serving.threads_per_instance)}}
    if serving.graph_optimization is not None:
        optimization = dict(base.get("optimization", {}))
        optimization["graph"] = {"level": GRAPH_LEVELS[serving.graph_optimization]}
        config["optimization"] = optimization
    if serving.response_cache.enabled:
        config["response_cache"] = {"enable": True}
    return config

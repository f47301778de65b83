"""The Kubernetes objects of a TrainingJob run: the managed workspace PVC and one Job per step
(`aiops worker train data|train|optimize|register`).

One Job per step, not one Job for the whole run: each step's result comes back through the API
(its container's termination message) as soon as the step ends, so status shows real progress per
step, and a failed step is retried alone. Dataset versions, checkpoints and models pass between
the steps on the workspace volume, which outlives any pod; that is also what lets a retried
training pod resume from its last checkpoint. Each step Job carries the spec itself (an annotation
read through the downward API, or a ConfigMap when the spec is too big for one): a finished Job
leaves nothing behind when its TTL deletes it. Pure functions: spec in, dicts out.
"""

from __future__ import annotations

import copy
import hashlib
import json

from aiops.api.common import memory_request
from aiops.api.trainingjob import TrainingJobSpec
from aiops.builders.jobs import STEP_RESOURCES, spec_file, worker_job
from aiops.builders.triton import MANAGED_BY, child_name

TRAINING_JOB_LABEL = "aiops.dev/trainingjob"
STEP_LABEL = "aiops.dev/step"
SPEC_HASH_LABEL = "aiops.dev/spec-hash"
SPEC_MOUNT = "/etc/aiops/spec"
SOURCE_MOUNT = "/etc/aiops/source"
WORKSPACE_MOUNT = "/workspace"
REPOSITORY_MOUNT = "/models"
STEPS = ("data", "train", "optimize", "register")


def spec_hash(spec: TrainingJobSpec) -> str:
    """A short digest of the spec: a new spec is a new run, the same spec re-applied is the same run."""
    wire = json.dumps(spec.to_wire(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(wire.encode()).hexdigest()[:10]


def run_id(spec_digest: str, dataset_version: str) -> str:
    """The run's identity on the workspace (its checkpoints and models): spec plus data, so the
    same spec over changed data trains anew, and a restart finds its own checkpoints."""
    return f"{spec_digest}-{dataset_version[:10]}"


def step_job_name(tj_name: str, step: str, digest: str) -> str:
    return child_name(tj_name, f"{step}-{digest}")


def spec_configmap_name(tj_name: str, digest: str) -> str:
    return child_name(tj_name, f"spec-{digest}")


def workspace_claim_name(tj_name: str) -> str:
    return child_name(tj_name, "workspace")


def _labels(tj_name: str, digest: str, step: str | None = None) -> dict[str, str]:
    labels = {TRAINING_JOB_LABEL: tj_name, SPEC_HASH_LABEL: digest, "app.kubernetes.io/managed-by": MANAGED_BY,
              "app.kubernetes.io/name": "aiops-training"}
    if step:
        labels[STEP_LABEL] = step
    return labels


def spec_text(spec: TrainingJobSpec) -> str:
    return json.dumps(spec.to_wire(), sort_keys=True, separators=(",", ":"))


def build_spec_configmap(tj_name: str, spec: TrainingJobSpec, digest: str) -> dict | None:
    """The run's spec ConfigMap, only for a spec too big to ride on its step Jobs (None otherwise)."""
    return spec_file(spec_configmap_name(tj_name, digest), _labels(tj_name, digest), spec_text(spec))[2]


def build_workspace_claim(tj_name: str, spec: TrainingJobSpec) -> dict | None:
    """The PVC of a managed workspace (None when the spec names its own storage)."""
    managed = spec.workspace.managed
    if managed is None:
        return None
    claim: dict = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": workspace_claim_name(tj_name),
                     "labels": {TRAINING_JOB_LABEL: tj_name, "app.kubernetes.io/managed-by": MANAGED_BY}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": str(managed.size)}}},
    }
    if managed.storage_class_name:
        claim["spec"]["storageClassName"] = managed.storage_class_name
    return claim


def _workspace_volume(tj_name: str, spec: TrainingJobSpec) -> tuple[dict, dict]:
    ws = spec.workspace
    mount = {"name": "workspace", "mountPath": WORKSPACE_MOUNT}
    if ws.host_path:
        return {"name": "workspace", "hostPath": {"path": ws.host_path.path, "type": "DirectoryOrCreate"}}, mount
    if ws.persistent_volume_claim:
        pvc = ws.persistent_volume_claim
        if pvc.sub_path:
            mount["subPath"] = pvc.sub_path
        return {"name": "workspace", "persistentVolumeClaim": {"claimName": pvc.claim_name}}, mount
    return {"name": "workspace", "persistentVolumeClaim": {"claimName": workspace_claim_name(tj_name)}}, mount


def _source(spec: TrainingJobSpec) -> tuple[str, list[dict], list[dict]]:
    """(--source value, volumes, mounts): the data as the worker reads it."""
    src = spec.dataset.source
    if src.config_map:
        volume: dict = {"name": "source", "configMap": {"name": src.config_map.name}}
        if src.config_map.key:
            volume["configMap"]["items"] = [{"key": src.config_map.key, "path": src.config_map.key}]
        return SOURCE_MOUNT, [volume], [{"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": True}]
    if src.persistent_volume_claim:
        pvc = src.persistent_volume_claim
        path = f"{SOURCE_MOUNT}/{pvc.sub_path}" if pvc.sub_path else SOURCE_MOUNT
        return path, [{"name": "source", "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": True}}], \
            [{"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": True}]
    return src.uri, [], []


def _repository(spec: TrainingJobSpec) -> tuple[dict, dict]:
    """The output repository, writable: registration adds a version directory to it."""
    repo = spec.output.repository
    mount = {"name": "model-repository", "mountPath": REPOSITORY_MOUNT}
    if repo.persistent_volume_claim:
        pvc = repo.persistent_volume_claim
        if pvc.sub_path:
            mount["subPath"] = pvc.sub_path
        return {"name": "model-repository", "persistentVolumeClaim": {"claimName": pvc.claim_name}}, mount
    # object stores are refused by validation (OutputRepositoryNotWritable) before any Job exists
    return {"name": "model-repository", "hostPath": {"path": repo.host_path.path, "type": "DirectoryOrCreate"}}, mount


def _resources(spec: TrainingJobSpec, step: str) -> dict:
    if step != "train":
        # Data checks, optimization and export run on CPU: the shared GPU is for training and Milvus.
        return copy.deepcopy(STEP_RESOURCES)
    res = spec.resources
    limits: dict[str, str] = {"memory": str(res.memory)}
    requests: dict[str, str] = {"memory": memory_request(res)}
    if res.gpus:
        limits[res.gpu_resource_name] = str(res.gpus)
        requests[res.gpu_resource_name] = str(res.gpus)
    if res.cpu is not None:
        requests["cpu"] = str(res.cpu)
    return {"requests": requests, "limits": limits}


def build_step_job(tj_name: str, spec: TrainingJobSpec, step: str, digest: str, image: str,
                   dataset_version: str | None = None, run: str | None = None,
                   ttl_seconds: int | None = None, log_format: str = "text") -> dict:
    """The Job of one step; its container writes its JSON result as the termination message.
    `ttl_seconds`: how long the finished Job stays (its result is in status by then)."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}")
    name = step_job_name(tj_name, step, digest)
    labels = _labels(tj_name, digest, step)
    ws_volume, ws_mount = _workspace_volume(tj_name, spec)
    spec_volume, annotations, _ = spec_file(spec_configmap_name(tj_name, digest), labels, spec_text(spec))
    volumes = [spec_volume, ws_volume, {"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True}, ws_mount,
              {"name": "tmp", "mountPath": "/tmp"}]
    args = [f"--spec={SPEC_MOUNT}/spec.json", f"--workspace={WORKSPACE_MOUNT}", "--result=/dev/termination-log"]
    if step == "data":
        source, src_volumes, src_mounts = _source(spec)
        volumes += src_volumes
        mounts += src_mounts
        args.append(f"--source={source}")
    if step in ("train", "optimize"):
        args.append(f"--dataset-version={dataset_version}")
    if step in ("train", "optimize", "register"):
        args.append(f"--run={run}")
    if step == "register":
        repo_volume, repo_mount = _repository(spec)
        volumes.append(repo_volume)
        mounts.append(repo_mount)
        args.append(f"--repository={REPOSITORY_MOUNT}")
    container = {
        "name": step,
        "image": image,
        "command": ["aiops", "worker", "train", step],
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "PYTHONUNBUFFERED", "value": "1"}],
        "volumeMounts": mounts,
        "resources": _resources(spec, step),
    }
    # Training resumes from checkpoints, so its retries are worth it; the other steps are
    # deterministic (a bad dataset fails the same way twice) and get one retry for infrastructure.
    return worker_job(name, labels, container, volumes, backoff_limit=spec.backoff_limit if step == "train" else 1,
                      active_deadline_seconds=spec.active_deadline_seconds if step == "train" else None,
                      ttl_seconds_after_finished=ttl_seconds, pod_annotations=annotations,
                      about=("TrainingJob", tj_name), log_format=log_format)

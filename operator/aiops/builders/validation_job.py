"""The pre-deploy validation Job of a model version. The Job runs the project's
worker (`aiops worker validate-model`) beside the mounted model repository and reports its verdict
as the container's termination message, so the result comes back through the API and nothing
assumes a shared disk.

The worker reads the spec from a file. The file comes from an annotation on the Job's pod through
a downwardAPI volume, so a version costs one object, not two; a spec too big for an annotation
(large inline samples) goes in a ConfigMap of the Job's name instead."""

from __future__ import annotations

import copy
import hashlib
import json

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.builders.jobs import STEP_RESOURCES, spec_file, worker_job
from aiops.builders.triton import KIND_LABEL, MANAGED_BY, child_name, repository_volume

SPEC_MOUNT = "/etc/aiops/spec"
VALIDATION_SET_MOUNT = "/etc/aiops/validation-set"
ROLE_LABEL = "aiops.dev/role"
VERSION_LABEL = "aiops.dev/model-version"


def validation_job_name(md_name: str, version: int, revision: str) -> str:
    return child_name(md_name, f"validate-v{version}-{revision[:6]}")


def validation_attempt(revision: str, retry_token: str) -> str:
    """What names a validation Job: the spec revision, and the retry annotation when one is set,
    so a retry of the same spec validates afresh instead of finding the failed Job again."""
    return hashlib.sha256(f"{revision}/{retry_token}".encode()).hexdigest() if retry_token else revision


def build_validation_objects(md_name: str, spec: ModelDeploymentSpec, version: int, revision: str,
                             image: str, ttl_seconds: int | None = None, log_format: str = "text") -> list[dict]:
    """What validates this version: its Job, after the ConfigMap holding the spec when the spec
    is too big to travel as an annotation."""
    # Defaults left out, compact: the worker fills them in again, and the text rides on the Job,
    # its pod and every watch event of both (1.1 KB of a 7.5 KB pod for a small spec).
    text = json.dumps(spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True),
                      sort_keys=True, separators=(",", ":"))
    name = validation_job_name(md_name, version, revision)
    labels = {KIND_LABEL: md_name, ROLE_LABEL: "validation", VERSION_LABEL: str(version)}
    spec_volume, annotations, configmap = spec_file(name, {**labels, "app.kubernetes.io/managed-by": MANAGED_BY},
                                                    text)
    job = build_validation_job(md_name, spec, version, revision, image, spec_volume, ttl_seconds, annotations,
                               log_format)
    return [configmap, job] if configmap else [job]


def build_validation_job(md_name: str, spec: ModelDeploymentSpec, version: int, revision: str,
                         image: str, spec_volume: dict, ttl_seconds: int | None = None,
                         pod_annotations: dict[str, str] | None = None, log_format: str = "text") -> dict:
    """The Job; `spec_volume` (named "spec") holds the spec as `spec.json`. `ttl_seconds`: how long
    Kubernetes keeps it once finished (its ConfigMap, if any, goes with the ModelDeployment)."""
    name = validation_job_name(md_name, version, revision)
    labels = {KIND_LABEL: md_name, ROLE_LABEL: "validation", VERSION_LABEL: str(version)}
    repository, volumes, mounts, env_from = repository_volume(spec)
    args = [f"--spec={SPEC_MOUNT}/spec.json", f"--repository={repository}", "--result=/dev/termination-log"]
    volumes = [*volumes, spec_volume, {"name": "tmp", "emptyDir": {}}]
    mounts = [*mounts, {"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]
    vset = spec.validation.validation_set
    if vset:
        volumes.append({"name": "validation-set", "configMap": {"name": vset.config_map}})
        mounts.append({"name": "validation-set", "mountPath": VALIDATION_SET_MOUNT, "readOnly": True})
        args.append(f"--validation-set={VALIDATION_SET_MOUNT}/{vset.key}")
    container = {
        "name": "validate",
        "image": image,
        "command": ["aiops", "worker", "validate-model"],
        "args": args,
        "envFrom": env_from,
        "volumeMounts": mounts,
        # Validation runs Triton on CPU: the serving GPUs are busy serving.
        "resources": copy.deepcopy(STEP_RESOURCES),
    }
    # A bad model fails the same way twice; infrastructure errors are retried by the reconciler.
    return worker_job(name, labels, container, volumes, backoff_limit=0,
                      active_deadline_seconds=spec.validation.timeout_seconds + 60,
                      ttl_seconds_after_finished=ttl_seconds, pod_annotations=pod_annotations,
                      about=("ModelDeployment", md_name), log_format=log_format)

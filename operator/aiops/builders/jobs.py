"""The Job every worker step runs in (model validation, training steps, ingestion): one place for
its security posture and for how its result comes back (the container's termination message)."""

from __future__ import annotations

from aiops.builders.security import container_security, pod_security
from aiops.builders.triton import MANAGED_BY

RUN_AS_USER = 10001  # the project image's non-root user (Dockerfile), which the worker Jobs run
# The short steps on CPU (model validation, data checks, optimization, export): a quarter of a core
# guaranteed and no CPU limit, so they use what is idle. A whole core each kept them Pending on a
# small GPU node whose cores the long-running servers already hold.
STEP_RESOURCES = {"requests": {"cpu": "250m", "memory": "2Gi"}, "limits": {"memory": "8Gi"}}
SPEC_ANNOTATION = "aiops.dev/spec"
# The API server caps all of an object's annotations at 256 KiB together; leave room for others.
MAX_ANNOTATED_SPEC = 128 * 1024


def spec_file(name: str, labels: dict[str, str], text: str) -> tuple[dict, dict, dict | None]:
    """How a worker Job gets `text` as the file spec.json in its volume "spec": (the volume, the
    pod template's annotations, a ConfigMap to create first or None).

    Up to MAX_ANNOTATED_SPEC it rides as an annotation on the Job's pod, read through a downwardAPI
    volume: the Job is then all there is, and it goes with its TTL or its pruning, leaving nothing
    behind. A larger one goes in a ConfigMap named `name` (whose owner the caller sets)."""
    if len(text.encode()) <= MAX_ANNOTATED_SPEC:
        volume = {"name": "spec", "downwardAPI": {"items": [
            {"path": "spec.json", "fieldRef": {"fieldPath": f"metadata.annotations['{SPEC_ANNOTATION}']"}}]}}
        return volume, {SPEC_ANNOTATION: text}, None
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": dict(labels)},
                 "data": {"spec.json": text}}
    return {"name": "spec", "configMap": {"name": name}}, {}, configmap


def worker_job(name: str, labels: dict[str, str], container: dict, volumes: list[dict], backoff_limit: int,
               active_deadline_seconds: int | None = None, ttl_seconds_after_finished: int | None = None,
               pod_annotations: dict[str, str] | None = None, about: tuple[str, str] | None = None,
               log_format: str = "text") -> dict:
    """A run-to-completion Job around `container` (name, image, command, args, env, mounts,
    resources): non-root, read-only root filesystem, no capabilities, no API token, and the
    result written to /dev/termination-log (falling back to the log tail on a crash). Labelled
    managed-by us whatever `labels` say: the operator's Job watch sees only such Jobs. `about`:
    the (kind, name) of the custom resource the Job works for, named on its log lines (aiops.logs),
    which are in `log_format`."""
    labels = {**labels, "app.kubernetes.io/managed-by": MANAGED_BY}
    env = [{"name": "AIOPS_LOG_FORMAT", "value": log_format}]
    if about:
        env += [{"name": "AIOPS_OBJECT_KIND", "value": about[0]}, {"name": "AIOPS_OBJECT_NAME", "value": about[1]},
                {"name": "AIOPS_OBJECT_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    container = {**container, "env": [*(container.get("env") or []), *env]}
    spec: dict = {
        "backoffLimit": backoff_limit,
        "template": {
            "metadata": {"labels": labels, **({"annotations": pod_annotations} if pod_annotations else {})},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security(RUN_AS_USER),
                "containers": [{
                    **container,
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "securityContext": container_security(),
                }],
                "volumes": volumes,
            },
        },
    }
    if active_deadline_seconds:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    if ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels}, "spec": spec}

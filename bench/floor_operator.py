"""The framework's floor for bench_reconcile: a plain Kopf handler that only creates a Deployment
for each ModelDeployment, nothing else (no validation, no status).

With FLOOR_WITH_JOB=1 it also creates a bare Job beside the Deployment, labelled like our
validation Jobs so the simulated node runs its pod the same way: the floor of an operator that
must validate in a Job, as the operator does, to tell the Job's own cost from the operator's.

With FLOOR_SAME_OBJECTS=1 it creates exactly the objects our first pass creates, from our
builders: the Triton Deployment, its model-control Secret and NetworkPolicy and the validation
Job, owned by the ModelDeployment. Their size
is what the API server, etcd, the controllers and every watcher handle for each object: this floor
tells that cost from our operator's own."""

import os
import secrets

import kopf
from kubernetes import client, config

WITH_JOB = os.environ.get("FLOOR_WITH_JOB") == "1"
SAME_OBJECTS = os.environ.get("FLOOR_SAME_OBJECTS") == "1"
if SAME_OBJECTS:  # imported up front, as the operator does: not on the first object's clock
    from aiops.api.modeldeployment import ModelDeploymentSpec
    from aiops.builders.network import build_network_policy, workload_peers
    from aiops.builders.triton import (
        GRPC_PORT,
        HTTP_PORT,
        METRICS_PORT,
        build_model_control_secret,
        build_triton_deployment,
        child_name,
        triton_labels,
    )
    from aiops.builders.validation_job import build_validation_objects, validation_attempt
    from aiops.kube.objects import owned_by
    from aiops.operatorkey import fingerprint
    from aiops.rollout.revision import spec_revision


@kopf.on.startup()
def setup(memo: kopf.Memo, **_):
    api = config.new_client_from_config()
    memo.apps, memo.batch, memo.core = client.AppsV1Api(api), client.BatchV1Api(api), client.CoreV1Api(api)
    memo.net = client.NetworkingV1Api(api)


@kopf.on.create("aiops.dev", "v1alpha1", "modeldeployments")
def create(name: str, namespace: str, memo: kopf.Memo, body: kopf.Body, **_):
    if SAME_OBJECTS:
        create_ours(name, namespace, dict(body), memo)
        return
    labels = {"app": name}
    memo.apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"{name}-triton"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.10-py3"}]}}}})
    if WITH_JOB:
        job_labels = {"aiops.dev/modeldeployment": name, "aiops.dev/role": "validation"}
        memo.batch.create_namespaced_job(namespace, {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{name}-validate", "labels": job_labels},
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"labels": job_labels},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "validate", "image": "worker"}]}}}})


def create_ours(name: str, namespace: str, body: dict, memo: kopf.Memo) -> None:
    spec = ModelDeploymentSpec.from_wire(body["spec"])
    attempt = validation_attempt(spec_revision(spec), "")
    key = secrets.token_hex(32)
    secret = build_model_control_secret(name, key, fingerprint(key))
    memo.apps.create_namespaced_deployment(namespace, owned_by(build_triton_deployment(
        name, spec, False, secret["metadata"]["name"]), body))
    memo.core.create_namespaced_secret(namespace, owned_by(secret, body))
    memo.net.create_namespaced_network_policy(namespace, owned_by(build_network_policy(
        child_name(name, "triton"), triton_labels(name), [HTTP_PORT, GRPC_PORT, METRICS_PORT],
        workload_peers(namespace, [])), body))
    for job in build_validation_objects(name, spec, spec.model.version, attempt, "worker", 3600):
        memo.batch.create_namespaced_job(namespace, owned_by(job, body))

"""The framework's floor for bench_reconcile: a plain Kopf handler that only creates a Deployment
for each ModelDeployment, nothing else (no validation, no status).

With FLOOR_WITH_JOB=1 it also creates a bare Job beside the Deployment, labelled like our
validation Jobs so the simulated node runs its pod the same way: the floor of an operator that
must validate in a Job, as issue 6 requires, to tell the Job's own cost from the operator's."""

import os

import kopf
from kubernetes import client, config

WITH_JOB = os.environ.get("FLOOR_WITH_JOB") == "1"


@kopf.on.startup()
def setup(memo: kopf.Memo, **_):
    api = config.new_client_from_config()
    memo.apps, memo.batch = client.AppsV1Api(api), client.BatchV1Api(api)


@kopf.on.create("aiops.dev", "v1alpha1", "modeldeployments")
def create(name: str, namespace: str, memo: kopf.Memo, **_):
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

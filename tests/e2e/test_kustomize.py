"""The plain-manifest install path on the real node: `kubectl apply -k` of an overlay on deploy/
that only points the images at the ones built here, as docs/install.md tells a user to do. The
operator comes up as its pod with deploy/'s RBAC and brings a VectorIndex (Milvus in its
StatefulSet, an ingest Job) to Ready. Removed with `kubectl delete -k`, which leaves the CRDs
(deploy/crds holds them), so every custom resource stays."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest
import yaml
from e2ehelpers import wait_until
from kubernetes import client

from aiops.devenv.realcluster import REPO

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def overlay(real):
    directory = REPO / ".aiops" / f"e2e-overlay-{uuid.uuid4().hex[:6]}"
    directory.mkdir(parents=True)
    operator, worker = real.ref("operator"), real.ref("worker")
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../../deploy"],
        "images": [{"name": "ghcr.io/aiops-operator/aiops-operator", "newName": operator.rpartition(":")[0],
                    "newTag": operator.rpartition(":")[2]}],
        "patches": [{"target": {"kind": "Deployment", "name": "aiops-operator"}, "patch": json.dumps([
            {"op": "replace", "path": "/spec/template/spec/containers/0/env/0",
             "value": {"name": "AIOPS_WORKER_IMAGE", "value": worker}}])}] + [
            # The node's own plugin advertises the same gpuLayout on GPUs NVIDIA's could not find.
            {"target": {"kind": "DaemonSet", "name": f"aiops-operator-gpu-{instance}"},
             "patch": yaml.safe_dump({"$patch": "delete", "apiVersion": "apps/v1", "kind": "DaemonSet",
                                      "metadata": {"name": f"aiops-operator-gpu-{instance}"}})}
            for instance in ("whole", "shared")],
    }))
    real.run(real.kubectl, "apply", "-k", str(directory))
    yield directory
    uninstall(real, directory)  # again, should a test have stopped before its own uninstall
    shutil.rmtree(directory, ignore_errors=True)


def uninstall(real, directory) -> None:
    """`kubectl delete -k`, as a user removes the install. Foreground: the operator's pod is gone,
    not just its Deployment, before the chart's operator comes."""
    real.run(real.kubectl, "delete", "-k", str(directory), "--ignore-not-found", "--wait=true",
             "--cascade=foreground", "--timeout=180s", check=False)
    core = client.CoreV1Api(real.api())
    wait_until(lambda: not core.list_namespaced_pod(
        "aiops-system", label_selector="app.kubernetes.io/instance=aiops-operator").items, 120,
        "the kustomize install's operator pod gone")


def test_apply_k_runs_the_operator_which_serves_a_vector_index(real, overlay, core):
    apps = client.AppsV1Api(real.api())
    deployment = wait_until(lambda: (lambda d: d if d.status.available_replicas else None)(
        apps.read_namespaced_deployment("aiops-operator", "aiops-system")), 180, "the operator Deployment available")
    assert deployment.spec.template.spec.containers[0].image == real.ref("operator")
    ns = f"e2e-k-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        wait_until(lambda: core.read_namespaced_service_account("default", ns).secrets, 30, "a token")
        real.apply_fitted([REPO / "examples" / "vectorindex.yaml"], namespace=ns)
        custom = client.CustomObjectsApi(real.api())

        def ready():
            st = custom.get_namespaced_custom_object("aiops.dev", "v1alpha1", ns, "vectorindexes",
                                                     "ops-manual").get("status") or {}
            assert st.get("phase") not in ("Failed", "Invalid"), st
            return st if st.get("phase") == "Ready" else None

        status = wait_until(ready, 600, "the VectorIndex Ready under the kustomize install", interval=2)
        assert status["documents"]["ingested"] == 8
    finally:
        core.delete_namespace(ns)
        # While this operator still runs: it releases the VectorIndex's finalizer.
        # As long as the tier's own namespaces get: the Milvus pod's graceful stop, then its
        # claim and volume, can pass two minutes on a loaded machine.
        wait_until(lambda: ns not in {n.metadata.name for n in core.list_namespace().items}, 300,
                   f"namespace {ns} gone")


def test_delete_k_removes_the_operator_and_leaves_the_crds_and_custom_resources(real, overlay, core):
    """Uninstalling the plain manifests must not take the data with it: deleting a CRD deletes
    every object of its kind and what they own (Triton, Milvus, the training workspaces)."""
    extensions = client.ApiextensionsV1Api(real.api())
    before = {c.metadata.name: c.metadata.uid for c in extensions.list_custom_resource_definition().items
              if c.spec.group == "aiops.dev"}
    assert len(before) == 3
    ns = f"e2e-keep-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    custom = client.CustomObjectsApi(real.api())
    try:
        uninstall(real, overlay)
        apps = client.AppsV1Api(real.api())
        assert "aiops-operator" not in {d.metadata.name for d in apps.list_deployment_for_all_namespaces().items}
        after = {c.metadata.name: c for c in extensions.list_custom_resource_definition().items
                 if c.spec.group == "aiops.dev"}
        assert {name: c.metadata.uid for name, c in after.items()} == before
        assert all(c.metadata.deletion_timestamp is None for c in after.values())
        # The kinds still serve: a custom resource can be made and read back with no operator running.
        [example] = [d for d in yaml.safe_load_all((REPO / "examples" / "vectorindex.yaml").read_text())
                     if d and d["kind"] == "VectorIndex"]
        body = {**example, "metadata": {"name": "kept"}}
        custom.create_namespaced_custom_object("aiops.dev", "v1alpha1", ns, "vectorindexes", body)
        assert custom.get_namespaced_custom_object("aiops.dev", "v1alpha1", ns, "vectorindexes", "kept")
    finally:
        core.delete_namespace(ns)  # no operator: nothing put a finalizer on the object

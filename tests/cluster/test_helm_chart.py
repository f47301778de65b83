"""The Helm chart on the real control plane: install, upgrade and uninstall with the real helm
binary, then the operator reconciling the examples under the chart's own ServiceAccount, with the
API server's audit log as the judge of its RBAC: every request the operator made must have been
allowed, and every (verb, resource) the chart grants must have been used, apart from the short
allowlist below."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from aiops.api.common import GROUP, VERSION

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "aiops-operator"
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.timeout(420)

# Granted but not reached by a short run (a happy rollout of the examples). Keep this small: each
# entry names the code path that uses it.
ALLOWED_UNUSED = {
    # A changed pod template (image, args, resources) and a rollback to the previous ReplicaSet's
    # template patch the Triton Deployment (rollout/world.py apply_deployment, restore_template).
    ("apps", "deployments", "patch"),
    # That rollback finds the previous template in the Deployment's ReplicaSets (rollout/world.py replica_sets).
    ("apps", "replicasets", "list"),
    # A failed first version scales its Deployment to zero (rollout/validating.py, kube.scale).
    ("apps", "deployments/scale", "patch"),
    # A superseded ingest/training run's Job is deleted (kube.delete).
    ("batch", "jobs", "delete"),
    # A changed VectorIndex spec updates the managed Milvus ConfigMap and StatefulSet template
    # (indexing/reconciler.py _apply); the example is applied once and never changed here.
    ("", "configmaps", "patch"),
    ("apps", "statefulsets", "patch"),
    # A validation pod that cannot mount its hostPath repository: the kubelet's FailedMount Events
    # are read (rollout/reconciler.py _repository_not_mountable); here every mount succeeds.
    ("", "events", "list"),
    # The same Event again within ten minutes is counted on the first (kube/client.py event); the
    # short run's Events are all different.
    ("", "events", "patch"),
    # A TrainingJob without its own workspace gets a managed PVC (builders/training_job.py); the
    # example names a claim of its own.
    ("", "persistentvolumeclaims", "create"),
    # A NetworkPolicy that exists when the operator starts is read, and patched when it was made
    # under other networkPolicies settings (networkpolicies.py ensure); a new one is only created.
    ("networking.k8s.io", "networkpolicies", "get"),
    ("networking.k8s.io", "networkpolicies", "patch"),
}

# Used or not depending on timing: live progress reads the running training or ingest pod's log
# every 3 s (progress.py); whether the example's training step outlives one read interval before
# the run ends depends on the machine's speed. Neither "unused" nor "allowlisted but used".
TIMING_DEPENDENT = {("", "pods/log", "get")}

# ---- helpers -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_namespace(kube, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def helm_install(kube, release: str, namespace: str, *values: str, upgrade: bool = False):
    verb = ["upgrade"] if upgrade else ["install"]
    # No NVIDIA device plugin can run on the simulated node (no GPU, no NVIDIA runtime): the
    # chart's DaemonSets stay off, as on a node whose plugin the GPU Operator runs.
    sets = [a for v in ("gpuLayout.devicePlugin.enabled=false", *values) for a in ("--set", v)]
    # The session's CRDs were created by another field manager (tests' install_crds); Helm v4
    # applies CRDs server-side, so it takes them over as `kubectl apply --server-side
    # --force-conflicts` would (docs/install.md, "Upgrading").
    return kube.helm(*verb, release, str(CHART), "-n", namespace, *sets, "--wait", "--timeout", "120s",
                     "--force-conflicts")


def service_account_kubeconfig(kube, namespace: str, account: str, path: Path, wait_for) -> Path:
    """A kubeconfig holding the ServiceAccount's token, as the token controller of Kubernetes 1.20
    writes it into a Secret: requests made with it are authorized exactly as the pod's would be."""
    sa = wait_for(lambda: (lambda a: a if a.secrets else None)(
        kube.core.read_namespaced_service_account(account, namespace)), what=f"a token for {account}")
    secret = kube.core.read_namespaced_secret(sa.secrets[0].name, namespace)
    token = base64.b64decode(secret.data["token"]).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": kube.control_plane.server,
                                                "certificate-authority": str(kube.control_plane.ca_file)}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
        "current-context": "c"}))
    return path


TICKET_CLASSIFIER = '''"""The example's ticket classifier, as a rule: good enough to pass its samples."""
import numpy as np
import triton_python_backend_utils as pb_utils

RULES = (("charged", "billing"), ("fails", "technical"), ("administrator", "account"))


def label(text):
    text = text.decode() if isinstance(text, bytes) else str(text)
    return next((lab for word, lab in RULES if word in text), "other").encode()


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            labels = np.array([[label(row[0])] for row in texts], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("LABEL", labels)]))
        return responses
'''


def write_ticket_classifier(repo: Path) -> Path:
    """Version 1 of examples/modeldeployment.yaml's model, in a Triton repository."""
    model = repo / "ticket-classifier"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        'name: "ticket-classifier"\nbackend: "python"\nmax_batch_size: 32\n'
        'input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'output [ { name: "LABEL" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'instance_group [ { kind: KIND_CPU count: 1 } ]\n')
    (model / "1" / "model.py").write_text(TICKET_CLASSIFIER)
    return repo


def audit_requests(audit_log: Path, user: str) -> list[dict]:
    events = []
    for line in audit_log.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("user", {}).get("username") == user and event.get("objectRef"):
            events.append(event)
    return events


def request_key(event: dict) -> tuple[str, str, str]:
    ref = event["objectRef"]
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return ref.get("apiGroup", ""), resource, event["verb"]


def granted(rbac: client.RbacAuthorizationV1Api, release: str) -> dict[tuple[str, str, str], str]:
    """(group, resource, verb) -> the role granting it, for every role of the release."""
    selector = f"app.kubernetes.io/instance={release}"
    roles = [*rbac.list_cluster_role(label_selector=selector).items,
             *rbac.list_role_for_all_namespaces(label_selector=selector).items]
    grants = {}
    for role in roles:
        for rule in role.rules or []:
            for group in rule.api_groups or [""]:
                for resource in rule.resources or []:
                    for verb in rule.verbs:
                        assert "*" not in (group, resource, verb), f"wildcard in {role.metadata.name}: {rule}"
                        where = f"Role {role.metadata.namespace}/" if role.metadata.namespace else "ClusterRole "
                        grants[(group, resource, verb)] = where + role.metadata.name
    return grants


def report_rbac(kube, release: str, user: str, out: Path) -> tuple[list, list, set]:
    """(denied requests, unused grants, used keys) of `user`, also written to out/rbac-report.txt."""
    events = audit_requests(kube.control_plane.state_dir / "logs" / "audit.log", user)
    denied = sorted({request_key(e) + (e["objectRef"].get("namespace", ""),) for e in events
                     if e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"})
    used = {request_key(e) for e in events}
    grants = granted(client.RbacAuthorizationV1Api(kube.api_client), release)
    unused = sorted(set(grants) - used - ALLOWED_UNUSED - TIMING_DEPENDENT)
    lines = [f"{len(events)} requests by {user}: {len(used)} distinct (group, resource, verb); {len(grants)} "
             f"granted; {len(denied)} denied; {len(set(grants) - used)} granted and unused "
             f"({len(unused)} not allowlisted)"]
    lines += [f"  used {key} <- {grants.get(key, 'NOT GRANTED')}" for key in sorted(used)]
    lines += [f"  DENIED {key}" for key in denied]
    lines += [f"  UNUSED {key}" for key in unused]
    for where in filter(None, (out, os.environ.get("AIOPS_TEST_ARTIFACTS"))):
        Path(where).mkdir(parents=True, exist_ok=True)
        (Path(where) / "rbac-report.txt").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    return denied, unused, used


def external_credentials_need_the_namespaces_consent(kube, namespace: str, release: str, release_ns: str,
                                                     wait_for) -> None:
    """A VectorIndex naming a credentials Secret: the operator, which may read no Secret of a
    workload namespace, says how to let it; once the namespace binds the chart's ClusterRole, it
    reads the Secret (and goes on to check where the Secret may be sent)."""
    custom = client.CustomObjectsApi(kube.api_client)
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "milvus-auth"},
                                                   "stringData": {"username": "root", "password": "s3cret"}})
    vi = next(d for d in yaml.safe_load_all((EXAMPLES / "vectorindex.yaml").read_text()) if d and
              d["kind"] == "VectorIndex")
    vi["metadata"]["name"] = "external"
    vi["spec"]["milvus"] = {"external": {"uri": "http://milvus.search.invalid:19530",
                                         "credentials": {"secretName": "milvus-auth"}}}
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", vi)

    def milvus_ready(words: str):
        def check():
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", "external")
            c = next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "MilvusReady"), {})
            return c if c.get("reason") == "CredentialsNotPermitted" and words in c["message"] else None
        return check

    refused = wait_for(milvus_ready("may not read Secrets"), timeout=60, what="CredentialsNotPermitted (RBAC)")
    binding = f"--clusterrole={release}-milvus-credentials --serviceaccount={release_ns}:{release}"
    assert binding in refused["message"], refused
    kube.kubectl("create", "rolebinding", "aiops-milvus-credentials", "-n", namespace, *binding.split())
    wait_for(milvus_ready("is not marked for Milvus"), timeout=60, what="the Secret read once bound")
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", "external")


# ---- tests ---------------------------------------------------------------------------------------

def test_install_upgrade_and_uninstall(kube, crds_installed, wait_for):
    kube.helm("lint", str(CHART))
    ns = make_namespace(kube, "aiops-helm")
    release = "aiops-operator-t"
    apps, rbac = client.AppsV1Api(kube.api_client), client.RbacAuthorizationV1Api(kube.api_client)
    try:
        helm_install(kube, release, ns, "image.repository=registry.local/aiops-operator")
        dep = apps.read_namespaced_deployment(release, ns)
        assert dep.status.available_replicas == 1
        pod = dep.spec.template.spec
        assert pod.containers[0].args[0] == "run" and "--leader-elect" not in pod.containers[0].args
        assert dep.spec.strategy.type == "Recreate"
        assert kube.core.read_namespaced_service_account(release, ns)
        assert kube.core.read_namespaced_service(f"{release}-metrics", ns).spec.ports[0].name == "metrics"
        assert apps.list_namespaced_daemon_set(ns).items == []
        assert {r.metadata.name for r in rbac.list_cluster_role(
            label_selector=f"app.kubernetes.io/instance={release}").items} == {
                release, f"{release}-cluster", f"{release}-milvus-credentials"}
        assert kube.helm("status", release, "-n", ns, "-o", "json").stdout.count('"deployed"') >= 1

        # Two replicas: leader election on, its Role in the release namespace, no downtime updates.
        helm_install(kube, release, ns, "image.repository=registry.local/aiops-operator", "replicaCount=2",
                     upgrade=True)
        dep = apps.read_namespaced_deployment(release, ns)
        assert dep.status.ready_replicas == 2
        assert f"--lease-name={release}" in dep.spec.template.spec.containers[0].args
        assert dep.spec.strategy.type == "RollingUpdate"
        lease_role = rbac.read_namespaced_role(f"{release}-leader-election", ns)
        assert lease_role.rules[0].resources == ["leases"]

        # Bad values are refused before anything changes.
        bad = kube.helm("upgrade", release, str(CHART), "-n", ns, "--set", "replicaCount=two", check=False)
        assert bad.returncode != 0 and "replicaCount" in bad.stderr
        assert kube.helm("history", release, "-n", ns, "-o", "json").stdout.count('"revision"') == 2
    finally:
        kube.helm("uninstall", release, "-n", ns, "--wait", check=False)
    assert not rbac.list_cluster_role(label_selector=f"app.kubernetes.io/instance={release}").items
    with pytest.raises(client.ApiException):
        apps.read_namespaced_deployment(release, ns)
    # Helm never deletes CRDs: the custom resources of every namespace survive an uninstall.
    ext = client.ApiextensionsV1Api(kube.api_client)
    assert ext.read_custom_resource_definition(f"modeldeployments.{GROUP}")
    kube.core.delete_namespace(ns)


def test_operator_reconciles_the_examples_with_only_the_charts_rbac(kube, crds_installed, namespace, wait_for,
                                                                    tmp_path):
    release_ns = make_namespace(kube, "aiops-system")
    release = "aiops-operator"
    user = f"system:serviceaccount:{release_ns}:{release}"
    operator = None
    try:
        # replicaCount 2: leader election on, so the Lease rules are checked too.
        helm_install(kube, release, release_ns, "replicaCount=2", "grafanaDashboard.enabled=false")
        kubeconfig = service_account_kubeconfig(kube, release_ns, release, tmp_path / "sa-kubeconfig", wait_for)

        repo = write_ticket_classifier(tmp_path / "models")
        for example in sorted(EXAMPLES.glob("*.yaml")):
            docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
            for body in docs:
                if body["kind"] == "ModelDeployment":  # the example's model, in a repository of this test
                    body["spec"]["repository"] = {"hostPath": {"path": str(repo)}}
            kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))

        # The operator as the Deployment runs it (its args), under the chart's ServiceAccount.
        container = client.AppsV1Api(kube.api_client).read_namespaced_deployment(
            release, release_ns).spec.template.spec.containers[0]
        args = container.args
        # The chart's settings, but the test's model repository lies where the test session allows.
        chart_env = {e.name: e.value for e in container.env if e.value is not None and e.name.startswith("AIOPS_")
                     and e.name not in os.environ}
        args = [a for a in args if not a.startswith(("--liveness", "--metrics-port"))]
        assert args[0] == "run" and "--leader-elect" in args
        log = open(tmp_path / "operator.log", "wb")
        operator = subprocess.Popen(
            [sys.executable, "-m", "aiops", *args, "--metrics-port=0",
             f"--liveness=http://127.0.0.1:{free_port()}/healthz"],
            env={**os.environ, **chart_env, "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": release_ns,
                 "AIOPS_WORKER_IMAGE": "registry.local/aiops-operator:test"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        custom = client.CustomObjectsApi(kube.api_client)

        def ready():
            assert operator.poll() is None, (tmp_path / "operator.log").read_text()[-4000:]
            md = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments",
                                                     "ticket-classifier")
            status = md.get("status") or {}
            ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
            if status.get("phase") in ("Failed", "Invalid"):
                pytest.fail(f"the example failed: {json.dumps(status, indent=1)[-3000:]}")
            return md if status.get("phase") == "Ready" and ready.get("status") == "True" else None

        wait_for(ready, timeout=240, interval=0.5, what="the example ModelDeployment Ready")
        external_credentials_need_the_namespaces_consent(kube, namespace, release, release_ns, wait_for)
        # Give the other examples' controllers a moment to act (their requests count as used).
        time.sleep(5)
        # Real status bodies, for the Argo CD health-check fixtures (tests/unit/test_argocd_health.py).
        statuses = json.dumps({plural: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)[
            "items"] for plural in ("modeldeployments", "vectorindexes", "trainingjobs")}, indent=1)
        for where in filter(None, (tmp_path, os.environ.get("AIOPS_TEST_ARTIFACTS"))):
            Path(where).mkdir(parents=True, exist_ok=True)
            (Path(where) / "statuses.json").write_text(statuses)
    finally:
        if operator is not None:
            operator.send_signal(signal.SIGTERM)  # a clean stop releases the Lease: `update` on it
            stopping = time.monotonic()
            try:
                operator.wait(timeout=30)
                print(f"\noperator exited {time.monotonic() - stopping:.1f}s after SIGTERM")
            except subprocess.TimeoutExpired:
                print("\noperator still running 30s after SIGTERM: killed")
                operator.kill()
                operator.wait()
        for example in EXAMPLES.glob("*.yaml"):
            kube.kubectl("delete", "-n", namespace, "-f", str(example), "--wait=false", check=False)
        report_rbac(kube, release, user, tmp_path)

    lease = client.CoordinationV1Api(kube.api_client).read_namespaced_lease(release, release_ns)
    assert not lease.spec.holder_identity, "the operator did not release its Lease on SIGTERM"
    denied, unused, used = report_rbac(kube, release, user, tmp_path)
    kube.helm("uninstall", release, "-n", release_ns, "--wait", check=False)
    kube.core.delete_namespace(release_ns)
    # The one refusal expected: the credentials Secret before the namespace bound the ClusterRole.
    denied = [d for d in denied if d != ("", "secrets", "get", namespace)]
    assert not denied, f"requests the chart's RBAC refused (group, resource, verb, namespace): {denied}"
    assert not unused, f"granted by the chart but never used (drop them, or allowlist with a reason): {unused}"
    assert not (ALLOWED_UNUSED & used), f"allowlisted but used, take them off: {sorted(ALLOWED_UNUSED & used)}"

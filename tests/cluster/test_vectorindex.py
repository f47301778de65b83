"""VectorIndex end to end on the real control plane: the managed Milvus StatefulSet runs a real
Milvus 2.3 standalone on the simulated node (data on a provisioned PVC), the ingest Job runs the
real worker (packaged MiniLM on CPU), and the operator measures the live index's recall."""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from aiops.api.common import GROUP, VERSION
from aiops.conditions import get_condition
from aiops.devenv import servicedns

pytestmark = pytest.mark.timeout(480)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_docs() -> tuple[dict, dict]:
    cm, vi = [d for d in yaml.safe_load_all((EXAMPLES / "vectorindex.yaml").read_text()) if d]
    return cm, vi


def condition(obj: dict, type_: str) -> dict | None:
    return get_condition((obj.get("status") or {}).get("conditions"), type_)


@pytest.fixture
def service_names(kube):
    """The operator runs in this process: let it reach Milvus by its Service name, as in a cluster."""
    servicedns.install(kube.api_client)
    yield
    servicedns.uninstall()


def fit_for_this_node(vi: dict) -> dict:
    """The example VectorIndex sized for the simulated node: 4Gi Milvus and embedder, no schedule,
    a short recall check once an hour."""
    vi["spec"]["milvus"]["managed"]["resources"]["memory"] = "4Gi"
    vi["spec"]["milvus"]["managed"]["resources"].pop("memoryRequest", None)  # equal to memory
    vi["spec"]["embedding"]["resources"]["memory"] = "4Gi"
    vi["spec"]["ingest"].pop("schedule", None)
    vi["spec"]["optimization"]["recall"].update(sampleQueries=5, intervalSeconds=3600)
    return vi


def signs_in(uri: str, token: str) -> bool:
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, token=token, timeout=10)
        try:
            client.list_collections()
        finally:
            client.close()
    except Exception:
        return False
    return True


def test_managed_milvus_ingest_update_and_recall(kube, namespace, service_names, operator, wait_for):
    cm, vi = example_docs()
    vi = fit_for_this_node(copy.deepcopy(vi))
    kube.core.create_namespaced_config_map(namespace, cm)
    custom = client.CustomObjectsApi(kube.api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", vi)
    name = vi["metadata"]["name"]

    def get():
        return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", name)

    def ready_after(run_key=None):
        def check():
            obj = get()
            st = obj.get("status") or {}
            last = st.get("lastIngest") or {}
            if last.get("outcome") == "Failed":
                return obj
            done = st.get("phase") == "Ready" and last.get("outcome") == "Succeeded"
            return obj if done and last.get("key") != run_key else None
        return check

    docs = [json.loads(line) for line in cm["data"]["manual.jsonl"].splitlines() if line.strip()]
    obj = wait_for(ready_after(), timeout=300, what="Milvus up, the first ingest done, recall measured")
    st = obj["status"]
    assert st["lastIngest"]["outcome"] == "Succeeded", st
    assert st["documents"]["total"] == len(docs) and st["documents"]["ingested"] == len(docs)
    assert st["lastIngest"]["embedded"] == len(docs)
    for type_ in ("Valid", "MilvusReady", "Ingested", "IndexReady"):
        assert condition(obj, type_)["status"] == "True", (type_, condition(obj, type_))
    assert st["index"]["recallAtK"] >= 0.95 and st["index"]["type"] == "HNSW"
    sts = client.AppsV1Api(kube.api_client).read_namespaced_stateful_set(f"{name}-milvus", namespace)
    assert sts.spec.template.spec.containers[0].resources.limits["memory"] == "4Gi"
    claims = kube.core.list_namespaced_persistent_volume_claim(namespace).items
    assert [c.status.phase for c in claims] == ["Bound"]
    # Every client signs in, with the password in the Secret status names; Milvus's built-in one is gone.
    secret = kube.core.read_namespaced_secret(st["credentialsSecret"], namespace)
    assert secret.type == "kubernetes.io/basic-auth" and secret.metadata.owner_references[0].name == name
    creds = {k: base64.b64decode(v).decode() for k, v in secret.data.items()}
    uri = st["milvusUri"]
    assert signs_in(uri, f"{creds['username']}:{creds['password']}")
    assert not signs_in(uri, "root:Milvus") and not signs_in(uri, "")
    assert kube.core.list_namespaced_event(namespace, field_selector="reason=MilvusSecured").items
    # Milvus's gRPC and metrics ports only (not its embedded etcd's), to the namespace and the operator.
    policy = client.NetworkingV1Api(kube.api_client).read_namespaced_network_policy(f"{name}-milvus", namespace)
    assert [p.port for p in policy.spec.ingress[0].ports] == [19530, 9091]
    assert policy.metadata.owner_references[0].name == name
    selected = kube.core.list_namespaced_pod(namespace, label_selector=",".join(
        f"{k}={v}" for k, v in policy.spec.pod_selector.match_labels.items())).items
    assert [p.metadata.name for p in selected] == [f"{name}-milvus-0"]

    # One document changes, one goes away: only the changed one is embedded again.
    first_key = st["lastIngest"]["key"]
    changed = docs[0] | {"text": docs[0]["text"] + " Updated procedure applies from now on."}
    cm["data"]["manual.jsonl"] = "\n".join(json.dumps(d) for d in [changed, *docs[1:-1]]) + "\n"
    kube.core.replace_namespaced_config_map(cm["metadata"]["name"], namespace, cm)
    obj = wait_for(ready_after(first_key), timeout=180, what="the re-ingest after the source changed")
    last = obj["status"]["lastIngest"]
    assert last["outcome"] == "Succeeded", obj["status"]
    assert (last["embedded"], last["skipped"]) == (1, len(docs) - 2)
    assert obj["status"]["documents"]["total"] == len(docs) - 1
    assert obj["status"]["documents"]["deleted"] == 1
    jobs = client.BatchV1Api(kube.api_client).list_namespaced_job(
        namespace, label_selector=f"aiops.dev/vectorindex={name}").items
    assert len(jobs) == 2  # one per source version, never a duplicate
    # Each run is its Job alone (the spec rides on its pod): pruning the Job leaves nothing behind.
    assert kube.core.list_namespaced_config_map(
        namespace, label_selector=f"aiops.dev/vectorindex={name},aiops.dev/role=ingest").items == []
    assert all(j.spec.template.metadata.annotations["aiops.dev/spec"] for j in jobs)


def test_a_milvus_pod_the_scheduler_cannot_place_says_why(kube, namespace, operator, wait_for, memory_hog):
    """The node's memory taken by another pod: Milvus's pod stays Pending, and MilvusReady names
    the short resource in the capacity check's words, with the scheduler's message."""
    cm, vi = example_docs()
    vi["spec"]["milvus"]["managed"]["resources"].update(memory="4Gi", memoryRequest="2Gi")
    kube.core.create_namespaced_config_map(namespace, cm)
    custom = client.CustomObjectsApi(kube.api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", vi)

    def unplaced():
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", "ops-manual")
        c = condition(obj, "MilvusReady") or {}
        return c if c.get("reason") == "InsufficientMemory" else None

    ready = wait_for(unplaced, timeout=60, what="MilvusReady=False InsufficientMemory")
    assert ready["status"] == "False" and "Insufficient memory" in ready["message"], ready


def test_an_object_of_the_same_name_that_is_not_ours_is_never_used(kube, namespace, operator, wait_for):
    """A Service named like the managed Milvus's, made by someone else (it could route the index's
    documents to their own server): the operator neither uses nor changes it, says so, and makes
    no Milvus behind it."""
    cm, vi = example_docs()
    kube.core.create_namespaced_config_map(namespace, cm)
    name = vi["metadata"]["name"]
    foreign = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{name}-milvus"},
               "spec": {"selector": {"app": "elsewhere"}, "ports": [{"name": "grpc", "port": 19530}]}}
    kube.core.create_namespaced_service(namespace, foreign)
    custom = client.CustomObjectsApi(kube.api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", vi)

    def refused():
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", name)
        c = condition(obj, "MilvusReady") or {}
        return c if c.get("reason") == "NameTaken" else None

    taken = wait_for(refused, timeout=60, what="MilvusReady=False NameTaken")
    assert taken["status"] == "False" and f"Service {name}-milvus already exists" in taken["message"], taken
    service = kube.core.read_namespaced_service(f"{name}-milvus", namespace)
    assert service.spec.selector == {"app": "elsewhere"} and not service.metadata.owner_references
    sets = client.AppsV1Api(kube.api_client).list_namespaced_stateful_set(namespace).items
    assert sets == [], "no Milvus is made behind a Service that is not ours"
    events = kube.core.list_namespaced_event(namespace, field_selector="reason=NameTaken").items
    assert len(events) == 1


def test_a_credentials_secret_goes_only_where_its_annotation_allows(kube, namespace, operator, wait_for):
    """A VectorIndex author names a Secret and a URI of their own: the operator sends the Secret
    nowhere until someone who may edit the Secret lists that URI on it, and no Job mounts it."""
    cm, vi = example_docs()
    kube.core.create_namespaced_config_map(namespace, cm)
    uri = "http://milvus.search.invalid:19530"
    vi["spec"]["milvus"] = {"external": {"uri": uri, "credentials": {"secretName": "milvus-auth"}}}
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "milvus-auth"},
                                                   "stringData": {"username": "root", "password": "s3cret"}})
    custom = client.CustomObjectsApi(kube.api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", vi)
    name = vi["metadata"]["name"]

    def milvus_ready(reason: str, words: str):
        def check():
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", name)
            c = condition(obj, "MilvusReady") or {}
            return c if c.get("reason") == reason and words in c.get("message", "") else None
        return check

    refused = wait_for(milvus_ready("CredentialsNotPermitted", "is not marked for Milvus"), timeout=60,
                       what="MilvusReady=False CredentialsNotPermitted")
    assert f"aiops.dev/milvus-uris={uri}" in refused["message"] and refused["status"] == "False"

    def annotate(uris: str) -> None:
        kube.core.patch_namespaced_secret("milvus-auth", namespace,
                                          {"metadata": {"annotations": {"aiops.dev/milvus-uris": uris}}})

    annotate("http://milvus.elsewhere:19530")
    wait_for(milvus_ready("CredentialsNotPermitted", f"does not allow being sent to {uri}"), timeout=60,
             what="a Secret for another Milvus still refused")
    assert client.BatchV1Api(kube.api_client).list_namespaced_job(namespace).items == []

    annotate(f"http://milvus.elsewhere:19530, {uri}")  # now it may go there: the URI is tried
    wait_for(milvus_ready("MilvusUnreachable", uri), timeout=90, what="the allowed URI tried")


def test_ingest_progress_moves_in_status_while_the_job_runs(kube, namespace, service_names, operator, wait_for):
    """Documents done of the total, rate, percent and ETA read from the running pod."""
    from aiops.vectors.corpus import load_corpus

    cm, vi = example_docs()
    docs = load_corpus(600)
    cm["data"] = {"manual.jsonl": "".join(json.dumps(d) + "\n" for d in docs)}
    fit_for_this_node(vi)
    vi["spec"]["embedding"].update(device="cpu", batchSize=16, maxSequenceLength=128)
    vi["spec"]["embedding"]["resources"].update(gpus=0)
    vi["spec"]["embedding"]["resources"].pop("memoryRequest", None)
    kube.core.create_namespaced_config_map(namespace, cm)
    custom = client.CustomObjectsApi(kube.api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", vi)
    name = vi["metadata"]["name"]
    seen, deadline = [], time.monotonic() + 420
    while time.monotonic() < deadline:
        st = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "vectorindexes", name).get("status") or {}
        last = st.get("lastIngest") or {}
        if last.get("outcome") in ("Succeeded", "Failed"):
            break
        if st.get("progress") and st["progress"] not in seen:
            seen.append(st["progress"])
        time.sleep(0.3)
    assert last.get("outcome") == "Succeeded", st
    assert len({p["done"] for p in seen}) >= 3, seen
    assert [p["done"] for p in seen] == sorted(p["done"] for p in seen)
    assert all(p["total"] == len(docs) and 0 < p["percent"] <= 100 and p["updatedAt"] for p in seen)
    assert any(p.get("documentsPerSecond") and "etaSeconds" in p for p in seen), seen
    assert "progress" not in st and last["embedded"] == len(docs)  # the run's figures are in lastIngest

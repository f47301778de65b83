"""A language model as a ModelDeployment, the whole path on the local cluster: the small causal
LM of aiops.devenv.tinylm (the local counterpart of an LLM behind the vLLM backend) validated by
its generation samples in the validation Job, loaded into the Triton pod, answering a streamed
generate request, swapped v1 -> v2 in the running server, and a version whose answers fail the
checks rejected while the good one keeps serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_modeldeployment import MDs, condition, serving, triton_pods

from aiops.api.common import GROUP, VERSION
from aiops.api.modeldeployment import GenerateRequest
from aiops.devenv.tinylm import CORPORA, train, write_tiny_lm
from aiops.triton.client import TritonServer

MODEL = "tinylm"
pytestmark = pytest.mark.timeout(300)


def llm_manifest(name: str, repo: Path, version: int, **spec) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {
            "model": {"name": MODEL, "version": version, "backend": "python"},
            "llm": {"engine": "python"},
            "repository": {"hostPath": {"path": str(repo)}},
            "resources": {"gpus": 2, "memory": "2Gi"},
            "validation": {"samples": [
                {"name": "france", "generate": {"prompt": "The capital of France is", "maxTokens": 16},
                 "expectedText": {"contains": ["Paris"]}},
                {"name": "italy-streamed", "generate": {"prompt": "The capital of Italy is", "stream": True},
                 "expectedText": {"exact": "Rome."}}]},
            "healthCheck": {"periodSeconds": 2, "failureThreshold": 2, "progressDeadlineSeconds": 120},
            "monitoring": {"enabled": False},
        },
    }
    body["spec"].update(spec)
    return body


@pytest.fixture(scope="module")
def llm_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("llm") / "models"
    facts = train(CORPORA["facts"])
    write_tiny_lm(repo, MODEL, 1, weights=facts)
    write_tiny_lm(repo, MODEL, 2, weights=facts, token_delay_ms=1)
    write_tiny_lm(repo, MODEL, 3, corpus="wrong")
    return repo


def stream(ip: str, prompt: str, version: int):
    async def ask():
        async with TritonServer(f"{ip}:8000", timeout=30) as server:
            return await server.generate(MODEL, version, GenerateRequest.from_wire({"prompt": prompt, "stream": True}))
    return asyncio.run(ask())


def test_an_llm_is_validated_by_generation_served_streamed_swapped_and_a_wrong_version_rejected(
        kube, namespace, operator, wait_for, llm_repo):
    mds = MDs(kube, namespace)
    mds.create(llm_manifest("chat", llm_repo, 1))
    obj = wait_for(serving(mds, "chat", 1), timeout=180, what="version 1 of the LLM serving and Ready")
    assert condition(obj, "Valid")["status"] == "True"
    (pod,) = triton_pods(kube, namespace)
    answer = stream(pod.status.pod_ip, "The capital of Spain is", 1)
    assert answer.text == " Madrid." and answer.chunks == len(" Madrid.")

    # v1 -> v2 in the running server: a small model loads beside the serving one.
    mds.patch("chat", {"spec": {"model": {"version": 2}}})
    obj = wait_for(serving(mds, "chat", 2), timeout=180, what="version 2 serving")
    assert [p.metadata.uid for p in triton_pods(kube, namespace)] == [pod.metadata.uid]
    assert [(h["version"], h["outcome"]) for h in obj["status"]["history"]][:2] == [(2, "Serving"), (1, "Superseded")]
    assert stream(pod.status.pod_ip, "The capital of Japan is", 2).text == " Tokyo."

    # v3 learnt other capitals: its generation samples fail, v2 keeps serving.
    mds.patch("chat", {"spec": {"model": {"version": 3}}})

    def rejected():
        o = mds.get("chat")
        return o if 3 in (o.get("status") or {}).get("rejectedVersions", []) else None

    obj = wait_for(rejected, timeout=180, what="version 3 rejected")
    assert condition(obj, "RolledBack")["status"] == "True"
    failed = obj["status"]["history"][0]
    assert (failed["version"], failed["outcome"], failed["reason"]) == (3, "Failed", "SampleMismatch")
    assert "Lyon" in failed["message"] or "Milan" in failed["message"]
    assert obj["status"]["servingVersion"] == 2 and condition(obj, "Ready")["status"] == "True"
    assert stream(pod.status.pod_ip, "The capital of France is", 2).text == " Paris."


@pytest.mark.timeout(480)
def test_a_version_slower_per_token_is_rolled_back_by_monitoring_on_probe_traffic_alone(
        kube, namespace, operator, wait_for, tmp_path):
    """Nobody sends a request: the monitor's generation probes are all the traffic. Version 1
    (4 ms per token) sets the baseline; version 2 answers the same, 3x slower per token, and
    monitoring rolls it back."""
    repo = tmp_path / "models"
    facts = train(CORPORA["facts"])
    write_tiny_lm(repo, MODEL, 1, weights=facts, token_delay_ms=4)
    write_tiny_lm(repo, MODEL, 2, weights=facts, token_delay_ms=12)
    monitoring = {"enabled": True, "intervalSeconds": 5, "windowSeconds": 30, "consecutiveWindows": 2,
                  "minSamples": 6, "action": "rollback"}
    mds = MDs(kube, namespace)
    mds.create(llm_manifest("chat", repo, 1, monitoring=monitoring))
    wait_for(serving(mds, "chat", 1), timeout=180, what="version 1 serving")

    def baseline_taken():
        st = mds.get("chat").get("status") or {}
        return st if (st.get("baseline") or {}).get("timePerOutputTokenMs") else None

    st = wait_for(baseline_taken, timeout=150, what="version 1's baseline with its generation figures")
    assert st["metrics"]["timeToFirstTokenMs"] > 0 and st["metrics"]["tokensPerSecond"] > 0
    assert st["baseline"]["timePerOutputTokenMs"] >= 4

    mds.patch("chat", {"spec": {"model": {"version": 2}}})
    wait_for(serving(mds, "chat", 2), timeout=180, what="version 2 serving")

    def rolled_back():
        o = mds.get("chat")
        c = condition(o, "RolledBack")
        return o if c and c["status"] == "True" and o["status"].get("servingVersion") == 1 else None

    obj = wait_for(rolled_back, timeout=180, what="version 2 rolled back by monitoring")
    rolled = condition(obj, "RolledBack")
    assert rolled["reason"] == "TimePerOutputTokenShift", rolled
    assert "version 1's baseline" in rolled["message"]
    assert obj["status"]["rejectedVersions"] == [2]


def gpu_pods(kube) -> list:
    """Pods anywhere that hold whole GPUs (other tests' namespaces may still be going away)."""
    return [p for p in kube.core.list_pod_for_all_namespaces().items
            if any((c.resources.limits or {}).get("nvidia.com/gpu") for c in p.spec.containers)
            and p.status.phase not in ("Succeeded", "Failed")]


@pytest.mark.parametrize("gpus, swap", [(1, "Surge"), (2, "Replace")])
def test_two_versions_that_do_not_fit_one_pod_surge_where_a_node_has_room_else_swap_in_place(
        kube, namespace, operator, wait_for, llm_repo, gpus, swap):
    """90% of each GPU per version: never beside each other in one pod. With one GPU per pod the
    node (two GPUs) has room for a new pod: version 2 comes up in it and nothing stops
    answering. With both GPUs taken, version 1 is unloaded and version 2 loaded in the same pod,
    and the time without an answer is stated."""
    mds = MDs(kube, namespace)
    mds.create(llm_manifest("big", llm_repo, 1, resources={"gpus": gpus, "memory": "2Gi"},
                            llm={"engine": "python", "gpuMemoryUtilization": 0.9}))
    wait_for(serving(mds, "big", 1), timeout=180, what="version 1 serving")
    (pod,) = triton_pods(kube, namespace)
    wait_for(lambda: len(gpu_pods(kube)) == 1 or None, timeout=120, what="no other pod holding GPUs")

    mds.patch("big", {"spec": {"model": {"version": 2}}})
    obj = wait_for(serving(mds, "big", 2), timeout=180, what="version 2 serving")
    message = obj["status"]["history"][0]["message"]
    reasons = [e.reason for e in kube.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=big").items]
    wait_for(lambda: len(triton_pods(kube, namespace)) == 1 or None, timeout=90, what="one Triton pod again")
    (now,) = triton_pods(kube, namespace)
    if swap == "Surge":
        assert "new pods came up beside version 1's" in message, message
        assert now.metadata.uid != pod.metadata.uid and "VersionSurge" in reasons
    else:
        assert "replaced version 1 in place" in message and "s without an answer" in message, message
        assert now.metadata.uid == pod.metadata.uid
        wait_for(lambda: "VersionSwapOutage" in [e.reason for e in kube.core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=big").items] or None, what="the outage Event")
    assert stream(now.status.pod_ip, "The capital of Egypt is", 2).text == " Cairo."

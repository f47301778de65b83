"""The rollout's steps after validation, each on its own, with Triton behind a fake `Servers` and
the API behind a fake kube: Loading puts both versions beside each other, HealthChecking runs the
samples through the versioned endpoint and promotes, repeated health failures end the rollout, a
failure loads the serving version back in place, a restarted pod gets the serving version loaded
again, and a change of replicas alone scales the serving pods. The cluster tests run the same
steps against the real API server and Triton."""

from __future__ import annotations

import asyncio
import json

import pytest

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.rollout.context import Ctx, RolloutFailed
from aiops.rollout.deploy import Deploy
from aiops.rollout.recovery import Recovery
from aiops.rollout.room import Room
from aiops.rollout.world import TEMPLATE_ANNOTATION, World
from aiops.triton.client import Health, TritonError
from aiops.triton.samples import SampleResult

X = [1.0, 2.0, 3.0, 4.0]
SPEC = ModelDeploymentSpec.from_wire({
    "model": {"name": "adder", "version": 2}, "repository": {"hostPath": {"path": "/m"}}, "replicas": 2,
    "validation": {"samples": [{"name": "s", "inputs": [{"name": "INPUT0", "dataType": "FP32", "shape": [1, 4],
                                                         "data": X}],
                                "expectedOutputs": [{"name": "OUTPUT0", "dataType": "FP32", "shape": [1, 4],
                                                     "data": [2 * v for v in X]}]}]},
    "healthCheck": {"failureThreshold": 2}})
CONFIG = {"name": "adder", "backend": "python", "max_batch_size": 8}


def pod(name: str, ip: str, revision: str = "t1") -> dict:
    return {"metadata": {"name": name, "uid": name, "annotations": {TEMPLATE_ANNOTATION: revision}},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "triton", "started": True, "state": {"running": {}}}]}}


WORLD = World({"metadata": {"name": "md-triton", "annotations": {TEMPLATE_ANNOTATION: "t1"}},
               "spec": {"replicas": 2}}, [pod("p0", "10.0.0.1"), pod("p1", "10.0.0.2")])


class FakeServers:
    """Triton in each pod: which versions it has loaded; `broken` pods fail the samples, `lost`
    pods lost their model (a restart), `refuse` pods fail every load."""

    def __init__(self, loaded: dict[str, set[int]] | None = None, broken=(), refuse=()):
        self.loaded = loaded or {"p0": {1}, "p1": {1}}
        self.broken, self.refuse = set(broken), set(refuse)
        self.loads: list[tuple[str, list[int]]] = []

    async def health(self, pod, model, version=None):
        name = pod["metadata"]["name"]
        ready = version is None or version in self.loaded.get(name, set())
        return Health(True, True, ready, "" if ready else f"version {version} not loaded")

    async def load(self, pod, model, config, timeout=300.0):
        name = pod["metadata"]["name"]
        versions = config["version_policy"]["specific"]["versions"]
        self.loads.append((name, versions))
        if name in self.refuse:
            raise TritonError("TritonRequestFailed", f"load of {model} on {name} failed: simulated")
        self.loaded[name] = set(versions)

    async def unload(self, pod, model, timeout=300.0):
        name = pod["metadata"]["name"]
        self.loads.append((name, []))
        self.loaded[name] = set()

    async def run_samples(self, pod, model, version, samples):
        name = pod["metadata"]["name"]
        return [SampleResult(s.name, name not in self.broken, "wrong answer" if name in self.broken else "")
                for s in samples]


class FakeKube:
    def __init__(self, world: World = WORLD):
        self.world = world

    async def observe(self, namespace, md_name, deployment_name, fresh=False):
        return self.world


def ctx(step: str, **status) -> Ctx:
    md = {"metadata": {"name": "md", "namespace": "ns", "generation": 2}, "spec": {}}
    rollout = {"version": 2, "revision": "r2", "step": step, "startedAt": "2026-01-01T00:00:00Z",
               "stepStartedAt": "2026-01-01T00:00:00Z", "healthFailures": 0,
               "modelConfigJson": json.dumps(CONFIG)}
    base = {"servingVersion": 1, "servingRevision": "r1", "servingModelConfigJson": json.dumps(CONFIG),
            "servingDeploymentRevision": 1, "readyReplicas": 2, "rollout": rollout}
    return Ctx(md, {**base, **status})


def parts(servers: FakeServers) -> tuple[Deploy, Recovery]:
    kube = FakeKube()
    deploy = Deploy(kube, servers, Room(kube))
    return deploy, Recovery(kube, servers, deploy)


def test_loading_puts_the_new_version_beside_the_serving_one():
    servers = FakeServers()
    deploy, _ = parts(servers)
    c = ctx("Loading")
    assert asyncio.run(deploy.loading(c, SPEC, WORLD)) == 0.0
    assert servers.loads == [("p0", [1, 2]), ("p1", [1, 2])] and c.status["rollout"]["step"] == "HealthChecking"


def test_a_version_that_answers_its_samples_is_promoted_and_serves_alone():
    servers = FakeServers({"p0": {1, 2}, "p1": {1, 2}})
    deploy, _ = parts(servers)
    c = ctx("HealthChecking")
    assert asyncio.run(deploy.health_checking(c, SPEC, WORLD)) == float(SPEC.health_check.period_seconds)
    st = c.status
    assert servers.loaded == {"p0": {2}, "p1": {2}} and "rollout" not in st
    assert (st["servingVersion"], st["servingRevision"], st["previousVersion"], st["phase"]) == (2, "r2", 1, "Ready")
    assert [(h["version"], h["outcome"]) for h in st["history"]] == [(2, "Serving"), (1, "Superseded")]
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    assert [e[1] for e in c.events] == ["RolloutSucceeded"]


def test_a_healthy_version_is_promoted_only_once_the_kubelet_sees_its_pods_ready():
    """Our own check passes a moment before the pods' readiness probe does; promoting then would
    say Ready=True, flip it back on the next pass, and let `kubectl wait` return too early."""
    from aiops.rollout.deploy import READINESS_POLL

    servers = FakeServers({"p0": {1, 2}, "p1": {1, 2}})
    deploy, _ = parts(servers)
    c = ctx("HealthChecking")
    probing = pod("p1", "10.0.0.2")
    probing["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    waiting = World(WORLD.deployment, [pod("p0", "10.0.0.1"), probing])
    failures = c.status["rollout"].get("healthFailures", 0)
    assert asyncio.run(deploy.health_checking(c, SPEC, waiting)) == READINESS_POLL
    assert c.status["rollout"]["step"] == "HealthChecking"  # waiting, not failing
    assert c.status["rollout"].get("healthFailures", 0) == failures
    assert asyncio.run(deploy.health_checking(c, SPEC, WORLD)) == float(SPEC.health_check.period_seconds)
    assert c.status["servingVersion"] == 2


def test_health_failures_up_to_the_threshold_end_the_rollout():
    servers = FakeServers({"p0": {1, 2}, "p1": {1, 2}}, broken={"p1"})
    deploy, _ = parts(servers)
    c = ctx("HealthChecking")
    asyncio.run(deploy.health_checking(c, SPEC, WORLD))  # one failure: look again
    assert c.status["rollout"]["healthFailures"] == 1 and "servingVersion" in c.status
    with pytest.raises(RolloutFailed) as failed:
        asyncio.run(deploy.health_checking(c, SPEC, WORLD))
    assert failed.value.reason == "HealthCheckFailed"
    assert "p1: 1/1 samples failed (s: wrong answer)" in failed.value.message


def test_a_load_triton_refuses_ends_the_rollout_with_its_words():
    deploy, _ = parts(FakeServers(refuse={"p0"}))
    with pytest.raises(RolloutFailed) as failed:
        asyncio.run(deploy.loading(ctx("Loading"), SPEC, WORLD))
    assert failed.value.reason == "ModelLoadFailed" and "simulated" in failed.value.message


def test_a_failed_rollout_loads_the_serving_version_back_in_place_and_rejects_the_revision():
    servers = FakeServers({"p0": {1, 2}, "p1": {1, 2}})
    _, recovery = parts(servers)
    c = ctx("HealthChecking")
    asyncio.run(recovery.fail(c, SPEC, WORLD, RolloutFailed("HealthCheckFailed", "version 2 answered wrongly")))
    st = c.status
    assert servers.loaded == {"p0": {1}, "p1": {1}} and "rollout" not in st
    assert st["servingVersion"] == 1 and st["rejectedVersions"] == [2] and st["rejected"][0]["revision"] == "r2"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["RolledBack"]["status"] == "True" and conds["RolledBack"]["reason"] == "HealthCheckFailed"
    assert conds["Ready"]["status"] == "True" and st["phase"] == "Ready"
    assert [e[1] for e in c.events] == ["HealthCheckFailed", "RolledBack"]


def test_a_restarted_pod_gets_the_serving_version_loaded_again():
    servers = FakeServers({"p0": {1}, "p1": set()})  # p1 restarted: Triton up, no model
    _, recovery = parts(servers)
    c = ctx("Serving")
    c.status.pop("rollout")
    assert asyncio.run(recovery.serving_health(c, SPEC, WORLD))
    assert servers.loads == [("p1", [1])] and servers.loaded["p1"] == {1}
    assert c.status["phase"] == "Ready"
    refusing = FakeServers({"p0": {1}, "p1": set()}, refuse={"p1"})
    _, recovery = parts(refusing)
    assert not asyncio.run(recovery.serving_health(c, SPEC, WORLD))
    ready = {c["type"]: c for c in c.status["conditions"]}["Ready"]
    assert ready["status"] == "False" and "reloading version 1 into p1" in ready["message"]


# ---- an LLM whose two versions do not fit in GPU memory ------------------------------------------------

def llm_spec(share: float | None = None) -> ModelDeploymentSpec:
    llm = {"engine": "vllm", **({"gpuMemoryUtilization": share} if share else {})}
    return ModelDeploymentSpec.from_wire({**SPEC.to_wire(), "llm": llm, "resources": {"gpus": 2}})


def test_an_llm_too_large_for_two_versions_is_swapped_in_place_and_the_outage_stated():
    servers = FakeServers()
    deploy, _ = parts(servers)
    c = ctx("Loading")
    asyncio.run(deploy.loading(c, llm_spec(), WORLD))  # vLLM's default share, 90% of each GPU
    assert servers.loads == [("p0", []), ("p1", []), ("p0", [2]), ("p1", [2])]  # unloaded, then loaded
    rollout = c.status["rollout"]
    assert rollout["swap"] == "Replace" and rollout["outageSeconds"] >= 0
    assert [e[1] for e in c.events] == ["VersionSwapOutage"] and "90%" in c.events[0][2]
    c.status["rollout"]["step"] = "HealthChecking"
    asyncio.run(deploy.health_checking(c, llm_spec(), WORLD))
    assert "replaced version 1 in place" in c.status["history"][0]["message"]


def test_an_llm_that_takes_a_small_share_loads_beside_the_serving_version():
    servers = FakeServers()
    deploy, _ = parts(servers)
    c = ctx("Loading")
    asyncio.run(deploy.loading(c, llm_spec(share=0.4), WORLD))
    assert servers.loads == [("p0", [1, 2]), ("p1", [1, 2])] and c.status["rollout"]["swap"] == "Beside"
    assert "outageSeconds" not in c.status["rollout"] and c.events == []


def test_a_failed_in_place_load_gets_the_serving_version_back_by_the_same_rule():
    servers = FakeServers(refuse={"p1"})
    deploy, recovery = parts(servers)
    c = ctx("Loading")
    with pytest.raises(RolloutFailed) as failed:
        asyncio.run(deploy.loading(c, llm_spec(), WORLD))
    assert servers.loaded["p0"] == {2} and servers.loaded["p1"] == set()  # p1: nothing at this moment
    servers.refuse.clear()
    asyncio.run(recovery.fail(c, llm_spec(), WORLD, failed.value))
    assert servers.loaded == {"p0": {1}, "p1": {1}}  # version 1 serves again on both
    assert servers.loads[-4:] == [("p0", []), ("p0", [1]), ("p1", []), ("p1", [1])]
    assert c.status["servingVersion"] == 1 and c.status["history"][0]["outcome"] == "Failed"


# ---- a change of replicas alone ------------------------------------------------------------------------

class ScalingKube(FakeKube):
    """The API as a scale sees it: the Deployment and pods, a node with `gpus` GPUs, and the
    scale requests made."""

    def __init__(self, world: World, gpus: int):
        super().__init__(world)
        self.gpus, self.scaled = gpus, []

    async def pod_usages_and_nodes(self):
        from aiops.capacity import pod_usage

        node = {"metadata": {"name": "n", "labels": {}}, "spec": {},
                "status": {"allocatable": {"nvidia.com/gpu": str(self.gpus), "memory": "64Gi", "cpu": "16"},
                           "conditions": [{"type": "Ready", "status": "True"}]}}
        return [u for u in map(pod_usage, self.world.pods) if u], [node]

    async def scale(self, kind, obj, replicas):
        self.scaled.append((kind, obj["metadata"]["name"], replicas))


def scaling(gpus: int) -> tuple[object, ScalingKube, Ctx, World]:
    """The reconciler with version 1 serving on two one-GPU pods, and a spec asking for three."""
    from aiops.rollout.reconciler import ModelDeploymentReconciler

    pods = [pod("p0", "10.0.0.1"), pod("p1", "10.0.0.2")]
    for p in pods:
        p["spec"] = {"nodeName": "n", "containers": [{"name": "triton", "resources": {
            "limits": {"nvidia.com/gpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}}}]}
    world = World({"metadata": {"name": "md-triton", "annotations": {TEMPLATE_ANNOTATION: "t1"},
                                "ownerReferences": [{"uid": "md-uid", "controller": True}]},
                   "spec": {"replicas": 2}}, pods)
    kube = ScalingKube(world, gpus)
    reconciler = ModelDeploymentReconciler(kube, "img", servers=FakeServers())
    c = ctx("Serving")
    c.status.pop("rollout")
    c.md["metadata"]["uid"] = "md-uid"
    return reconciler, kube, c, world


def test_more_replicas_scale_the_serving_pods_without_a_rollout():
    three = ModelDeploymentSpec.from_wire({**SPEC.to_wire(), "resources": {"gpus": 1, "memory": "1Gi"},
                                           "replicas": 3})
    reconciler, kube, c, world = scaling(gpus=4)
    asyncio.run(reconciler._steady(c, three, world))
    assert kube.scaled == [("Deployment", "md-triton", 3)]
    assert "rollout" not in c.status and c.status["servingVersion"] == 1
    assert [e[1] for e in c.events] == ["Scaled"] and "Triton pods 2 -> 3" in c.events[0][2]
    ready = {x["type"]: x for x in c.status["conditions"]}["Ready"]
    assert ready["status"] == "False" and "2 of 3 Triton pods are ready" in ready["message"]


def test_a_scale_up_without_room_waits_and_says_so_once_while_the_version_serves_on():
    from aiops.rollout.context import CAPACITY_POLL

    three = ModelDeploymentSpec.from_wire({**SPEC.to_wire(), "resources": {"gpus": 1, "memory": "1Gi"},
                                           "replicas": 3})
    reconciler, kube, c, world = scaling(gpus=2)
    assert asyncio.run(reconciler._steady(c, three, world)) == CAPACITY_POLL
    assert asyncio.run(reconciler._steady(c, three, world)) == CAPACITY_POLL
    assert kube.scaled == [] and [e[1] for e in c.events] == ["InsufficientGPU"]
    room = {x["type"]: x for x in c.status["conditions"]}["ResourcesAvailable"]
    assert room["status"] == "False" and "Scaling to 3 Triton pods waits for room" in room["message"]
    one = ModelDeploymentSpec.from_wire({**three.to_wire(), "replicas": 1})  # a scale-down needs no room
    asyncio.run(reconciler._steady(c, one, world))
    assert kube.scaled == [("Deployment", "md-triton", 1)]


def test_a_rollout_health_checks_the_pods_it_deployed_while_a_scale_waits_for_it():
    """`replicas` raised mid-rollout: the new version is judged on the Deployment's pods; the
    steady state scales once it serves."""
    servers = FakeServers({"p0": {1, 2}, "p1": {1, 2}})
    deploy, _ = parts(servers)
    three = ModelDeploymentSpec.from_wire({**SPEC.to_wire(), "replicas": 3})
    c = ctx("HealthChecking")
    assert asyncio.run(deploy.health_checking(c, three, WORLD)) == float(SPEC.health_check.period_seconds)
    assert c.status["servingVersion"] == 2


def test_a_version_scaled_to_zero_is_not_ready_and_says_why():
    zero = ModelDeploymentSpec.from_wire({**SPEC.to_wire(), "replicas": 0})
    reconciler, kube, c, world = scaling(gpus=4)
    asyncio.run(reconciler._steady(c, zero, world))
    assert kube.scaled == [("Deployment", "md-triton", 0)]
    _, recovery = parts(FakeServers())
    assert asyncio.run(recovery.serving_health(c, zero, World(world.deployment, [])))
    ready = {x["type"]: x for x in c.status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"], c.status["phase"]) == ("False", "ScaledToZero", "Pending")

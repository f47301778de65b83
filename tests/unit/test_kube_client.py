"""The client's REST paths and where `observe` reads from: the watch's cache on the hot path, the API
server when the caller needs what may have changed a moment ago. The calls themselves run against
the real API server in tests/cluster."""

import asyncio

from aiops.kube.client import custom_path, path
from aiops.rollout.world import RolloutClient

DEPLOYMENT = {"metadata": {"name": "md-triton", "namespace": "ns"}}
POD = {"metadata": {"name": "md-triton-abc", "namespace": "ns"}}


class Cache:
    def deployment(self, namespace, name):
        return DEPLOYMENT if (namespace, name) == ("ns", "md-triton") else None

    def pods(self, namespace, md_name):
        return [POD] if (namespace, md_name) == ("ns", "md") else []


def recording_kubeio(cache=None) -> tuple[RolloutClient, list]:
    """A RolloutClient whose reads record the URL asked for instead of calling a server."""
    kube, asked = RolloutClient(None, cache=cache), []

    async def get(url, **q):
        asked.append(url)
        return {"metadata": {"name": "from-api"}}

    async def items(url, **q):
        asked.append((url, q))
        return []

    kube._get, kube._items = get, items
    return kube, asked


def test_paths_of_core_group_and_subresources():
    assert path("Pod", "ns") == "/api/v1/namespaces/ns/pods"
    assert path("Job", "ns", "validate") == "/apis/batch/v1/namespaces/ns/jobs/validate"
    assert path("Deployment", "ns", "md-triton", "scale") == "/apis/apps/v1/namespaces/ns/deployments/md-triton/scale"
    assert custom_path("vectorindexes", "ns", "docs", "status") == \
        "/apis/aiops.dev/v1alpha1/namespaces/ns/vectorindexes/docs/status"


def test_observe_reads_the_cache_without_calling_the_api():
    kube, asked = recording_kubeio(Cache())
    world = asyncio.run(kube.observe("ns", "md", "md-triton"))
    assert (world.deployment, world.pods, asked) == (DEPLOYMENT, [POD], [])
    assert asyncio.run(kube.observe("ns", "other", "other-triton")).deployment is None


def test_fresh_observe_and_no_cache_read_the_api():
    for kube, asked in (recording_kubeio(Cache()), recording_kubeio(None)):
        world = asyncio.run(kube.observe("ns", "md", "md-triton", fresh=kube.cache is not None))
        assert world.deployment == {"metadata": {"name": "from-api"}}
        assert sorted(map(str, asked)) == sorted(map(str, [
            "/apis/apps/v1/namespaces/ns/deployments/md-triton",
            ("/api/v1/namespaces/ns/pods",
             {"labelSelector": "aiops.dev/modeldeployment=md,app.kubernetes.io/name=triton"})]))


def test_credentials_are_asked_of_the_refresh_hook_at_most_every_few_seconds(monkeypatch):
    """The client's refresh hook (a rotated token comes through it) re-applies a kubeconfig's whole
    configuration: asked per request it cost a tenth of the operator's CPU."""
    from kubernetes import client

    from aiops.kube import session as session_module

    cfg = client.Configuration(host="https://127.0.0.1:6443")
    tokens = iter(["Bearer one", "Bearer two"])
    asked = []

    def refresh(configuration):
        asked.append(1)
        configuration.api_key["BearerToken"] = next(tokens)

    cfg.refresh_api_key_hook = refresh
    now = [100.0]
    monkeypatch.setattr(session_module.time, "monotonic", lambda: now[0])
    s = session_module.ApiSession(cfg)
    assert [s.headers()["Authorization"] for _ in range(3)] == ["Bearer one"] * 3 and len(asked) == 1
    now[0] += session_module.CREDENTIALS_RECHECK
    assert s.headers() == {"Accept": "application/json", "Authorization": "Bearer two"} and len(asked) == 2

"""Which namespaces' events the controllers' callbacks get from the shared informers."""

from aiops.controllers.watches import Watches


def pod(namespace: str) -> dict:
    return {"metadata": {"namespace": namespace, "name": "p"}}


def test_cluster_wide_pods_reach_a_namespaced_operator_only_where_it_serves_except_for_gpu_accounting():
    seen: dict[str, list[str]] = {"own": [], "every": [], "nodes": []}
    watches = Watches(["team-*", "ml"])
    watches.on("pods", lambda kind, obj: seen["own"].append(obj["metadata"]["namespace"]))
    watches.on("pods", lambda kind, obj: seen["every"].append(obj["metadata"]["namespace"]), every_namespace=True)
    watches.on("nodes", lambda kind, obj: seen["nodes"].append(obj["metadata"]["name"]))
    for namespace in ("team-a", "ml", "kube-system"):
        for callback in watches._callbacks["pods"]:
            callback("ADDED", pod(namespace))
    for callback in watches._callbacks["nodes"]:
        callback("ADDED", {"metadata": {"name": "gpu-node"}})
    assert seen == {"own": ["team-a", "ml"], "every": ["team-a", "ml", "kube-system"], "nodes": ["gpu-node"]}


def test_all_namespaces_and_per_namespace_watches_are_not_filtered_again():
    calls = []
    watches = Watches(None)
    watches.on("pods", lambda kind, obj: calls.append(obj))
    watches._callbacks["pods"][0]("ADDED", pod("anywhere"))
    assert len(calls) == 1
    namespaced = Watches(["ml"])  # Jobs are watched in "ml" alone: the informer already filters
    namespaced.on("jobs", lambda kind, obj: calls.append(obj))
    namespaced._callbacks["jobs"][0]("ADDED", pod("ml"))
    assert len(calls) == 2 and namespaced._callbacks["jobs"][0].__name__ == "<lambda>"


def test_namespace_patterns_watch_the_cluster_and_hand_out_only_matching_namespaces():
    """No per-namespace watch can list 'team-*': one cluster-wide informer, filtered for the callbacks."""
    seen = []
    watches = Watches(["team-*"])
    watches.on("jobs", lambda kind, obj: seen.append(obj["metadata"]["namespace"]))
    (informer,) = watches._informers_for(None, "jobs")
    assert informer.path == "/apis/batch/v1/jobs"
    for callback in watches._callbacks["jobs"]:
        informer.subscribe(callback)
    informer.replace([{"metadata": {"namespace": ns, "name": "j", "uid": ns, "resourceVersion": "1"}}
                      for ns in ("team-x", "other")], "2")
    assert seen == ["team-x"] and len(informer.known) == 2

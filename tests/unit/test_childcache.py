"""The reconciler's view of Triton Deployments and pods, kept from the informers' events."""

from aiops.rollout.childcache import WatchedChildren, is_triton


def obj(name: str, md: str = "md", triton: bool = True) -> dict:
    labels = {"aiops.dev/modeldeployment": md, **({"app.kubernetes.io/name": "triton"} if triton else {})}
    return {"metadata": {"namespace": "ns", "name": name, "uid": name, "resourceVersion": "1", "labels": labels}}


def test_pods_are_grouped_by_model_deployment_and_deletions_forget():
    children = WatchedChildren()
    for name, md in (("a", "md"), ("b", "md"), ("c", "other")):
        children.observe_pod(obj(name, md), deleted=False)
    assert [p["metadata"]["name"] for p in children.pods("ns", "md")] == ["a", "b"]
    newer = obj("a")
    newer["status"] = {"phase": "Running"}
    children.observe_pod(newer, deleted=False)
    assert children.pods("ns", "md")[0]["status"]["phase"] == "Running"
    # A deletion announced after a re-list carries only the metadata the informer kept: enough.
    children.observe_pod(obj("a"), deleted=True)
    children.observe_pod(obj("b"), deleted=True)
    assert children.pods("ns", "md") == [] and len(children.pods("ns", "other")) == 1
    assert children.pods("elsewhere", "md") == []


def test_deployments_by_name():
    children = WatchedChildren()
    children.observe_deployment(obj("md-triton"), deleted=False)
    assert children.deployment("ns", "md-triton")["metadata"]["uid"] == "md-triton"
    children.observe_deployment(obj("md-triton"), deleted=True)
    assert children.deployment("ns", "md-triton") is None


def test_only_triton_objects_of_a_model_deployment_count():
    assert is_triton(obj("p")) and not is_triton(obj("p", triton=False))
    assert not is_triton({"metadata": {"labels": {"app.kubernetes.io/name": "triton"}}})
    assert not is_triton({"metadata": {}})

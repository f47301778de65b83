"""The reconciler's view of Triton Deployments and pods from the watch's indices, and how a periodic
LIST hides what the watch missed deleting (Kopf keeps such objects in its indices)."""

from aiops.rollout.childcache import IndexedChildren


def obj(uid: str, version: int, md: str = "md", name: str = "") -> dict:
    return {"metadata": {"uid": uid, "name": name or uid, "resourceVersion": str(version),
                         "labels": {"aiops.dev/modeldeployment": md}}}


def test_reads_and_hides_only_what_a_later_list_lacks():
    deployments = {("ns", "md-triton"): [obj("dep", 10)], ("other", "x-triton"): [obj("dep-x", 10, "x")]}
    pods = {("ns", "md"): [obj("old", 20), obj("listed", 21), obj("newer", 40)]}
    children = IndexedChildren(deployments, pods)
    assert children.deployment("ns", "md-triton")["metadata"]["uid"] == "dep"
    assert children.namespaces() == {"ns", "other"}

    # Listed at 30: "old" was deleted while the watch was away; "newer" came after the list.
    changed = children.drop_vanished("ns", ([obj("dep", 10)], 30), ([obj("listed", 21)], 30))
    assert changed == {("ns", "md")}
    assert [p["metadata"]["uid"] for p in children.pods("ns", "md")] == ["listed", "newer"]
    assert children.deployment("other", "x-triton") is not None  # another namespace: not judged

    # The Deployment gone too; a second pass reports only what is newly hidden.
    assert children.drop_vanished("ns", ([], 50), ([obj("listed", 21), obj("newer", 40)], 50)) == {("ns", "md")}
    assert children.deployment("ns", "md-triton") is None
    assert children.drop_vanished("ns", ([], 60), ([obj("listed", 21), obj("newer", 40)], 60)) == set()


def test_hidden_uids_are_forgotten_once_kopf_drops_them():
    pods = {("ns", "md"): [obj("old", 20)]}
    children = IndexedChildren({}, pods)
    children.drop_vanished("ns", ([], 30), ([], 30))
    assert children.pods("ns", "md") == []
    pods[("ns", "md")] = []
    children.drop_vanished("ns", ([], 31), ([], 31))
    assert children._vanished == set()

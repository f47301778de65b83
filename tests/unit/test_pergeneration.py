"""Spec results remembered per object generation (aiops.pergeneration)."""

from aiops.pergeneration import PerGeneration
from aiops.validity import judge_spec


def body(uid="u1", generation=1, version=1):
    return {"metadata": {"uid": uid, "generation": generation, "name": "md", "namespace": "ns"},
            "spec": {"model": {"name": "m", "version": version}, "repository": {"hostPath": {"path": "/m"}},
                     "resources": {"gpus": 1}}}


def test_computed_once_per_uid_generation_and_extra_and_bounded():
    calls = []
    memo = PerGeneration(size=2)

    def compute(value):
        return lambda: calls.append(value) or value

    assert memo.get(body(), None, compute("a")) == "a"
    assert memo.get(body(), None, compute("b")) == "a"  # same generation: remembered
    assert memo.get(body(generation=2), None, compute("c")) == "c"  # the spec changed
    assert memo.get(body(), "other facts", compute("d")) == "d"  # evicts the least recent: (u1, 1)
    assert memo.get(body(generation=2), None, compute("x")) == "c"
    assert memo.get(body(), None, compute("e")) == "e"
    unsaved = {"metadata": {"name": "by-hand"}}
    assert memo.get(unsaved, None, compute("f")) == "f" and memo.get(unsaved, None, compute("g")) == "g"
    assert calls == ["a", "c", "d", "e", "f", "g"]


def test_judge_spec_follows_the_generation_and_the_nodes():
    node = {"metadata": {"name": "n"}, "status": {"allocatable": {"nvidia.com/gpu": "1"}}}
    status: dict = {}
    first, _ = judge_spec("ModelDeployment", body(), status, [node])
    again, _ = judge_spec("ModelDeployment", body(), status, [node])
    assert first is again and first.model.version == 1
    changed, _ = judge_spec("ModelDeployment", body(generation=2, version=2), status, [node])
    assert changed.model.version == 2
    # The same spec judged against other nodes is checked afresh: 2 GPUs do not fit a 1-GPU node.
    two = body(generation=3)
    two["spec"]["resources"] = {"gpus": 2}
    assert judge_spec("ModelDeployment", two, status, [node])[0] is None
    roomy = {"metadata": {"name": "n"}, "status": {"allocatable": {"nvidia.com/gpu": "2"}}}
    assert judge_spec("ModelDeployment", two, status, [roomy])[0] is not None

"""The Argo CD health checks (Lua, deploy/argocd/health/) run by a real Lua interpreter (lupa)
against status bodies from a real run and from the reconciler's code paths
(argocd_health_statuses.json says which is which). Argo CD calls the script with the object as the
global `obj` and takes the returned table's `status` and `message`."""

from __future__ import annotations

import json
from pathlib import Path

import lupa
import pytest

from aiops.api.modeldeployment import ModelDeploymentStatus
from aiops.api.trainingjob import TrainingJobStatus
from aiops.api.vectorindex import VectorIndexStatus

ROOT = Path(__file__).resolve().parents[2]
HEALTH = ROOT / "deploy" / "argocd" / "health"
FIXTURES = json.loads((Path(__file__).parent / "argocd_health_statuses.json").read_text())
SCRIPTS = {"ModelDeployment": "modeldeployment.lua", "VectorIndex": "vectorindex.lua",
           "TrainingJob": "trainingjob.lua"}
STATUS_MODELS = {"ModelDeployment": ModelDeploymentStatus, "VectorIndex": VectorIndexStatus,
                 "TrainingJob": TrainingJobStatus}
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def to_lua(lua: lupa.LuaRuntime, value):
    """JSON -> Lua as Argo CD hands objects to scripts: objects become tables, arrays 1-based tables."""
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def run_health(kind: str, obj: dict) -> dict:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute((HEALTH / SCRIPTS[kind]).read_text())
    return dict(result.items())


CASES = [(kind, case) for kind in SCRIPTS for case in FIXTURES[kind]]


@pytest.mark.parametrize("kind, case", CASES, ids=[f"{k}-{c['name']}" for k, c in CASES])
def test_health_of_each_status(kind, case):
    health = run_health(kind, case["object"])
    assert health["status"] == case["expect"]["status"], health
    assert case["expect"]["messageContains"] in health["message"], health
    assert health["status"] in ARGO_STATUSES


@pytest.mark.parametrize("kind, case", CASES, ids=[f"{k}-{c['name']}" for k, c in CASES])
def test_fixtures_are_statuses_the_api_accepts(kind, case):
    if "status" in case["object"]:
        STATUS_MODELS[kind].model_validate(case["object"]["status"])


def test_every_kind_has_real_and_every_outcome_covered():
    assert any(c["source"] == "real" for c in FIXTURES["ModelDeployment"])
    assert any(c["source"] == "real" for c in FIXTURES["TrainingJob"])
    for kind in SCRIPTS:
        assert {"Healthy", "Progressing", "Degraded"} <= {c["expect"]["status"] for c in FIXTURES[kind]}, kind
    assert "Suspended" in {c["expect"]["status"] for c in FIXTURES["VectorIndex"]}


@pytest.mark.parametrize("kind", SCRIPTS)
def test_sparse_objects_neither_crash_nor_pass_as_healthy(kind):
    """A Lua error shows in Argo CD as a failed health check: odd input must not raise, and a status
    that says too little is not Healthy."""
    for obj in ({}, {"metadata": {}}, {"status": {}}, {"status": {"conditions": []}},
                {"status": {"phase": "Ready", "conditions": [{"type": "Ready"}]}}):
        health = run_health(kind, obj)
        assert health["status"] in ("Progressing", "Degraded"), (obj, health)

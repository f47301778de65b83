"""Least privilege, shown on the real node: every request the operator made while it ran in its
pod, through every other test of the tier, was allowed by the RBAC it was installed with: the
chart's (the examples' rollouts, training and ingest, the hostPath failures, a version swap and a
rejected version, both SIGKILL recoveries) and deploy/'s (the kustomize install's VectorIndex).
Runs last (see conftest.py)."""

from __future__ import annotations

import json

import pytest

from aiops.devenv.realcluster import OPERATOR_NAMESPACE

ACCOUNTS = {"the chart's": f"system:serviceaccount:{OPERATOR_NAMESPACE}:aiops-aiops-operator",
            "deploy/'s": f"system:serviceaccount:{OPERATOR_NAMESPACE}:aiops-operator"}


@pytest.mark.parametrize("install", list(ACCOUNTS))
def test_no_request_of_the_operator_was_refused(real, install):
    audit = real.cp.state_dir / "logs" / "audit.log"
    events = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    ours = [e for e in events if e.get("user", {}).get("username") == ACCOUNTS[install] and e.get("objectRef")]
    assert len(ours) > 20, f"{install} operator's requests are in the audit log"
    denied = sorted({(e["objectRef"].get("resource"), e["verb"], e["objectRef"].get("namespace", ""))
                     for e in ours if e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"})
    assert not denied, f"requests {install} RBAC refused: {denied}"

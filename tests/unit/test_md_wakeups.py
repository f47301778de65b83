"""Which child events wake a ModelDeployment's reconcile (aiops.controllers.modeldeployment)."""

from aiops.controllers.modeldeployment import wakes_owner

VALIDATING = {"status": {"rollout": {"step": "Validating"}}}
LOADING = {"status": {"rollout": {"step": "Loading"}}}
UPGRADE_VALIDATING = {"status": {"servingVersion": 1, "rollout": {"step": "Validating"}}}


def validation(kind: str, **status) -> dict:
    return {"kind": kind, "metadata": {"labels": {"aiops.dev/modeldeployment": "md", "aiops.dev/role": "validation"}},
            "status": status}


TRITON_POD = {"kind": "Pod", "metadata": {"labels": {"aiops.dev/modeldeployment": "md",
                                                     "app.kubernetes.io/name": "triton"}},
              "status": {"phase": "Running"}}


def test_only_a_finished_validation_wakes_the_owner():
    assert not wakes_owner("MODIFIED", validation("Pod", phase="Running"), VALIDATING, False)
    assert wakes_owner("MODIFIED", validation("Pod", phase="Succeeded"), VALIDATING, False)
    assert wakes_owner("MODIFIED", validation("Pod", phase="Failed"), VALIDATING, False)
    assert not wakes_owner("ADDED", validation("Job"), VALIDATING, False)
    assert not wakes_owner("MODIFIED", validation("Job", conditions=[{"type": "Complete", "status": "False"}]),
                           VALIDATING, False)
    assert wakes_owner("MODIFIED", validation("Job", conditions=[{"type": "Failed", "status": "True"}]),
                       VALIDATING, False)


def test_triton_events_wait_until_a_first_version_is_valid():
    assert not wakes_owner("MODIFIED", TRITON_POD, VALIDATING, False)
    assert wakes_owner("MODIFIED", TRITON_POD, LOADING, False)
    assert wakes_owner("MODIFIED", TRITON_POD, UPGRADE_VALIDATING, False)  # a serving version is watched
    assert wakes_owner("MODIFIED", TRITON_POD, {}, False)  # not reconciled yet: no rollout to judge by


def test_deletions_and_a_pass_in_flight_always_wake():
    assert wakes_owner("DELETED", validation("Pod", phase="Running"), VALIDATING, False)
    assert wakes_owner("DELETED", TRITON_POD, VALIDATING, False)
    # The pass in flight may just have ended validation; its status is not written back yet.
    assert wakes_owner("MODIFIED", TRITON_POD, VALIDATING, True)
    assert wakes_owner("MODIFIED", validation("Pod", phase="Pending"), VALIDATING, True)

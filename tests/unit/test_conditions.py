import pytest

from aiops.conditions import get_condition, is_true, set_condition


def test_new_condition_gets_a_transition_time_and_generation():
    conds = set_condition([], "Valid", True, "SpecValid", "ok", generation=3, now="2026-01-01T00:00:00Z")
    assert conds == [{"type": "Valid", "status": "True", "reason": "SpecValid", "message": "ok",
                      "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3}]


def test_same_status_keeps_transition_time_but_updates_reason_and_message():
    conds = set_condition([], "Ready", False, "Deploying", "a", now="2026-01-01T00:00:00Z")
    conds = set_condition(conds, "Ready", False, "HealthChecking", "b", now="2026-01-02T00:00:00Z")
    c = get_condition(conds, "Ready")
    assert c["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert (c["reason"], c["message"]) == ("HealthChecking", "b")


def test_status_change_moves_transition_time_and_keeps_other_conditions():
    conds = set_condition([], "Ready", False, "Deploying", "a", now="2026-01-01T00:00:00Z")
    conds = set_condition(conds, "Valid", True, "SpecValid", "ok", now="2026-01-01T00:00:00Z")
    conds = set_condition(conds, "Ready", True, "Healthy", "up", now="2026-01-03T00:00:00Z")
    assert [c["type"] for c in conds] == ["Ready", "Valid"]
    assert get_condition(conds, "Ready")["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    assert is_true(conds, "Ready") and is_true(conds, "Valid") and not is_true(conds, "Degraded")


def test_status_words_are_checked():
    assert set_condition(None, "X", "Unknown", "R", "m")[0]["status"] == "Unknown"
    with pytest.raises(ValueError):
        set_condition(None, "X", "maybe", "R", "m")

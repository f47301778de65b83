"""The `Valid` condition, the same for every kind: semantic checks the CRD schema cannot express,
run first on every reconcile.

An invalid spec gets `Valid=False` with the rule's reason and message, phase Invalid and a
Warning Event (once per distinct problem), and the reconciler stops there: nothing is created.
Fixing the spec carries on by itself."""

from __future__ import annotations

from typing import Any

from aiops.api.validation import SpecCheck, check_spec, condition_summary
from aiops.conditions import get_condition, set_condition
from aiops.nodes import max_gpus_per_node
from aiops.pergeneration import PerGeneration

Event = tuple[str, str, str]


_CHECKS: PerGeneration[SpecCheck] = PerGeneration()


def judge_spec(kind: str, body: dict, status: dict, nodes: list[dict],
               host_paths: tuple[str, ...] | None = None) -> tuple[Any | None, list[Event]]:
    """(the parsed spec, or None when invalid; the Events to post). Updates `status` in place.
    `host_paths`: the node directories CRs may mount (None: not restricted)."""
    generation = body["metadata"].get("generation")
    most_gpus = max_gpus_per_node(nodes) or None
    check = _CHECKS.get(body, (kind, tuple(sorted((most_gpus or {}).items())), host_paths),
                        lambda: check_spec(kind, body["spec"], max_gpus_per_node=most_gpus,
                                           allowed_host_paths=host_paths))
    reason, message = condition_summary(check.problems)
    before = get_condition(status.get("conditions"), "Valid")
    status["conditions"] = set_condition(status.get("conditions"), "Valid", check.valid, reason, message,
                                         generation)
    if check.valid:
        if before and before.get("status") == "False":
            return check.spec, [("Normal", "SpecValid", "The spec is valid again; carrying on.")]
        return check.spec, []
    status["observedGeneration"] = generation
    status["phase"] = "Invalid"
    if not before or (before.get("reason"), before.get("message")) != (reason, message):
        return None, [("Warning", reason, message)]
    return None, []

"""The `Valid` condition: semantic checks the CRD schema cannot express, run before anything else.

An invalid spec gets `Valid=False` with the rule's reason and message, phase Invalid and a
Warning Event, and the handler stops there: no children are created. Fixing the spec triggers the
update handler, which finds it valid and carries on; nobody has to clean anything up by hand.
"""

from __future__ import annotations

import logging

import kopf

from aiops.api.common import GROUP, VERSION
from aiops.api.registry import KindInfo
from aiops.api.validation import condition_summary, semantic_problems
from aiops.controllers.conditions import get_condition, set_condition
from aiops.controllers.nodes import NodeCache, max_gpus_per_node


def check_spec(info: KindInfo, body: kopf.Body, patch: kopf.Patch, nodes: NodeCache,
               logger: logging.Logger | logging.LoggerAdapter) -> bool:
    """Sets the Valid condition in `patch`; True when the spec may be acted on."""
    known = max_gpus_per_node(nodes.all())
    problems = semantic_problems(info.kind, body.spec, max_gpus_per_node=known or None)
    reason, message = condition_summary(problems)
    generation = body.metadata.get("generation")
    status = body.status
    conditions = patch.status.get("conditions", status.get("conditions"))
    before = get_condition(conditions, "Valid")
    patch.status["conditions"] = set_condition(conditions, "Valid", not problems, reason, message,
                                               generation)
    patch.status["observedGeneration"] = generation
    changed = before is None or (before.get("status"), before.get("reason"), before.get("message")) != (
        "False" if problems else "True", reason, message)
    if problems:
        patch.status["phase"] = "Invalid"
        if changed:
            kopf.warn(body, reason=reason, message=message)
            logger.warning("spec is invalid: %s", message)
        return False
    if before is not None and before.get("status") == "False":
        kopf.info(body, reason="SpecValid", message="The spec is valid again; carrying on.")
        patch.status["phase"] = "Pending"
    return True



def validate_only(info: KindInfo) -> None:
    """Registers handlers that keep the Valid condition of a kind whose controller does nothing
    more yet (VectorIndex, TrainingJob): invalid specs are reported before any work exists."""
    resource = (GROUP, VERSION, info.plural)

    @kopf.on.resume(*resource)
    @kopf.on.create(*resource)
    @kopf.on.update(*resource, field="spec")
    def keep_valid_condition(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                             logger: logging.LoggerAdapter, **_: object) -> None:
        check_spec(info, body, patch, memo.nodes, logger)

"""Semantic validation: rules that relate fields to each other or to the cluster, which a CRD
schema cannot state on Kubernetes 1.20 (no CEL there). One module per kind holds its rules;
`base` holds what they share.

The operator runs `semantic_problems` before acting; any problem becomes the condition
`Valid=False` with the problem's reason and message and an Event, and nothing else happens until
the spec is fixed. Pure functions: no I/O, the cluster facts come in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from aiops.api.common import SpecModel
from aiops.api.registry import kind_info
from aiops.api.validation import modeldeployment, trainingjob, vectorindex
from aiops.api.validation.base import ClusterFacts, Problem

__all__ = ["ClusterFacts", "Problem", "SpecCheck", "check_spec", "condition_summary", "semantic_problems"]

RULES: dict[str, Callable[[Any, ClusterFacts], Iterator[Problem]]] = {
    "ModelDeployment": modeldeployment.rules,
    "VectorIndex": vectorindex.rules,
    "TrainingJob": trainingjob.rules,
}


@dataclass(frozen=True)
class SpecCheck:
    """The parsed spec (None when it does not fit the model) and its problems."""

    spec: SpecModel | None
    problems: list[Problem]

    @property
    def valid(self) -> bool:
        return not self.problems


def check_spec(
    kind: str, spec: Mapping[str, Any], *, max_gpus_per_node: int | Mapping[str, int] | None = None,
    allowed_host_paths: tuple[str, ...] | None = None,
) -> SpecCheck:
    """Parses `spec` (the wire form, camelCase) of `kind` and runs every rule on it.

    A spec that does not even fit the model (possible only when the installed CRD is older than
    the operator) yields its schema errors as problems with reason SchemaViolation: the operator
    reports them like any other problem instead of crashing."""
    info = kind_info(kind)
    try:
        model = info.spec_model.from_wire(spec)
    except ValidationError as error:
        return SpecCheck(None, [_schema_problem(e) for e in error.errors()])
    return SpecCheck(model, list(RULES[info.kind](model, ClusterFacts(max_gpus_per_node, allowed_host_paths))))


def semantic_problems(
    kind: str, spec: Mapping[str, Any], *, max_gpus_per_node: int | Mapping[str, int] | None = None,
    allowed_host_paths: tuple[str, ...] | None = None,
) -> list[Problem]:
    """Every problem with `spec` of `kind`; empty when it is valid."""
    return check_spec(kind, spec, max_gpus_per_node=max_gpus_per_node,
                      allowed_host_paths=allowed_host_paths).problems


def condition_summary(problems: list[Problem]) -> tuple[str, str]:
    """Reason and message for the `Valid` condition."""
    if not problems:
        return "SpecValid", "The spec passed all semantic checks."
    if len(problems) == 1:
        return problems[0].reason, str(problems[0])
    listed = "; ".join(str(p) for p in problems)
    return problems[0].reason, f"{len(problems)} problems in the spec: {listed}"


def _schema_problem(error: Mapping[str, Any]) -> Problem:
    path = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    return Problem(
        path,
        "SchemaViolation",
        f"{error['msg']}. The installed CRD may be older than the operator: "
        "re-apply crds/ from the same release.",
    )


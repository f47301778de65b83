"""Hashes that say when something changed, so a reconcile can compare instead of diffing."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiops.api.modeldeployment import ModelDeploymentSpec, ServingOptions

# What decides what serves. Monitoring and rollback settings change nothing that serves, and
# `replicas` only how many pods serve it: a scale, not a rollout (the reconciler's `_scale`).
SERVING_FIELDS = ("model", "repository", "runtime", "resources", "node_selector", "batching",
                  "serving", "validation", "health_check")


def digest(value: Any, length: int = 12) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


_SERVING_KEYS = frozenset(ModelDeploymentSpec.model_fields[f].alias or f for f in SERVING_FIELDS)
# Inside a serving field, but only about how a rollout proceeds (and added later: keeping it out
# keeps the revisions of existing objects, so an operator upgrade starts no rollouts).
_NOT_SERVING = (("validation", "startServerEarly"),)
# Serving fields added later count only when set: at their defaults, existing objects keep their
# revisions.
_ADDED_LATER = {"serving": ServingOptions().to_wire()}


def spec_revision(spec: ModelDeploymentSpec) -> str:
    return _revision(spec.to_wire(), with_replicas=False)


def earlier_revision(spec: ModelDeploymentSpec) -> str:
    """The revision this spec had when `replicas` counted as a serving change: what the status of
    an object rolled out then still holds (see `adopt_earlier_revisions`)."""
    return _revision(spec.to_wire(), with_replicas=True)


def _revision(wire: dict, with_replicas: bool) -> str:
    keys = _SERVING_KEYS | {"replicas"} if with_replicas else _SERVING_KEYS
    wire = {k: v for k, v in wire.items() if k in keys}
    for section, key in _NOT_SERVING:
        wire.get(section, {}).pop(key, None)
    for key, default in _ADDED_LATER.items():
        if wire.get(key) == default:
            del wire[key]
    return digest(wire)


def adopt_earlier_revisions(status: dict, revision: str, earlier: str) -> None:
    """Rewrites the spec's earlier-form revision to its current one wherever the status remembers
    it (what serves, what served before, what was rejected), so an object rolled out before an
    operator upgrade keeps serving without a rollout and keeps its rejections. A rollout in flight
    keeps its own revision, which names its validation Job; the reconciler accepts either form."""
    if status.get("servingRevision") == earlier:
        status["servingRevision"] = revision
    if status.get("previousRevision") == earlier:
        status["previousRevision"] = revision
    for rejected in status.get("rejected") or []:
        if rejected.get("revision") == earlier:
            rejected["revision"] = revision


def template_revision(template: dict) -> str:
    return digest(template)

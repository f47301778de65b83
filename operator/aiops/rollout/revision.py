"""Hashes that say when something changed, so a reconcile can compare instead of diffing."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiops.api.modeldeployment import ModelDeploymentSpec, ServingOptions

# What decides what serves. Monitoring and rollback settings change nothing that serves.
SERVING_FIELDS = ("model", "repository", "runtime", "resources", "replicas", "node_selector", "batching",
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
    wire = {k: v for k, v in spec.to_wire().items() if k in _SERVING_KEYS}
    for section, key in _NOT_SERVING:
        wire.get(section, {}).pop(key, None)
    for key, default in _ADDED_LATER.items():
        if wire.get(key) == default:
            del wire[key]
    return digest(wire)


def template_revision(template: dict) -> str:
    return digest(template)

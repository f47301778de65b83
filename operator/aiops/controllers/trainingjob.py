"""TrainingJob handlers. So far: semantic validation (the Valid condition); data versioning,
training and optimization build on it."""

from __future__ import annotations

from typing import Any

import kopf

from aiops.api.common import GROUP, VERSION
from aiops.api.registry import TRAINING_JOB
from aiops.controllers.validity import check_spec

RESOURCE = (GROUP, VERSION, TRAINING_JOB.plural)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    check_spec(TRAINING_JOB, body, patch, memo.nodes, logger)

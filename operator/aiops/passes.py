"""One reconcile pass of one object, the same shape for every kind: a `Pass` carries the object,
the status being built and the Events to post; `run_pass` times the kind's pass into the reconcile
histogram and writes back what changed (status patch and Events) in one place."""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from aiops import metrics
from aiops.api.registry import KindInfo
from aiops.conditions import get_condition, set_condition

log = logging.getLogger(__name__)
RETRY_ANNOTATION = "aiops.dev/retry"


@dataclass
class Pass:
    """One reconcile of one object: its body, the status being built, and Events to post."""

    obj: dict
    status: dict
    events: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.obj["metadata"]["namespace"]

    @property
    def generation(self) -> int | None:
        return self.obj["metadata"].get("generation")

    @property
    def retry_token(self) -> str:
        """The `aiops.dev/retry` annotation: a new value tries a rejected spec again."""
        return (self.obj["metadata"].get("annotations") or {}).get(RETRY_ANNOTATION, "")

    def condition(self, type_: str, ok: bool | str, reason: str, message: str) -> bool:
        """Sets a condition; True when its status or reason changed (worth an Event)."""
        before = get_condition(self.status.get("conditions"), type_)
        self.status["conditions"] = set_condition(self.status.get("conditions"), type_, ok, reason, message,
                                                  self.generation)
        after = get_condition(self.status["conditions"], type_)
        return before is None or (before.get("status"), before.get("reason")) != (after["status"], after["reason"])

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


class WriteBack(Protocol):
    async def write_back(self, obj: dict, plural: str, before: dict, status: dict,
                         events: list[tuple[str, str, str]]) -> dict | None: ...


P = TypeVar("P", bound=Pass)


async def run_pass(kind: KindInfo, obj: dict, kube: WriteBack, body: Callable[[P], Awaitable[float | None]],
                   make: Callable[[dict, dict], P] = Pass) -> tuple[float | None, dict | None]:
    """Runs `body` on a fresh pass over `obj`; returns (seconds until the next look, the object as
    written back or None when nothing changed)."""
    p = make(obj, copy.deepcopy(obj.get("status") or {}))
    before = copy.deepcopy(p.status)
    started = time.perf_counter()
    try:
        delay = await body(p)
    finally:
        metrics.RECONCILE_SECONDS.labels(kind=kind.kind).observe(time.perf_counter() - started)
    _check_status(kind, p.status)
    written = await kube.write_back(obj, kind.plural, before, p.status, p.events)
    return delay, written


_reported: set[str] = set()


def _check_status(kind: KindInfo, status: dict) -> None:
    """Status fields the kind's status model lacks would be pruned by the API server without a
    word (its CRD schema is generated from the model): a defect of ours, said loudly. Under
    AIOPS_STRICT_STATUS=1 (the tests) the pass fails instead."""
    unknown = kind.status_model.unknown_fields(status)
    if not unknown:
        return
    message = (f"{kind.kind} status fields not in {kind.status_model.__name__} (the API server drops them): "
               f"{', '.join(unknown)}")
    if os.environ.get("AIOPS_STRICT_STATUS") == "1":
        raise AssertionError(message)
    if message not in _reported:
        _reported.add(message)
        log.error("%s", message)

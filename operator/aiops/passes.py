"""One reconcile pass of one object, the same shape for every kind: a `Pass` carries the object,
the status being built and the Events to post; `run_pass` times the kind's pass into the reconcile
histogram and writes back what changed (status patch and Events) in one place.

What is written is the kind's status model's serialization of the status the pass built
(`through_model`): the API models are the single source for status as for spec, their defaults
fill what a pass left out, and a field or value the model does not declare is a defect of ours,
said loudly (under AIOPS_STRICT_STATUS=1, the tests, the pass fails)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from aiops import metrics
from aiops.api.registry import KindInfo
from aiops.conditions import get_condition, set_condition
from aiops.kube.objects import NameTaken, json_copy

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
    p = make(obj, json_copy(obj.get("status") or {}))
    before = json_copy(p.status)
    started = time.perf_counter()
    try:
        delay = await body(p)
        _accepted(p)
    except (ApiException, NameTaken) as e:
        if isinstance(e, ApiException) and e.status not in REJECTIONS:
            raise
        metrics.RECONCILE_ERRORS.labels(kind=kind.kind).inc()
        # What the pass recorded before the refusal may describe changes that never happened:
        # only the refusal is written.
        p.status, p.events = json_copy(before), []
        delay = _rejected(p, e)
    finally:
        metrics.RECONCILE_SECONDS.labels(kind=kind.kind).observe(time.perf_counter() - started)
    if p.status == before and not p.events:
        return delay, None  # most passes: what was written last, already through the model, stands
    status = through_model(kind, p.status)
    written = await kube.write_back(obj, kind.plural, before, status, p.events)
    return delay, written


# What the API server answers when it refuses an object the pass built, as opposed to a passing
# failure: 400 bad request, 403 forbidden (RBAC, an exceeded ResourceQuota, an admission policy),
# 413 too large, 422 invalid. Retrying does not help until something changes, so the reason goes
# to status and an Event (so does NameTaken: a child's name held by an object not ours); the pass
# is looked at again after REJECTED_RETRY_SECONDS, and at once when the object changes.
REJECTIONS = frozenset({400, 403, 413, 422})
REJECTED_RETRY_SECONDS = 60.0
APPLIED = "Applied"


def _rejected(p: Pass, error: ApiException | NameTaken) -> float:
    if isinstance(error, NameTaken):
        reason, message = error.reason, str(error)
    else:
        reason = "RejectedByAPIServer"
        message = f"The API server refused a request this resource needs ({error.status}): {api_message(error)}"
    if p.condition(APPLIED, False, reason, message):
        p.event("Warning", reason, message)
    log.warning("%s/%s: %s", p.namespace, p.name, message)
    return REJECTED_RETRY_SECONDS


def _accepted(p: Pass) -> None:
    """Clears an earlier refusal once a whole pass went through; a resource never refused carries
    no Applied condition."""
    applied = get_condition(p.status.get("conditions"), APPLIED)
    if applied is not None and applied.get("status") != "True":
        p.condition(APPLIED, True, "Accepted", "The API server accepts every object this resource needs.")
        p.event("Normal", "Accepted", "The API server accepts every object this resource needs again.")


def api_message(error: ApiException) -> str:
    """The API server's own words from a Status body, else the HTTP reason."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or error.reason or "no message")[:2000]


_reported: set[str] = set()


def through_model(kind: KindInfo, status: dict) -> dict:
    """`status` as the kind's status model serializes it (wire names, ISO times, defaults filled,
    nothing None). Fields the model lacks would be pruned by the API server without a word (its
    CRD schema is generated from the model), and a value the model rejects the schema rejects too:
    both are reported, and the status goes out as built, for the API server to judge."""
    model = kind.status_model
    unknown = model.unknown_fields(status)
    if unknown:
        _report(f"{kind.kind} status fields not in {model.__name__} (the API server drops them): "
                f"{', '.join(unknown)}")
    try:
        return model.model_validate(status).model_dump(mode="json", by_alias=True, exclude_none=True)
    except ValidationError as e:
        _report(f"{kind.kind} status does not fit {model.__name__}: {e}")
        return status


def _report(message: str) -> None:
    if os.environ.get("AIOPS_STRICT_STATUS") == "1":
        raise AssertionError(message)
    if message not in _reported:
        _reported.add(message)
        log.error("%s", message)

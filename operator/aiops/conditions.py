"""Status conditions in the metav1.Condition shape, on the plain dicts Kopf hands us.

Pure functions: the handlers compute the new list and write it with one status patch.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

Condition = dict[str, Any]


class ReasonedError(RuntimeError):
    """A failure that becomes a condition: `reason` is its CamelCase word, the message says what
    happened and what to do."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _status_word(status: bool | str) -> str:
    if isinstance(status, bool):
        return "True" if status else "False"
    if status not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    return status


def set_condition(conditions: list[Condition] | None, type_: str, status: bool | str, reason: str,
                  message: str, generation: int | None = None, now: str | None = None) -> list[Condition]:
    """The list with `type_` set. lastTransitionTime moves only when the status itself changes,
    so re-reconciling an unchanged object leaves its conditions byte-for-byte the same."""
    word = _status_word(status)
    out: list[Condition] = []
    previous = None
    for c in conditions or []:
        if c.get("type") == type_:
            previous = c
        else:
            out.append(dict(c))
    changed = previous is None or previous.get("status") != word
    new = {"type": type_, "status": word, "reason": reason, "message": message,
           "lastTransitionTime": (now or now_iso()) if changed else previous["lastTransitionTime"]}
    if generation is not None:
        new["observedGeneration"] = generation
    out.append(new)
    return sorted(out, key=lambda c: c["type"])


def get_condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def is_true(conditions: list[Condition] | None, type_: str) -> bool:
    c = get_condition(conditions, type_)
    return bool(c) and c.get("status") == "True"

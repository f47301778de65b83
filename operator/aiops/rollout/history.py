"""Status bookkeeping of versions: history entries, rejections, capped lists. Pure."""

from __future__ import annotations

from typing import Any


def add_history(status: dict, version: int, outcome: str, reason: str, message: str, now: str,
                limit: int) -> None:
    """Newest first; at most `limit` entries."""
    entry = {"version": version, "time": now, "outcome": outcome, "reason": reason, "message": message[:2000]}
    status["history"] = [entry, *(status.get("history") or [])][:limit]


def reject(status: dict, version: int, revision: str, reason: str, now: str, retry_token: str,
           limit: int) -> None:
    rejected = [r for r in status.get("rejected") or [] if r.get("revision") != revision]
    entry = {"version": version, "revision": revision, "reason": reason, "time": now}
    if retry_token:  # never an empty string: a merge patch through 1.20's API server turns "" into null
        entry["retryToken"] = retry_token
    rejected.append(entry)
    status["rejected"] = rejected[-limit:]
    status["rejectedVersions"] = sorted({r["version"] for r in status["rejected"]})


def rejection(status: dict, revision: str, retry_token: str) -> dict[str, Any] | None:
    """The rejection that still holds for `revision`: a changed retry annotation lifts it."""
    for r in status.get("rejected") or []:
        if r.get("revision") == revision and (r.get("retryToken") or "") == retry_token:
            return r
    return None

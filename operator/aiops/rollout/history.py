"""Status bookkeeping of versions: history entries, rejections, capped lists, and what a new
version keeps of the one it replaces. Pure."""

from __future__ import annotations

from typing import Any

from aiops.conditions import get_condition
from aiops.rollout.context import Ctx


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


def remember_previous(ctx: Ctx) -> None:
    """A new version takes over: keep what a monitoring rollback needs to return to the one it
    replaces (its config, revision, pod template) and its baseline, for like-for-like checks."""
    st = ctx.status
    st.update(previousVersion=st.get("servingVersion"), previousRevision=st.get("servingRevision"),
              previousModelConfigJson=st.get("servingModelConfigJson"),
              previousDeploymentRevision=st.get("servingDeploymentRevision"))
    if st.get("baseline"):
        st["previousBaseline"] = st["baseline"]
    for key in ("baseline", "monitoring", "metrics"):
        st.pop(key, None)
    if get_condition(st.get("conditions"), "Degraded"):
        ctx.condition("Degraded", "Unknown", "NewVersionServing", "The new version has not been judged yet.")

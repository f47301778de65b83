"""Reading the validation Job's outcome: its state and the worker's JSON verdict, which comes back
as the container's termination message (through the API, never through a shared disk)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from aiops.worker.verdict import VerdictError, parse_verdict


@dataclass(frozen=True)
class JobOutcome:
    finished: bool
    succeeded: bool = False
    exit_code: int | None = None
    verdict: dict = field(default_factory=dict)
    detail: str = ""


def _condition(job: dict, type_: str) -> dict | None:
    return next((c for c in (job.get("status") or {}).get("conditions") or []
                 if c.get("type") == type_ and c.get("status") == "True"), None)


def parse_step_result(text: str) -> dict:
    """A worker step's result: one JSON object with a boolean `ok` (TrainingJob and ingest workers)."""
    try:
        result = json.loads(text)
    except ValueError as e:
        raise VerdictError(f"the result is not JSON: {e}") from None
    if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
        raise VerdictError("the result has no boolean `ok`")
    return result


def _settled_by_pods(job: dict, pods: list[dict]) -> tuple[bool, bool]:
    """(complete, failed) as the Job controller will decide from these pods, for our one-pod Jobs:
    a Succeeded pod completes it, more Failed pods than `backoffLimit` fail it. Reading the pods
    saves waiting for the controller's own status write, which lags seconds behind on a busy
    controller-manager (it shares one client rate limit across all its controllers)."""
    spec = job.get("spec") or {}
    if (spec.get("completions") or 1) != 1 or (spec.get("parallelism") or 1) != 1:
        return False, False
    phases = [(p.get("status") or {}).get("phase") for p in pods]
    return "Succeeded" in phases, phases.count("Failed") > spec.get("backoffLimit", 6)


def own_pods(job: dict, pods: list[dict]) -> list[dict]:
    """The pods this Job made: a Job deleted and made again under the same name (a retried
    validation) must not be judged by its predecessor's pods while they are still going away."""
    uid = (job.get("metadata") or {}).get("uid")
    return [p for p in pods if not uid or not p["metadata"].get("ownerReferences")
            or any(o.get("uid") == uid for o in p["metadata"]["ownerReferences"])]


def job_outcome(job: dict, pods: list[dict], parse: Callable[[str], dict] = parse_verdict) -> JobOutcome:
    pods = own_pods(job, pods)
    complete, failed = _condition(job, "Complete"), _condition(job, "Failed")
    if not complete and not failed:
        pod_complete, pod_failed = _settled_by_pods(job, pods)
        complete = {"type": "Complete"} if pod_complete else None
        failed = {"type": "Failed", "reason": "BackoffLimitExceeded"} if pod_failed and not complete else None
        if not complete and not failed:
            return JobOutcome(finished=False)
    terminated = None
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        for c in (pod.get("status") or {}).get("containerStatuses") or []:
            t = (c.get("state") or {}).get("terminated")
            if t:
                terminated = t
    message = (terminated or {}).get("message") or ""
    try:
        verdict, detail = parse(message), ""
    except VerdictError as e:
        # With FallbackToLogsOnError the message may be the log tail, whose last line is the verdict.
        last_line = message.strip().splitlines()[-1] if message.strip() else ""
        try:
            verdict, detail = parse(last_line), ""
        except VerdictError:
            verdict, detail = {}, f"{e}; {message.strip()[-400:]}"
    if failed and not terminated:
        detail = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}"
    return JobOutcome(True, bool(complete), (terminated or {}).get("exitCode"), verdict, detail)

"""What the watch last said about validation Jobs and their pods.

A ModelDeployment is reconciled on every event of its validation Job and pod (created, scheduled,
started, finished). Each of those passes would read the Job and its pods from the API server: two
calls per event, which add up when a hundred objects validate at once. Instead the pod and Job
events keep slim copies here: enough to tell a running Job from a finished one and to read the
worker's verdict from the pod's termination message. The reconciler still asks the API server
when the watch has not shown the Job yet, or shows it finished without a terminated container
(Job and pod events arrive on two streams, so the Job's may come first)."""

from __future__ import annotations

Key = tuple[str, str]


def _slim_job(body: dict) -> dict:
    meta = body["metadata"]
    return {"metadata": {"uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
            "spec": {k: v for k, v in (body.get("spec") or {}).items()
                     if k in ("completions", "parallelism", "backoffLimit")},
            "status": {"conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                                      for c in (body.get("status") or {}).get("conditions") or []]}}


def _slim_pod(body: dict) -> dict:
    meta, status = body["metadata"], body.get("status") or {}
    terminated = [{"state": {"terminated": c["state"]["terminated"]}} for c in status.get("containerStatuses") or []
                  if (c.get("state") or {}).get("terminated")]
    # The scheduler's verdict while Pending: why a validation pod is not placed goes to status.
    unplaced = [c for c in status.get("conditions") or []
                if c.get("type") == "PodScheduled" and c.get("status") == "False"]
    return {"metadata": {"name": meta.get("name"), "creationTimestamp": meta.get("creationTimestamp"),
                         "ownerReferences": [{"uid": o.get("uid")} for o in meta.get("ownerReferences") or []]},
            "status": {"phase": status.get("phase") or "Pending", "containerStatuses": terminated,
                       "conditions": unplaced}}


class JobWatch:
    def __init__(self) -> None:
        self._jobs: dict[Key, dict] = {}
        self._pods: dict[Key, dict[str, dict]] = {}  # (namespace, job) -> pod name -> slim pod

    def observe_job(self, body: dict, deleted: bool) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if deleted:
            self._jobs.pop(key, None)
            self._pods.pop(key, None)
        else:
            self._jobs[key] = _slim_job(body)

    def observe_pod(self, body: dict, deleted: bool) -> None:
        meta = body["metadata"]
        job = (meta.get("labels") or {}).get("job-name")
        if not job:
            return
        pods = self._pods.setdefault((meta["namespace"], job), {})
        if deleted:
            pods.pop(meta["name"], None)
        else:
            pods[meta["name"]] = _slim_pod(body)

    def forget(self, namespace: str, name: str) -> None:
        """We deleted the Job: a new one under the same name must not be judged by this one,
        whatever its last events still say before the deletion's own arrives."""
        self._jobs.pop((namespace, name), None)
        self._pods.pop((namespace, name), None)

    def get(self, namespace: str, name: str) -> tuple[dict, list[dict]] | None:
        """(Job, its pods) as the watch saw them, or None when it has not seen the Job."""
        job = self._jobs.get((namespace, name))
        return None if job is None else (job, list(self._pods.get((namespace, name), {}).values()))

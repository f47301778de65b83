"""What the watch last said about validation Jobs and their pods.

A ModelDeployment is reconciled on every event of its validation Job and pod (created, scheduled,
started, finished). While the watch says the Job still runs there is nothing to act on, and the
reconcile can skip reading the Job and its pods from the API server: two calls per event, which
add up when a hundred objects validate at once. The watch is only used to skip work, never as the
basis of an action: a finished Job is read back from the API before its verdict counts."""

from __future__ import annotations

from aiops.rollout.verdict import job_outcome

Key = tuple[str, str]


def _slim_job(body: dict) -> dict:
    return {"metadata": {"uid": body["metadata"].get("uid")},
            "spec": {k: v for k, v in (body.get("spec") or {}).items()
                     if k in ("completions", "parallelism", "backoffLimit")},
            "status": {"conditions": [{"type": c.get("type"), "status": c.get("status")}
                                      for c in (body.get("status") or {}).get("conditions") or []]}}


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
            pods[meta["name"]] = {"metadata": {"ownerReferences": [{"uid": o.get("uid")} for o in
                                                                   meta.get("ownerReferences") or []]},
                                  "status": {"phase": (body.get("status") or {}).get("phase") or "Pending"}}

    def running(self, namespace: str, name: str) -> bool:
        """True only when the watch has seen the Job and nothing says it finished."""
        job = self._jobs.get((namespace, name))
        if job is None:
            return False
        pods = list(self._pods.get((namespace, name), {}).values())
        return not job_outcome(job, pods, parse=lambda _: {}).finished

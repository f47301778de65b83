"""Live progress from a worker Job to its custom resource's status, through the pod's log: the
worker's side (Reporter) and the operator's (read_progress), one format.

The worker prints a line `aiops-progress {json}` to stdout at most once a second (and at the
end); the operator, while the Job runs, reads the last lines of the running pod's log (a bounded
tail) every few seconds and copies the newest such line into `status.progress`. Worker pods
have no API token, so their log is the one channel out while they run; the line's prefix keeps
it apart from the log lines around it, in text or JSON format alike.

Fields the worker sets (all optional): percent (0-100), etaSeconds, and per kind what counts:
training epoch/epochs/steps/loss/samplesPerSecond; ingestion done/total/documentsPerSecond."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

PREFIX = "aiops-progress "
MIN_INTERVAL = 1.0  # seconds between lines
READ_EVERY = 3.0  # seconds between the operator's reads of a running Job, so between status writes


class Reporter:
    """Prints progress lines, at most one per `min_interval` unless forced. Adds etaSeconds from
    the rate since the reporter was made (so a resumed run estimates from its own pace)."""

    def __init__(self, out: TextIO | None = None, min_interval: float = MIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.out, self.min_interval, self.clock = out, min_interval, clock
        self._started = clock()
        self._first_percent: float | None = None
        self._last = -float("inf")

    def __call__(self, force: bool = False, **fields: Any) -> None:
        now = self.clock()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        percent = fields.get("percent")
        if percent is not None:
            if self._first_percent is None:
                self._first_percent, self._started = percent, now
            done = percent - self._first_percent
            if done > 0 and percent < 100:
                fields["etaSeconds"] = round((now - self._started) * (100 - percent) / done, 1)
            elif percent >= 100:
                fields["etaSeconds"] = 0
            fields["percent"] = round(percent, 1)
        out = self.out or sys.stdout
        out.write(PREFIX + json.dumps({k: v for k, v in fields.items() if v is not None}, separators=(",", ":"))
                  + "\n")
        out.flush()


def last_progress(log_tail: str) -> dict | None:
    """The newest progress line in a pod's log tail, or None."""
    for line in reversed(log_tail.splitlines()):
        at = line.find(PREFIX)  # a runtime may prefix lines (timestamps)
        if at >= 0:
            try:
                value = json.loads(line[at + len(PREFIX):])
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def running_pod(pods: list[dict]) -> dict | None:
    """The pod of a Job that runs now: the newest Running one (a retried Job's earlier pods failed)."""
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
               and not p["metadata"].get("deletionTimestamp")]
    return max(running, key=lambda p: p["metadata"].get("creationTimestamp") or "", default=None)


async def read_progress(kube, namespace: str, pods: list[dict], container: str, fields: tuple[str, ...],
                        now: str, previous: dict | None = None) -> dict | None:
    """The newest progress line of a running Job (its running pod's log tail) as status: only
    `fields`, stamped `updatedAt: now`; `previous` itself when the line says nothing new (no status
    write for it), or when there is none to read. `kube`: a KubeClient."""
    pod = running_pod(pods)
    if pod is None:
        return previous
    found = last_progress(await kube.log_tail(namespace, pod["metadata"]["name"], container) or "")
    if not found:
        return previous
    progress = {k: found[k] for k in fields if found.get(k) is not None}
    if previous and {k: v for k, v in previous.items() if k != "updatedAt"} == progress:
        return previous
    return {**progress, "updatedAt": now}

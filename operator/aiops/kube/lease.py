"""Leader election with a coordination.k8s.io/v1 Lease: with replicas > 1, only the holder reconciles.

Kopf's peering is not leader election: it pauses operators that see a peer of higher priority,
and a paused replica can still act (kopf#1266). Here a replica that does not hold the Lease never
starts Kopf: it waits, answering only its health endpoint, and takes over when the holder releases
the Lease or stops renewing it.

The rules are client-go's (`k8s.io/client-go/tools/leaderelection`):
- a candidate takes the Lease when nobody holds it, or when the record it last saw has not changed
  for the holder's `leaseDurationSeconds`, measured on the candidate's own clock (so clock skew
  between machines does not matter);
- every write carries the resourceVersion it was based on: of two candidates racing for the same
  Lease, the API server lets exactly one win (the other gets a 409 and stays a candidate);
- the holder renews every retry period; when it has not managed to for `renew_deadline`, or sees
  another holder, it gives up: the operator stops and the process exits non-zero, so the pod
  restarts as a candidate. renew_deadline < lease duration leaves the gap for that stop;
- on a clean shutdown the holder releases the Lease (empty holder), so a standby takes over at
  once instead of after the lease duration.

Why its own thread and the kubernetes package's synchronous client, not the shared aiohttp
session: a candidate waits before Kopf (which owns the event loop) starts, and the holder's
renewals must keep their period while that loop is busy with a burst of reconciles, as client-go
renews from a goroutine of its own. Why not the package's own elector
(`kubernetes.leaderelection`): its calls have no timeout, so a black-holed connection blocks the
renewer past its deadline; it measures with the wall clock, never releases the Lease on
shutdown, and a waiting candidate cannot be stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from aiops.kube.fence import WriteFence

log = logging.getLogger(__name__)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LeaderElectionError(RuntimeError):
    """Leader election cannot start (e.g. no namespace for the Lease); the message says what to set."""


@dataclass(frozen=True)
class LeaseSettings:
    name: str
    namespace: str
    identity: str
    lease_duration: int = 15  # seconds; whole seconds, as the Lease stores them
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    @property
    def request_timeout(self) -> float:
        """Seconds one Lease call may take at most: a black-holed connection must not block the
        renewer (which also never lets a call run past its renew deadline, see keep_renewing)."""
        return max(0.5, min(self.retry_period, self.renew_deadline / 4))

    @classmethod
    def for_duration(cls, name: str, namespace: str | None = None, identity: str | None = None,
                     lease_duration: int = 15) -> LeaseSettings:
        """client-go's proportions (15 s / 10 s / 2 s) scaled to `lease_duration`."""
        if lease_duration < 2:
            raise LeaderElectionError(f"lease duration {lease_duration}s is too short: use 2 seconds or more")
        return cls(name, namespace or lease_namespace(), identity or default_identity(), lease_duration,
                   renew_deadline=lease_duration * 2 / 3, retry_period=max(0.2, lease_duration / 7.5))


def lease_api() -> client.CoordinationV1Api:
    """The Lease API on the operator's configuration (aiops.kube.config)."""
    from aiops.kube.config import api_client

    return client.CoordinationV1Api(api_client())


def lease_namespace() -> str:
    """$POD_NAMESPACE (the Helm chart sets it from the downward API), else the pod's own namespace."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    raise LeaderElectionError("no namespace for the leader-election Lease: pass --lease-namespace or set "
                              "POD_NAMESPACE")


def default_identity() -> str:
    """Pod name (hostname) plus a random suffix: a restarted container is a new candidate."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElector:
    """One candidate's view of one Lease. Not thread-safe: one thread drives it at a time."""

    def __init__(self, api: client.CoordinationV1Api, settings: LeaseSettings,
                 clock: Callable[[], float] = time.monotonic, fence: WriteFence | None = None):
        """fence: moved on every acquisition and renewal, closed when the Lease is lost (the
        operator passes the process's FENCE, which its session checks before each write)."""
        self.api = api
        self.settings = settings
        self.clock = clock
        self.fence = fence if fence is not None else WriteFence(clock)
        self._seen: tuple | None = None  # (holder, renewTime, transitions) last read
        self._seen_at = 0.0

    @property
    def identity(self) -> str:
        return self.settings.identity

    def holder(self) -> str | None:
        """The current holder as the API server has it (None when free or absent)."""
        try:
            lease = self.api.read_namespaced_lease(self.settings.name, self.settings.namespace,
                                                  _request_timeout=self.settings.request_timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return lease.spec.holder_identity or None

    def _timeout(self, end: float | None) -> float:
        """A call's timeout: the request timeout, cut to what is left until `end` (clock time)."""
        if end is None:
            return self.settings.request_timeout
        return min(self.settings.request_timeout, max(0.05, end - self.clock()))

    def try_acquire_or_renew(self, end: float | None = None) -> bool:
        """One attempt, its calls ended by `end` (clock time) when given: True when this candidate
        holds the Lease afterwards."""
        s, now = self.settings, _now()
        try:
            lease = self.api.read_namespaced_lease(s.name, s.namespace, _request_timeout=self._timeout(end))
        except ApiException as e:
            if e.status != 404:
                raise
            return self._create(now, end)
        spec = lease.spec or client.V1LeaseSpec()
        record = (spec.holder_identity, spec.renew_time, spec.lease_transitions)
        if record != self._seen:
            self._seen, self._seen_at = record, self.clock()
        holder = spec.holder_identity or ""
        duration = spec.lease_duration_seconds or s.lease_duration
        if holder and holder != s.identity and self.clock() < self._seen_at + duration:
            return False  # someone else holds it and has renewed within its lease duration
        if holder != s.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            if holder:
                log.info("leader election: taking over lease %s/%s from %s (not renewed for %ss)",
                         s.namespace, s.name, holder, duration)
        spec.holder_identity = s.identity
        spec.lease_duration_seconds = s.lease_duration
        spec.renew_time = now
        lease.spec = spec
        try:  # replace carries metadata.resourceVersion: a concurrent writer makes this a 409
            written = self.api.replace_namespaced_lease(s.name, s.namespace, lease,
                                                          _request_timeout=self._timeout(end))
        except ApiException as e:
            if e.status in (409, 404):
                return False
            raise
        self._seen = (written.spec.holder_identity, written.spec.renew_time, written.spec.lease_transitions)
        self._seen_at = self.clock()
        return True

    def _create(self, now: dt.datetime, end: float | None = None) -> bool:
        s = self.settings
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=s.name, namespace=s.namespace,
                                         labels={"app.kubernetes.io/name": "aiops-operator"}),
            spec=client.V1LeaseSpec(holder_identity=s.identity, lease_duration_seconds=s.lease_duration,
                                    acquire_time=now, renew_time=now, lease_transitions=0))
        try:
            written = self.api.create_namespaced_lease(s.namespace, body, _request_timeout=self._timeout(end))
        except ApiException as e:
            if e.status == 409:  # another candidate created it first
                return False
            raise
        self._seen = (written.spec.holder_identity, written.spec.renew_time, written.spec.lease_transitions)
        self._seen_at = self.clock()
        return True

    def release(self) -> bool:
        """Gives the Lease up if held, so a standby need not wait out the lease duration."""
        s = self.settings
        try:
            lease = self.api.read_namespaced_lease(s.name, s.namespace, _request_timeout=s.request_timeout)
            if (lease.spec.holder_identity or "") != s.identity:
                return False
            now = _now()
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = now
            lease.spec.acquire_time = now
            self.api.replace_namespaced_lease(s.name, s.namespace, lease, _request_timeout=s.request_timeout)
        except Exception as e:  # ApiException, or the API server not answering in time
            log.warning("leader election: could not release lease %s/%s: %s", s.namespace, s.name,
                        getattr(e, "reason", None) or e)
            return False
        log.info("leader election: released lease %s/%s", s.namespace, s.name)
        return True

    def _attempt(self, end: float | None = None) -> bool:
        started = self.clock()
        try:
            held = self.try_acquire_or_renew(end)
            if held:  # the standby counts a lease duration from when it sees this write, after `started`
                self.fence.hold_until(started + self.settings.renew_deadline)
            return held
        except Exception as e:  # the API server away for a moment is what renew_deadline is for
            log.warning("leader election: lease %s/%s not reachable: %s", self.settings.namespace,
                        self.settings.name, e)
            return False

    def wait_until_leader(self, stop: threading.Event) -> bool:
        """Blocks until this candidate holds the Lease (True) or `stop` is set (False)."""
        s = self.settings
        logged = False
        while not stop.is_set():
            if self._attempt():
                log.info("leader election: %s holds lease %s/%s", s.identity, s.namespace, s.name)
                return True
            if not logged:
                log.info("leader election: %s is standing by; lease %s/%s is held by %s", s.identity,
                         s.namespace, s.name, (self._seen or ("?",))[0])
                logged = True
            stop.wait(s.retry_period * (1 + random.random() * 0.2))  # jitter, as client-go does
        return False

    def keep_renewing(self, done: threading.Event, lost: threading.Event,
                      on_lost: Callable[[], None] | None = None) -> None:
        """Renews until `done`; on failing to for renew_deadline (or seeing another holder) sets
        `lost` and `done`, which stops the operator, and calls `on_lost`."""
        s = self.settings
        last_renewed = self.clock()
        while not done.wait(s.retry_period):
            # No call runs past the renew deadline: the operator stops by then, before a standby
            # (which waits a whole lease duration from the last renewal it saw) can take over.
            give_up_at = last_renewed + s.renew_deadline
            if self.clock() < give_up_at and self._attempt(give_up_at):
                last_renewed = self.clock()
                continue
            other = self._seen and self._seen[0] and self._seen[0] != s.identity
            if other or self.clock() >= give_up_at:
                log.error("leader election: lost lease %s/%s (%s); stopping the operator", s.namespace,
                          s.name, f"now held by {self._seen[0]}" if other else
                          f"not renewed for {s.renew_deadline:.1f}s")
                self.fence.close()
                lost.set()
                done.set()
                if on_lost is not None:
                    on_lost()
                return


class StandbyHealth:
    """The liveness endpoint of a replica waiting for the Lease: Kopf's own endpoint only exists
    once Kopf runs, and a standby must not be restarted by its probes for standing by."""

    def __init__(self, endpoint: str | None):
        self._server: ThreadingHTTPServer | None = None
        if not endpoint:
            return
        url = urlparse(endpoint)
        path = url.path or "/"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                ok = self.path.split("?")[0] == path
                body = b'{"leader": false, "standby": true}\n' if ok else b"not found\n"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json" if ok else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # probes every few seconds: not worth a line
                pass

        self._server = ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), Handler)
        threading.Thread(target=self._server.serve_forever, name="standby-health", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM end the wait (main thread only); returns what restores the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def exit_at_once() -> None:
    """What a process that lost the Lease does: exit now, with queued work, in-flight handlers
    and cleanup left undone. Kopf's stop flag alone lets queued reconciles go on writing for
    seconds while the new leader acts; client-go's operators exit the same way."""
    logging.shutdown()
    os._exit(1)


def run_as_leader(settings: LeaseSettings, operate: Callable[[threading.Event], None],
                  api: client.CoordinationV1Api, health_endpoint: str | None = None,
                  stop: threading.Event | None = None, on_lost: Callable[[], None] | None = None,
                  fence: WriteFence | None = None, leading: Callable[[bool], None] | None = None) -> int:
    """Waits for the Lease, then runs `operate(stop_flag)` (Kopf) while holding it; `stop_flag` is
    set when the Lease is lost, and `on_lost` called (the operator passes `exit_at_once`). `fence`
    (the operator passes the process's FENCE) lets writes out only while the Lease is surely held.
    Returns the process exit code: 0 after a clean stop (Lease released), 1 when leadership was
    lost. `leading(True)` is called once the Lease is held, `leading(False)` when it is given up.

    The Lease is released from a Kopf cleanup handler: cleanup runs once Kopf has stopped its
    watchers and handlers, so nothing reconciles any more, and a process that is then slow to
    exit (threads finishing) does not keep the standby waiting."""
    stop = stop or threading.Event()
    elector = LeaderElector(api, settings, fence=fence)
    elector.fence.close()  # nothing is written before the Lease is ours
    standby = StandbyHealth(health_endpoint)
    restore = _stop_on_signals(stop)
    try:
        leader = elector.wait_until_leader(stop)
    finally:
        restore()
        standby.stop()
    if not leader:
        return 0
    if leading is not None:
        leading(True)
    done, lost = threading.Event(), threading.Event()
    renewer = threading.Thread(target=elector.keep_renewing, args=(done, lost, on_lost), name="lease-renewer",
                               daemon=True)
    handed_over = threading.Lock()

    def hand_over() -> None:
        """Stops renewing and releases the Lease, once (from cleanup, or after Kopf returned)."""
        if not handed_over.acquire(blocking=False):
            return
        done.set()
        renewer.join(timeout=max(1.0, settings.retry_period * 2))
        if not lost.is_set():
            elector.release()
        elector.fence.close()
        if leading is not None:
            leading(False)

    @kopf.on.cleanup(id="aiops-leader-election-release")
    async def release_on_cleanup(**_: object) -> None:
        await asyncio.to_thread(hand_over)

    renewer.start()
    try:
        operate(done)
    finally:
        hand_over()
    return 1 if lost.is_set() else 0

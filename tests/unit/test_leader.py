"""Lease rules of aiops.kube.lease without a cluster: a small in-memory Lease store that enforces
resourceVersion like the API server, and a clock the test moves. (tests/cluster/
test_leader_election.py runs the same code as processes against the real API server.)"""

from __future__ import annotations

import copy
import socket
import threading
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from aiops.kube.fence import LeaseExpired, WriteFence
from aiops.kube.lease import LeaderElector, LeaseSettings, run_as_leader


class FakeLeases:
    """read/create/replace of one namespace's Leases with optimistic concurrency."""

    def __init__(self):
        self.leases: dict[str, client.V1Lease] = {}
        self.version = 0

    def _bump(self, lease: client.V1Lease) -> client.V1Lease:
        self.version += 1
        lease.metadata.resource_version = str(self.version)
        self.leases[lease.metadata.name] = copy.deepcopy(lease)
        return copy.deepcopy(lease)

    def read_namespaced_lease(self, name, namespace, _request_timeout=None):
        if name not in self.leases:
            raise ApiException(status=404)
        return copy.deepcopy(self.leases[name])

    def create_namespaced_lease(self, namespace, body, _request_timeout=None):
        if body.metadata.name in self.leases:
            raise ApiException(status=409)
        return self._bump(copy.deepcopy(body))

    def replace_namespaced_lease(self, name, namespace, body, _request_timeout=None):
        if self.leases[name].metadata.resource_version != body.metadata.resource_version:
            raise ApiException(status=409)
        return self._bump(copy.deepcopy(body))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(api, name, clock, duration=10):
    return LeaderElector(api, LeaseSettings.for_duration("lease", "ns", name, duration), clock=clock)


def test_a_standby_first_seeing_an_old_lease_still_waits_a_full_duration():
    """Expiry is judged on the standby's own clock from when it saw the record, never from the
    renewTime written by another machine's clock."""
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew()
    clock.now += 100
    assert b.try_acquire_or_renew() is False
    clock.now += 10.5
    assert b.try_acquire_or_renew() is True


def test_one_holder_and_takeover_only_after_the_lease_duration_on_the_standbys_clock():
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    clock.now += 9
    assert a.try_acquire_or_renew() is True  # renewed: b's observation restarts
    clock.now += 9
    assert b.try_acquire_or_renew() is False
    clock.now += 9.5  # a stopped renewing 9.5 s ago as b saw it: still within 10 s
    assert b.try_acquire_or_renew() is False
    clock.now += 1
    assert b.try_acquire_or_renew() is True
    lease = api.leases["lease"]
    assert lease.spec.holder_identity == "b" and lease.spec.lease_transitions == 1
    assert a.try_acquire_or_renew() is False, "the old leader must not take it back while b renews"


def test_a_stale_write_loses():
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    stale = api.read_namespaced_lease("lease", "ns")
    clock.now += 20
    assert b.try_acquire_or_renew()  # b saw no renewal for 20 s: takes over
    stale.spec.holder_identity = "c"
    with pytest.raises(ApiException) as e:
        api.replace_namespaced_lease("lease", "ns", stale)
    assert e.value.status == 409


def test_release_lets_a_standby_in_at_once():
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    assert a.release() is True
    assert api.leases["lease"].spec.holder_identity == ""
    assert b.try_acquire_or_renew() is True
    assert a.release() is False  # not the holder any more: leaves b's Lease alone


def test_renewal_failures_past_the_deadline_stop_the_operator():
    api = FakeLeases()
    settings = LeaseSettings("lease", "ns", "a", lease_duration=2, renew_deadline=0.3, retry_period=0.05)
    a = LeaderElector(api, settings)
    assert a.try_acquire_or_renew()
    api.replace_namespaced_lease = lambda *args, **kwargs: (_ for _ in ()).throw(ApiException(status=500))
    done, lost, exits = threading.Event(), threading.Event(), []
    a.keep_renewing(done, lost, on_lost=lambda: exits.append(lost.is_set()))  # returns once it gives up
    assert lost.is_set() and done.is_set()
    assert exits == [True], "the operator's exit_at_once runs once, after the flags are set"


def test_run_as_leader_runs_the_work_only_while_leading_and_releases_after():
    api = FakeLeases()
    settings = LeaseSettings("lease", "ns", "a", lease_duration=2, renew_deadline=1.3, retry_period=0.05)
    seen, leading = [], []

    def operate(stop_flag):
        seen.append((api.leases["lease"].spec.holder_identity, list(leading)))

    assert run_as_leader(settings, operate, api, leading=leading.append) == 0
    assert seen == [("a", [True])], "it leads while it operates (the aiops_leader gauge)"
    assert api.leases["lease"].spec.holder_identity == "" and leading == [True, False]


def test_a_standby_stops_waiting_when_asked():
    api, clock = FakeLeases(), Clock()
    assert elector(api, "a", clock).try_acquire_or_renew()
    stop = threading.Event()
    stop.set()
    settings = LeaseSettings("lease", "ns", "b", lease_duration=2, renew_deadline=1.3, retry_period=0.05)
    assert run_as_leader(settings, lambda flag: pytest.fail("a standby must not operate"), api, stop=stop) == 0
    assert api.leases["lease"].spec.holder_identity == "a"


def test_a_black_holed_api_server_costs_the_lease_within_its_deadline():
    """A connection that is accepted and never answered (a dead node's conntrack, a partition)
    must not block the renewer: each Lease call has a timeout, so the deadline check runs and
    the operator stops before a standby can take over."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
    api = client.CoordinationV1Api(client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{hole.getsockname()[1]}")))
    settings = LeaseSettings.for_duration("lease", "ns", "me", 3)  # renew deadline 2 s, retry 0.4 s
    done, lost = threading.Event(), threading.Event()
    started = time.monotonic()
    threading.Thread(target=LeaderElector(api, settings).keep_renewing, args=(done, lost), daemon=True).start()
    try:
        assert lost.wait(settings.lease_duration + 5), "the renewer hung on the black-holed API server"
        took = time.monotonic() - started
        assert took < settings.lease_duration, f"lost after {took:.1f}s: a standby could already lead"
    finally:
        done.set()
        hole.close()


def test_the_write_fence_follows_the_last_renewal_not_the_lease_record():
    """Writes may go out until the start of the last successful renewal plus the renew deadline:
    a process frozen past that (SIGSTOP, a stalled VM) finds the fence shut when it runs again,
    before it has even learnt that a standby took over."""
    api, clock = FakeLeases(), Clock()
    a = elector(api, "a", clock)  # lease 10 s, renew deadline 6.67 s
    assert a._attempt()
    assert a.fence.is_open
    clock.now += 6.0
    assert a.fence.is_open
    clock.now += 1.0  # frozen: no renewal for more than the renew deadline
    assert not a.fence.is_open, "shut although the Lease record still names us"
    assert a._attempt() and a.fence.is_open  # renewed: open again
    with pytest.raises(LeaseExpired):
        clock.now += 7.0
        a.fence.check("PATCH /x")


def test_losing_the_lease_shuts_the_fence_before_the_operator_is_told():
    api = FakeLeases()
    settings = LeaseSettings("lease", "ns", "a", lease_duration=2, renew_deadline=0.3, retry_period=0.05)
    a = LeaderElector(api, settings)
    assert a._attempt() and a.fence.is_open
    api.replace_namespaced_lease = lambda *args, **kwargs: (_ for _ in ()).throw(ApiException(status=500))
    seen = []
    a.keep_renewing(threading.Event(), threading.Event(), on_lost=lambda: seen.append(a.fence.is_open))
    assert seen == [False]


def test_the_session_sends_no_write_past_the_fence(monkeypatch):
    """The shared session checks the fence before a write leaves: nothing reaches the server (here
    an address where nothing listens, so a request that went out would fail differently)."""
    import asyncio

    from aiops.kube import fence as fence_module
    from aiops.kube.session import ApiSession

    shut = WriteFence()
    shut.close()
    monkeypatch.setattr("aiops.kube.session.FENCE", shut)
    session = ApiSession(client.Configuration(host="http://127.0.0.1:9"))

    async def go():
        try:
            with pytest.raises(LeaseExpired, match="PATCH /api/v1/namespaces/ns/configmaps/x"):
                await session.request("PATCH", "/api/v1/namespaces/ns/configmaps/x", {"data": {}})
            with pytest.raises(Exception) as read:  # reads are not fenced: this one goes out and fails
                await session.request("GET", "/api/v1/namespaces/ns/configmaps/x")
            assert not isinstance(read.value, LeaseExpired)
        finally:
            await session.close()

    asyncio.run(go())
    assert fence_module.FENCE.is_open, "the process's own fence is open without leader election"

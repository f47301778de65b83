"""The write fence of a leader-elected operator: no write leaves this process once its Lease may
have run out.

The Lease renewer (aiops.kube.lease) moves the fence to the start of its last successful renewal
plus the renew deadline, on the monotonic clock. Every write through the shared session
(aiops.kube.session) checks it first. A standby takes over only a whole lease duration after it
saw that renewal, so a write that passes the check lands while the Lease is still ours (with the
difference, lease duration - renew deadline, left for the request to arrive). That holds whatever
happened to this process in between: a leader frozen by SIGSTOP, a stalled VM or a GC pause finds
the clock past the fence when it runs again, and its first write fails before a byte is sent,
while the renewer on its own thread sees the same and stops the process.

Without leader election the fence is open."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class LeaseExpired(RuntimeError):
    """A write refused: the Lease this process held may belong to another replica by now."""


class WriteFence:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._until: float | None = None  # None: not electing, always open
        self._refused = 0

    def hold_until(self, deadline: float) -> None:
        """Writes may go out until `deadline` (clock time)."""
        self._until = deadline

    def close(self) -> None:
        self._until = -math.inf

    @property
    def is_open(self) -> bool:
        return self._until is None or self.clock() < self._until

    def check(self, what: str) -> None:
        if self.is_open:
            return
        self._refused += 1
        if self._refused == 1:
            log.error("leader election: refusing %s and every later write: the Lease may have passed to "
                      "another replica", what)
        raise LeaseExpired(f"{what}: not sent, the Lease may have passed to another replica")


FENCE = WriteFence()  # the process's one fence: set by the renewer, checked by the session

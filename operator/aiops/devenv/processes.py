"""Real processes behind simulated containers, supervised the way a kubelet supervises containers.

One `ContainerProcess` per launched container: a thread that starts the program, performs its
startup/readiness/liveness probes, restarts it after exits or liveness failures as the pod's
restartPolicy says (with CrashLoopBackOff's doubling back-off in between), and stops it with
SIGTERM, then SIGKILL after the grace period. Its state is read as an immutable
`ContainerSnapshot`, from which the node reports the pod's status.

Every process runs in its own session (so its children, e.g. Triton's Python-backend stubs, are
stopped with it) and is recorded in a `PidRegistry` under the agent's state dir, so an agent that
died without stopping its pods has its orphans reaped by the next one. The processes also get
PR_SET_PDEATHSIG, so they die with the agent's supervising thread even when nobody reaps them.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from aiops.devenv.launchers import LaunchSpec
from aiops.devenv.probes import ProbeSpec, ProbeTracker, perform

MESSAGE_LIMIT = 4096  # the kubelet's limit on a termination message
LOG_TAIL_LINES, LOG_TAIL_BYTES = 80, 2048  # FallbackToLogsOnError takes this much of the log

# Runs as the process's first program: asks the kernel to SIGTERM it when the thread that started
# it dies, checks the parent did not die first, then becomes the real program (same pid). A
# program that cannot be executed exits 1 with the reason as its last log line.
_PDEATHSIG_SHIM = (
    "import ctypes,os,signal,sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "os.getppid() == int(sys.argv[1]) or sys.exit(137)\n"
    "try:\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "except OSError as e:\n"
    "    sys.exit(f'exec {sys.argv[2]}: {e}')\n")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class RuntimeOptions:
    """Timing knobs. `probe_time_scale` scales probe delays and periods (tests use < 1);
    the back-off doubles from `backoff_base` up to `backoff_cap` as CrashLoopBackOff does
    (the kubelet's are 10 s and 300 s); `max_grace` caps terminationGracePeriodSeconds."""

    probe_time_scale: float = 1.0
    backoff_base: float = 10.0
    backoff_cap: float = 300.0
    max_grace: float = 30.0
    poll_interval: float = 0.05


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str  # Completed | Error | StartError
    message: str
    started_at: dt.datetime | None
    finished_at: dt.datetime
    signal: int = 0


@dataclass(frozen=True)
class ContainerSnapshot:
    """A container's state as the kubelet reports it (see podstatus.process_pod_status)."""

    name: str
    image: str
    state: str  # waiting | running | terminated
    reason: str = ""  # waiting: ContainerCreating | CrashLoopBackOff | CreateContainerError ...
    message: str = ""
    ready: bool = False
    started: bool = False  # running and its startupProbe (if any) passed
    restart_count: int = 0
    started_at: dt.datetime | None = None
    terminated: Terminated | None = None  # the current state, when terminated
    last_terminated: Terminated | None = None
    final: bool = False  # terminated and will not be restarted
    pid: int | None = None


@dataclass
class ContainerPaths:
    log: Path
    termination: Path
    cwd: Path

    def create(self) -> None:
        for p in (self.log.parent, self.termination.parent, self.cwd):
            p.mkdir(parents=True, exist_ok=True)


# ---- pid records --------------------------------------------------------------------------------

def proc_stat(pid: int) -> tuple[int, int] | None:
    """(process group, start time in clock ticks) from /proc, or None when the pid is gone.
    The start time tells a recorded process from an unrelated one that reused its pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[2]), int(fields[19])


def ours(pgid: int, started: int) -> bool:
    """Whether the process group recorded as (`pgid`, leader start time) still has members.
    A live leader must have the recorded start time (else its pid was reused by another
    process); with the leader gone, Linux keeps its pid out of reuse while the group has
    members, so any member of `pgid` is one of ours."""
    leader = proc_stat(pgid)
    if leader is not None:
        return leader[1] == started
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := proc_stat(int(entry.name))) and st[0] == pgid:
            return True
    return False


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class PidRegistry:
    """One file per running process (`<key>.pid`: pid and start time) under the state dir."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def record(self, key: str, pid: int) -> None:
        st = proc_stat(pid)
        (self.dir / f"{key}.pid").write_text(f"{pid} {st[1] if st else 0}\n")

    def forget(self, key: str) -> None:
        (self.dir / f"{key}.pid").unlink(missing_ok=True)

    def reap(self, grace: float = 2.0) -> list[int]:
        """Stops every recorded process group still alive (an agent died without stopping
        them); returns the pids it signalled."""
        victims: list[int] = []
        for record in self.dir.glob("*.pid"):
            try:
                pid, started = (int(x) for x in record.read_text().split())
            except ValueError:
                record.unlink(missing_ok=True)
                continue
            if ours(pid, started):
                kill_group(pid, signal.SIGTERM)
                victims.append(pid)
            record.unlink(missing_ok=True)
        deadline = time.monotonic() + grace
        while victims and time.monotonic() < deadline and any(proc_stat(p) for p in victims):
            time.sleep(0.05)
        for pid in victims:
            kill_group(pid, signal.SIGKILL)
        return victims


# ---- one supervised container -------------------------------------------------------------------

@dataclass
class _Probes:
    startup: ProbeSpec | None = None
    readiness: ProbeSpec | None = None
    liveness: ProbeSpec | None = None
    trackers: dict[str, ProbeTracker] = field(default_factory=dict)


EventSink = Callable[[str, str, str], None]  # (type Normal|Warning, reason, message)


class ContainerProcess:
    """Runs one container's program until stopped; restarts it per the restart policy."""

    def __init__(self, key: str, name: str, image: str, spec: LaunchSpec, paths: ContainerPaths,
                 restart_policy: str, probes: dict[str, ProbeSpec | None], pod_ip: str,
                 registry: PidRegistry, options: RuntimeOptions, fallback_to_logs: bool = False,
                 on_change: Callable[[], None] = lambda: None,
                 on_event: EventSink = lambda *_: None, mounts: dict[str, str] | None = None):
        self.key, self.spec, self.paths, self.pod_ip = key, spec, paths, pod_ip
        self.mounts = mounts or {}
        self.restart_policy, self.registry, self.options = restart_policy, registry, options
        self.fallback_to_logs = fallback_to_logs
        self._probes = _Probes(probes.get("startup"), probes.get("readiness"), probes.get("liveness"))
        self._on_change, self._on_event = on_change, on_event
        self._lock = threading.Lock()
        self._snap = ContainerSnapshot(name, image, "waiting", reason="ContainerCreating")
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._grace = options.max_grace
        self._backoff_until = 0.0
        self._run_started = 0.0
        self._thread = threading.Thread(target=self._run, name=f"proc-{key}", daemon=True)

    # ---- public ----
    def start(self) -> ContainerProcess:
        self.paths.create()
        self._thread.start()
        return self

    def snapshot(self) -> ContainerSnapshot:
        with self._lock:
            return self._snap

    def stop(self, grace: float | None = None, wait: bool = True) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (capped by the options)."""
        if grace is not None:
            self._grace = min(grace, self.options.max_grace)
        self._stop.set()
        if wait and self._thread.is_alive():
            self._thread.join()

    # ---- the supervising thread ----
    def _set(self, **changes) -> None:
        with self._lock:
            new = replace(self._snap, **changes)
            changed = new != self._snap
            self._snap = new
        if changed:
            self._on_change()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._proc is None:
                    if self.snapshot().final:
                        self._stop.wait(1.0)
                    elif time.monotonic() >= self._backoff_until:
                        self._launch()
                    else:
                        self._stop.wait(min(self._backoff_until - time.monotonic(), 0.5))
                    continue
                code = self._proc.poll()
                if code is not None:
                    self._exited(code)
                    continue
                self._probe(time.monotonic())
                self._stop.wait(self.options.poll_interval)
        finally:
            self._terminate(self._grace)

    def _launch(self) -> None:
        self.paths.termination.unlink(missing_ok=True)
        self.paths.termination.touch()
        started = utcnow()
        with open(self.paths.log, "ab") as log:
            log.write(f"--- {started.isoformat()} starting: {' '.join(self.spec.argv)}\n".encode())
            log.flush()
            try:
                shim = [sys.executable, "-I", "-c", _PDEATHSIG_SHIM, str(os.getpid())]
                self._proc = subprocess.Popen(
                    [*shim, *self.spec.argv], env=self.spec.env, cwd=self.spec.cwd, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:  # e.g. the working directory is missing
                log.write(f"--- failed to start: {e}\n".encode())
                self._exited(128, start_error=f"failed to start {self.spec.argv[0]}: {e}")
                return
        self.registry.record(self.key, self._proc.pid)
        self._run_started = time.monotonic()
        now = time.monotonic()
        p = self._probes
        p.trackers = {kind: ProbeTracker(spec, now, initial=(kind == "liveness"))
                      for kind, spec in (("startup", p.startup), ("readiness", p.readiness),
                                         ("liveness", p.liveness)) if spec}
        self._set(state="running", reason="", message="", started_at=started, terminated=None,
                  ready=p.readiness is None and p.startup is None, started=p.startup is None,
                  pid=self._proc.pid)
        self._on_event("Normal", "Started", f"Started container {self.snapshot().name}")

    def _exited(self, code: int, start_error: str = "", killed_for: str = "") -> None:
        """Records the exit and decides on the restart, as the kubelet does."""
        if self._proc is not None:
            kill_group(self._proc.pid, signal.SIGKILL)  # leftovers of the container's session
            self.registry.forget(self.key)
        self._proc = None
        code, sig = exit_code(code)
        snap = self.snapshot()
        term = Terminated(
            exit_code=code, signal=sig, started_at=snap.started_at, finished_at=utcnow(),
            reason="StartError" if start_error else ("Completed" if code == 0 else "Error"),
            message=start_error or self._termination_message(code))
        restart = not self._stop.is_set() and (
            self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and code != 0)
            or (killed_for and self.restart_policy != "Never"))
        if not restart:
            self._set(state="terminated", terminated=term, ready=False, started=False, final=True,
                      pid=None)
            return
        ran = time.monotonic() - self._run_started
        restarts = 0 if ran > 2 * self.options.backoff_cap else snap.restart_count
        delay = min(self.options.backoff_base * 2 ** min(restarts, 30), self.options.backoff_cap)
        self._backoff_until = time.monotonic() + delay
        self._set(state="waiting", reason="CrashLoopBackOff", pid=None, ready=False, started=False,
                  message=f"back-off {delay:g}s restarting failed container={snap.name}",
                  restart_count=snap.restart_count + 1, last_terminated=term, terminated=None)
        cause = killed_for or f"exit code {code}"
        self._on_event("Warning", "BackOff", f"Back-off restarting failed container ({cause})")

    def _termination_message(self, exit_code: int) -> str:
        try:
            message = self.paths.termination.read_bytes()[:MESSAGE_LIMIT].decode(errors="replace")
        except OSError:
            message = ""
        if not message.strip() and self.fallback_to_logs and exit_code != 0:
            message = self.log_tail()
        return message

    def log_tail(self) -> str:
        """The end of the latest run's output, as FallbackToLogsOnError reports it."""
        try:
            text = self.paths.log.read_bytes()[-64 * 1024:].decode(errors="replace")
        except OSError:
            return ""
        lines = text.splitlines()
        starts = [i for i, ln in enumerate(lines) if ln.startswith("--- ") and " starting: " in ln]
        run = lines[starts[-1] + 1:] if starts else lines
        return "\n".join(run[-LOG_TAIL_LINES:])[-LOG_TAIL_BYTES:]

    def _probe(self, now: float) -> None:
        snap, trackers = self.snapshot(), self._probes.trackers
        if "startup" in trackers and not trackers["startup"].result:
            kinds = ["startup"]
        else:
            kinds = [k for k in ("readiness", "liveness") if k in trackers]
        for kind in kinds:
            tracker = trackers[kind]
            if not tracker.due(now):
                continue
            ok, why = perform(tracker.spec, self.pod_ip, self.spec.env, self.spec.cwd, self.mounts)
            flipped = tracker.record(ok, time.monotonic(), why)
            if not ok:
                self._on_event("Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {why}")
            if kind == "startup" and flipped:
                self._set(started=True, ready=self._probes.readiness is None)
            elif kind == "readiness" and flipped:
                self._set(ready=tracker.result)
            elif kind in ("liveness", "startup") and tracker.exhausted:
                what = "liveness" if kind == "liveness" else "startup"
                self._on_event("Normal", "Killing",
                               f"Container {snap.name} failed {what} probe, will be restarted")
                code = self._terminate(self._grace)
                self._exited(code if code is not None else 137, killed_for=f"{what} probe failed")
                return

    def _terminate(self, grace: float) -> int | None:
        """SIGTERM to the container's session, SIGKILL after `grace`; returns the exit code."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            if proc is not None:
                kill_group(proc.pid, signal.SIGKILL)
                self.registry.forget(self.key)
            return proc.returncode if proc else None
        kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=max(grace, 0.0))
        except subprocess.TimeoutExpired:
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
        kill_group(proc.pid, signal.SIGKILL)
        self.registry.forget(self.key)
        if self._stop.is_set():  # stopped for good: the pod is going away
            self._proc = None
            code, sig = exit_code(proc.returncode)
            term = Terminated(code, "Completed" if code == 0 else "Error", "",
                              self.snapshot().started_at, utcnow(), sig)
            self._set(state="terminated", ready=False, started=False, final=True, pid=None,
                      terminated=term)
        return proc.returncode


def exit_code(returncode: int) -> tuple[int, int]:
    """(exitCode, signal) as the kubelet reports them: a signal N becomes 128 + N."""
    return (128 - returncode, -returncode) if returncode < 0 else (returncode, 0)

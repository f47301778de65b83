"""Real local processes supervised as a kubelet supervises containers (no cluster needed)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from aiops.devenv.launchers import LaunchSpec
from aiops.devenv.probes import ProbeSpec
from aiops.devenv.processes import (
    ContainerPaths,
    ContainerProcess,
    PidRegistry,
    RuntimeOptions,
    proc_stat,
)

FAST = RuntimeOptions(backoff_base=0.1, backoff_cap=0.4, max_grace=1.0, poll_interval=0.02)


def wait_until(fn, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := fn():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def container(tmp_path: Path, code: str, *args: str, restart="Never", probes=None, fallback=False,
              options=FAST) -> ContainerProcess:
    paths = ContainerPaths(tmp_path / "logs" / "c.log", tmp_path / "c" / "termination-log", tmp_path / "work")
    spec = LaunchSpec([sys.executable, "-c", textwrap.dedent(code), *args],
                      {"PATH": os.environ["PATH"], "TERM_FILE": str(paths.termination)}, str(paths.cwd))
    return ContainerProcess("uid_c", "c", "img", spec, paths, restart, probes or {}, "127.0.0.1",
                            PidRegistry(tmp_path / "pids"), options, fallback_to_logs=fallback).start()


def gone(pid: int) -> bool:
    st = proc_stat(pid)
    return st is None or Path(f"/proc/{pid}/status").read_text().find("zombie") >= 0


def test_exit_code_and_termination_message_with_restart_never(tmp_path):
    c = container(tmp_path, """
        import os, sys
        open(os.environ["TERM_FILE"], "w").write("accuracy 0.42 < 0.90")
        sys.exit(3)""")
    snap = wait_until(lambda: (s := c.snapshot()).final and s, what="final exit")
    assert snap.state == "terminated" and snap.restart_count == 0
    assert (snap.terminated.exit_code, snap.terminated.reason) == (3, "Error")
    assert snap.terminated.message == "accuracy 0.42 < 0.90"
    assert not (tmp_path / "pids" / "uid_c.pid").exists()


def test_success_is_completed(tmp_path):
    c = container(tmp_path, "print('done')")
    snap = wait_until(lambda: (s := c.snapshot()).final and s)
    assert (snap.terminated.exit_code, snap.terminated.reason) == (0, "Completed")


def test_fallback_to_logs_on_error_reports_the_log_tail(tmp_path):
    c = container(tmp_path, "import sys; print('line 1'); sys.exit('model.py: no such tensor OUTPUT9')",
                  fallback=True)
    snap = wait_until(lambda: (s := c.snapshot()).final and s)
    assert "no such tensor OUTPUT9" in snap.terminated.message and "line 1" in snap.terminated.message
    assert "starting:" not in snap.terminated.message


def test_on_failure_restarts_with_back_off_until_it_succeeds(tmp_path):
    counter = tmp_path / "runs"
    c = container(tmp_path, """
        import pathlib, sys
        p = pathlib.Path(sys.argv[1]); n = int(p.read_text() or 0) if p.exists() else 0
        p.write_text(str(n + 1)); sys.exit(0 if n >= 2 else 5)""", str(counter), restart="OnFailure")
    seen_backoff = wait_until(lambda: c.snapshot().reason == "CrashLoopBackOff" and c.snapshot())
    assert seen_backoff.last_terminated.exit_code == 5
    snap = wait_until(lambda: (s := c.snapshot()).final and s)
    assert snap.restart_count == 2 and snap.terminated.exit_code == 0
    assert counter.read_text() == "3"


def test_liveness_failure_kills_and_restarts(tmp_path):
    marker = tmp_path / "healthy"
    probe = ProbeSpec("exec", command=("test", "-e", str(marker)), period=0.1, failure_threshold=2)
    c = container(tmp_path, """
        import pathlib, sys, time
        p = pathlib.Path(sys.argv[1]); p.write_text("ok"); time.sleep(0.5); p.unlink(); time.sleep(60)""",
                  str(marker), restart="Always", probes={"liveness": probe})
    first = wait_until(lambda: c.snapshot().pid)
    snap = wait_until(lambda: (s := c.snapshot()).restart_count >= 1 and s.state == "running" and s)
    assert snap.pid != first and gone(first)
    assert snap.last_terminated.exit_code == 143 and snap.last_terminated.signal == signal.SIGTERM
    c.stop()


def test_readiness_follows_the_probe(tmp_path):
    marker = tmp_path / "ready"
    probe = ProbeSpec("exec", command=("test", "-e", str(marker)), period=0.05, failure_threshold=1)
    c = container(tmp_path, "import time; time.sleep(60)", restart="Always", probes={"readiness": probe})
    wait_until(lambda: c.snapshot().state == "running")
    time.sleep(0.3)
    assert not c.snapshot().ready
    marker.write_text("")
    wait_until(lambda: c.snapshot().ready, what="ready")
    marker.unlink()
    wait_until(lambda: not c.snapshot().ready, what="unready again")
    c.stop()


def test_stop_escalates_to_sigkill_after_the_grace(tmp_path):
    c = container(tmp_path, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN); print('TERM', 'ignored', flush=True); time.sleep(60)""",
                  restart="Always")
    wait_until(lambda: c.paths.log.exists() and "TERM ignored" in c.paths.log.read_text(),
               what="handler installed")
    pid = c.snapshot().pid
    t0 = time.monotonic()
    c.stop(grace=0.5)
    assert 0.4 < time.monotonic() - t0 < 3
    assert gone(pid)
    assert c.snapshot().terminated.exit_code == 137


def test_registry_reaps_recorded_groups_only(tmp_path):
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        reg = PidRegistry(tmp_path)
        reg.record("victim", victim.pid)
        # A record whose start time does not match: the pid was reused by someone else.
        (tmp_path / "reused.pid").write_text(f"{bystander.pid} 1\n")
        assert PidRegistry(tmp_path).reap(grace=1) == [victim.pid]
        assert victim.wait(timeout=5) == -signal.SIGTERM
        assert bystander.poll() is None
        assert not list(tmp_path.glob("*.pid"))
    finally:
        for p in (victim, bystander):
            p.kill()
            p.wait()


def test_processes_die_with_their_supervisor(tmp_path):
    """An agent killed with SIGKILL never stops its pods; PR_SET_PDEATHSIG does it for it."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_processes import container
        c = container(Path({str(tmp_path)!r}), "import time; time.sleep(60)", restart="Always")
        while not c.snapshot().pid:
            time.sleep(0.02)
        print(c.snapshot().pid, flush=True)
        time.sleep(60)""")
    agent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(agent.stdout.readline())
        assert not gone(pid)
        agent.kill()
        agent.wait()
        wait_until(lambda: gone(pid), timeout=5, what="the container process to die with its agent")
    finally:
        agent.kill()
        agent.wait()


def test_a_missing_working_directory_is_a_start_error(tmp_path):
    spec = LaunchSpec([sys.executable, "-c", "pass"], {}, str(tmp_path / "missing"))
    c = ContainerProcess("k", "c", "img", spec, ContainerPaths(tmp_path / "l.log", tmp_path / "t", tmp_path / "w"),
                         "Never", {}, "127.0.0.1", PidRegistry(tmp_path / "p"), FAST).start()
    snap = wait_until(lambda: (s := c.snapshot()).final and s)
    assert snap.terminated.reason == "StartError" and snap.terminated.exit_code == 128
    assert "missing" in snap.terminated.message


def test_a_missing_program_fails_with_the_reason_in_the_log(tmp_path):
    spec = LaunchSpec(["/nonexistent/tritonserver"], {}, str(tmp_path))
    c = ContainerProcess("k", "c", "img", spec, ContainerPaths(tmp_path / "l.log", tmp_path / "t", tmp_path / "w"),
                         "Never", {}, "127.0.0.1", PidRegistry(tmp_path / "p"), FAST,
                         fallback_to_logs=True).start()
    snap = wait_until(lambda: (s := c.snapshot()).final and s)
    assert snap.terminated.exit_code == 1
    assert "/nonexistent/tritonserver" in snap.terminated.message and "No such file" in snap.terminated.message

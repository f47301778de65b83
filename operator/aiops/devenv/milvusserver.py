"""A real standalone Milvus 2.3 from the PyPI `milvus` package, started in a base dir on chosen ports.

Used by the tests that must see what real Milvus does (it keeps duplicate primary keys on insert;
milvus-lite merges them) and by the simulated GPU node for Milvus pods. What the package's own
`default_server` does not give, and this module adds:

- Several servers at once. The package fixes the embedded etcd on 127.0.0.1:2379/2380 and picks
  the other ports by scanning up from Milvus's defaults, so a second server in parallel collides.
  Here every port is chosen (the kernel's free ports unless given), the embedded etcd gets its
  own through `etcd.config.path` (an etcd YAML with listen/advertise URLs), and the choice is kept
  in `<base>/ports.json`, so a restart on the same dir finds the same addresses that its etcd
  already recorded.
- A listen host. Milvus 2.3 cannot be told where to listen: its gRPC servers and the
  health/metrics HTTP server bind every interface (`:port`); the `<role>.ip` settings only change
  the address a component advertises. Given a host (a pod IP), the server runs on free internal
  ports and a small TCP forwarder listens on host:port and host:health_port, so two pods can both
  "listen on 19530" on their own IPs. Without a host Milvus binds `*:port` itself (no forwarder),
  which takes that port on every address: servers that share a port number must all have a host.
- One copy of the binaries. The package unpacks ~180 MB of lzma'd binaries into every base dir;
  here they are unpacked once per version under ~/.cache/aiops/milvus/ (a lock makes concurrent
  first starts safe) and every server runs them from there with its own config dir (MILVUSCONF).
- Health: ready when GET /healthz on the health port says OK and the proxy port accepts.
  Stop: SIGTERM to the process group, SIGKILL after a grace period.

Usage:
    with MilvusServer(tmp_path / "milvus") as server:      # free ports, all interfaces
        client = MilvusClient(uri=server.uri)
    MilvusServer(base, port=19530, host="127.0.0.12", health_port=9091).start()   # a pod
    python -m aiops.devenv.milvusserver --base-dir D --host IP --port 19530 --health-port 9091
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import lzma
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

from aiops.devenv.milvusserver_config import MilvusPorts, free_ports, package_dir, package_version, write_configs
from aiops.devenv.milvusserver_forward import TcpForwarder

ROOT_USER, ROOT_PASSWORD = "root", "Milvus"  # Milvus's built-in superuser when authorization is on
ALL_INTERFACES = ("", "0.0.0.0", "*")


class MilvusStartError(RuntimeError):
    """The server did not become healthy; the message carries the tail of its log."""


def cache_root() -> Path:
    return Path(os.environ.get("AIOPS_CACHE_DIR", Path.home() / ".cache" / "aiops")) / "milvus"


def unpacked_binaries() -> Path:
    """The package's binaries, unpacked once per version; built beside and renamed into place
    under a lock, so a concurrent or interrupted first start never runs a half-written binary."""
    target = cache_root() / package_version() / "bin"
    if (target / "milvus").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "milvus").exists():
            return target
        partial = target.parent / f"bin.partial.{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for packed in sorted((package_dir() / "data" / "bin").glob("*.lzma")):
            out = partial / packed.name.removesuffix(".lzma")
            with lzma.open(packed) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            out.chmod(0o755)
        partial.rename(target)
    return target


class MilvusServer:
    """One standalone Milvus process on `base_dir` (created if missing; data survives restarts).

    port/health_port: where clients and probes reach it (0: a free port). host: None or an
    all-interfaces address: Milvus binds them itself; any other address (a pod IP): Milvus runs on
    free ports and a forwarder listens on host:port and host:health_port. authorization: turn on
    Milvus's user/password check (user `root`, password `Milvus`). settings: more milvus.yaml keys,
    dotted (`{"dataCoord.compaction.enableAutoCompaction": "false"}`)."""

    def __init__(self, base_dir: Path | str, port: int = 0, host: str | None = None, health_port: int = 0,
                 authorization: bool = False, startup_timeout: float = 180.0,
                 settings: dict[str, object] | None = None):
        self.base_dir = Path(base_dir).resolve()
        self.host = None if host in ALL_INTERFACES else host
        self.port, self.health_port = port, health_port
        self.authorization = authorization
        self.settings = dict(settings or {})
        self.startup_timeout = startup_timeout
        self.ports: MilvusPorts | None = None
        self.process: subprocess.Popen | None = None
        self._forwarder: TcpForwarder | None = None
        self._lock = None

    # -- what clients use
    @property
    def address(self) -> str:
        return self.host or "127.0.0.1"

    @property
    def uri(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def health_url(self) -> str:
        return f"http://{self.address}:{self.health_port}/healthz"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "logs" / "milvus-stdout.log"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- lifecycle
    def start(self) -> MilvusServer:
        """Starts and waits until healthy; raises MilvusStartError (server stopped) otherwise.
        Ports the caller left to chance are chosen again once if another process took one."""
        for attempt in range(3):
            try:
                self._start_once()
                return self
            except MilvusStartError as exc:
                self.stop(grace=2)
                if attempt == 2 or "address already in use" not in str(exc):
                    raise
            except BaseException:
                self.stop(grace=2)
                raise
        return self

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM to the server's process group, SIGKILL after `grace` seconds; returns its exit code.
        Milvus 2.3's graceful stop took over 20 s here (its components wait on each other's
        sessions); nothing is lost by the SIGKILL: inserts are in the rocksmq WAL before they are
        acknowledged and are replayed on the next start."""
        if self._forwarder:
            self._forwarder.stop()
            self._forwarder = None
        proc, self.process = self.process, None
        if proc is None:
            return None
        atexit.unregister(self.stop)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(OSError):
            (self.base_dir / "milvus.pid").unlink()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        return proc.returncode

    def __enter__(self) -> MilvusServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _claim_dir(self) -> None:
        """One server per base dir. A live owner holds `<base>/owner.lock`: refuse. No owner but the
        pid in `<base>/milvus.pid` is still a Milvus: a previous owner died without stopping it
        (its etcd and rocksmq would fight a new one), so it is killed first."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.base_dir / "owner.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise MilvusStartError(f"another process runs a Milvus server on {self.base_dir}") from None
        self._lock = lock
        pid_file = self.base_dir / "milvus.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if b"milvus" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.killpg(pid, signal.SIGKILL)
                while Path(f"/proc/{pid}").exists() and b"milvus" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    time.sleep(0.1)

    def _start_once(self) -> None:
        binaries = unpacked_binaries()
        if self._lock is None:
            self._claim_dir()
        saved = self.base_dir / "ports.json"
        previous = json.loads(saved.read_text()) if saved.exists() else None
        forwarded = self.host is not None
        self.ports = MilvusPorts.choose(0 if forwarded else self.port, 0 if forwarded else self.health_port,
                                        previous)
        saved.write_text(json.dumps(asdict(self.ports)))
        if forwarded:
            self.port = self.port or free_ports(1)[0]
            self.health_port = self.health_port or free_ports(1, {self.port})[0]
        else:
            self.port, self.health_port = self.ports.proxy_port, self.ports.health_port
        configs = write_configs(self.base_dir, self.ports, self.authorization, self.settings)
        env = {**os.environ, "DEPLOY_MODE": "STANDALONE", "MILVUSCONF": str(configs),
               "METRICS_PORT": str(self.ports.health_port), "MILVUS_RUN_DIR": str(self.base_dir / "run"),
               "LD_LIBRARY_PATH": ":".join(filter(None, [str(binaries), os.environ.get("LD_LIBRARY_PATH")]))}
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen([str(binaries / "milvus"), "run", "standalone"], cwd=self.base_dir,
                                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        (self.base_dir / "milvus.pid").write_text(str(self.process.pid))
        atexit.register(self.stop, 2.0)  # never leave a server running after this interpreter
        if forwarded:
            self._forwarder = TcpForwarder(self.host, [(self.port, self.ports.proxy_port),
                                                       (self.health_port, self.ports.health_port)]).start()
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self.ports is not None
        deadline = time.monotonic() + self.startup_timeout
        local_health = f"http://127.0.0.1:{self.ports.health_port}/healthz"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise MilvusStartError(f"milvus exited ({self.process and self.process.returncode}) while "
                                       f"starting:\n{self.log_tail()}")
            if healthy(local_health) and accepts(self.address, self.port):
                return
            time.sleep(0.25)
        raise MilvusStartError(f"milvus not healthy after {self.startup_timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        wanted = [line for line in text if "ERROR" in line or "WARN" in line or "panic" in line] or text
        return "\n".join(wanted[-lines:])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200 and b"OK" in resp.read()
    except OSError:
        return False


def accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Foreground server for the simulated node's Milvus pods: runs until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m aiops.devenv.milvusserver", description=__doc__.split("\n")[0])
    parser.add_argument("--base-dir", required=True, help="data, configs and logs (kept across restarts)")
    parser.add_argument("--host", default=None, help="listen address (a pod IP); unset: all interfaces")
    parser.add_argument("--port", type=int, default=19530, help="client port (0: any free)")
    parser.add_argument("--health-port", type=int, default=9091, help="/healthz and /metrics port")
    parser.add_argument("--authorization", action="store_true", help="require user/password (root/Milvus)")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    server = MilvusServer(args.base_dir, port=args.port, host=args.host, health_port=args.health_port,
                          authorization=args.authorization, startup_timeout=args.startup_timeout)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
    except MilvusStartError as exc:
        print(str(exc), flush=True)
        return 1
    print(json.dumps({"uri": server.uri, "health": server.health_url, "pid": server.process.pid}), flush=True)
    while not stop.wait(1.0):
        if not server.running():
            print(f"milvus exited unexpectedly:\n{server.log_tail()}", flush=True)
            server.stop()
            return 1
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

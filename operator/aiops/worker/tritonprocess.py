"""A private, short-lived `tritonserver` for the validation worker: on 127.0.0.1, a free port,
explicit model control, and always stopped (with its Python-backend stubs) when the work is done.

Which binary: `tritonserver` on PATH. The worker image is built on NVIDIA's Triton image, where
it is there with its backends in the default place. On a developer machine, the simulated node
and CI, the development environment puts the `nvidia-pytriton` wheel's server there
(`aiops.devenv.tritonruntime.put_triton_on_path`).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from aiops.triton.client import TritonServer

# Options this module owns; the same options among the spec's runtime.args are dropped.
OWNED_OPTIONS = ("--model-repository", "--model-store", "--model-control-mode", "--load-model",
                 "--http-address", "--http-port", "--grpc-address", "--grpc-port", "--allow-grpc",
                 "--metrics-address", "--metrics-port", "--allow-metrics", "--backend-directory",
                 "--cache-directory", "--exit-timeout-secs")
START_ATTEMPTS = 3  # a free port can be taken between choosing it and Triton binding it
LOG_TAIL = 1200  # characters of Triton's log quoted in a failure message


class TritonStartError(RuntimeError):
    """tritonserver is missing, exited, or never became ready; the message quotes its log."""


def find_triton() -> str:
    """`tritonserver` on PATH; raises TritonStartError."""
    found = shutil.which("tritonserver")
    if found is None:
        raise TritonStartError("no tritonserver on PATH: the worker runs on a Triton image (in development, "
                               "aiops.devenv.tritonruntime.put_triton_on_path() puts the wheel's there)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_options(args: list[str]) -> list[str]:
    """The spec's extra tritonserver arguments minus the ones this module sets itself."""
    return [a for a in args if a.partition("=")[0] not in OWNED_OPTIONS and "shm-region-prefix-name" not in a]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the worker dies, even by SIGKILL (a Job past
    its deadline), so no server outlives the pod's main process."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn_options(argv: list[str]) -> tuple[list[str], dict]:
    """`argv` run so that it dies with the worker. util-linux's `setpriv` (in every Debian and
    Ubuntu image) sets the signal and execs, so Popen needs no `preexec_fn`: Python code in a
    forked child of a process with gRPC's threads can abort before the exec."""
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, "--pdeathsig", "TERM", "--", *argv], {}
    return argv, {"preexec_fn": _die_with_parent}


class LocalTriton:
    """`async with LocalTriton(repo, scratch) as server:` — `server`, a `TritonServer` client, is
    ready; on the way out the server is stopped, whatever happened inside."""

    def __init__(self, repository: Path, scratch: Path, extra_args: list[str] | None = None,
                 request_timeout: float = 30.0):
        self.repository = repository.resolve()  # Triton runs in `scratch`, not our cwd
        self.scratch = scratch
        self.extra_args = user_options(extra_args or [])
        self.request_timeout = request_timeout
        self.log_file = scratch / "tritonserver.log"
        self.shm_prefix = f"aiops-validate-{os.getpid()}-{secrets.token_hex(4)}-"
        self.process: subprocess.Popen | None = None
        self.client: TritonServer | None = None

    def log_tail(self, limit: int = LOG_TAIL) -> str:
        """The end of the server's log without its option/model tables: what a failure says."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith(("|", "+"))]
        return "\n".join(lines[-6:])[-limit:]

    def _spawn(self, binary: str, port: int) -> subprocess.Popen:
        argv = [binary, f"--model-repository={self.repository}", "--model-control-mode=explicit",
                "--http-address=127.0.0.1", f"--http-port={port}", "--allow-grpc=false",
                "--allow-metrics=false", "--exit-timeout-secs=2",
                f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
                *self.extra_args]
        with open(self.log_file, "ab") as log:
            # Its own session, so stop() can signal the server and its stubs as one group.
            argv, options = _spawn_options(argv)
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.scratch,
                                    start_new_session=True, **options)

    async def _wait_ready(self, client: TritonServer) -> None:
        """Until the server answers ready; raises TritonStartError if it exits first."""
        while True:
            if self.process.poll() is not None:
                raise TritonStartError(f"tritonserver exited with code {self.process.returncode} before "
                                       f"it was ready: {self.log_tail()}")
            health = await client.health("")  # no model yet: only live and ready count
            if health.live and health.ready:
                return
            await asyncio.sleep(0.1)

    async def start(self) -> TritonServer:
        binary = find_triton()
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            self.process = self._spawn(binary, port)
            self.client = TritonServer(f"127.0.0.1:{port}", timeout=self.request_timeout)
            try:
                await self._wait_ready(self.client)
                return self.client
            except TritonStartError:
                await self.stop()
                if attempt == START_ATTEMPTS or "address already in use" not in self.log_tail().lower():
                    raise
        raise AssertionError("unreachable")

    async def stop(self) -> None:
        """Closes the client, then stops the server (see `kill`); safe to call twice. The client
        goes first: Triton waits out its whole exit timeout while a keep-alive connection is open."""
        if self.client is not None:
            client, self.client = self.client, None
            try:
                await client.close()
            finally:
                self.kill()
        self.kill()

    def kill(self) -> None:
        """SIGTERM to the server alone (it shuts its Python-backend stubs down itself and removes
        their shared memory; signalling the stubs too would leave /dev/shm regions behind), then
        SIGKILL to the whole group: after the server's own exit timeout, or for stubs left
        behind. Blocking on purpose: a cancellation (timeout, SIGTERM of the worker) must not
        interrupt it halfway."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        # A server stopped while loading or with a request in flight (timeout, SIGTERM) exits
        # without removing its stubs' regions; they would stay in /dev/shm (RAM) until reboot on
        # a machine that is not a pod. They carry this server's own prefix, so only ours go.
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)

    async def __aenter__(self) -> TritonServer:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def scratch_dir() -> tempfile.TemporaryDirectory:
    """Working space for the server: its log, and the wheel's backend links when used."""
    return tempfile.TemporaryDirectory(prefix="aiops-validate-")

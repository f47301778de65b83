"""The part of a kubelet's own API that the API server proxies to a simulated node: container
logs (`kubectl logs`, a client's GET on pods/log). The API server checks the pod and container
exist and reaches the node at its InternalIP and `daemonEndpoints.kubeletEndpoint.Port`
verifying the serving certificate against the cluster CA (`--kubelet-certificate-authority`) and
presenting its kubelet-client certificate; this server demands a client certificate from the same
CA, as a kubelet with x509 client authentication does.

`GET /containerLogs/{namespace}/{pod}/{container}` with the kubelet's `tailLines` (the last N
lines) and `limitBytes` (at most this many bytes of that, from its start) answers what the
container's current run printed; `follow`, `previous` and `timestamps` are not simulated (400)."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

log = logging.getLogger(__name__)
LogFile = Callable[[str, str, str], Path | None]  # (namespace, pod, container) -> its log file


def current_run(text: bytes) -> bytes:
    """What the container's current run printed: the node's log file holds every run, each after a
    `--- <time> starting: <argv>` line (processes.py); a kubelet serves the current one."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(b"--- ") and b" starting: " in line]
    return b"".join(lines[starts[-1] + 1:]) if starts else text


def select(text: bytes, tail_lines: int | None, limit_bytes: int | None) -> bytes:
    """The kubelet's selection: the last `tail_lines` lines, then at most `limit_bytes` of them."""
    if tail_lines is not None:
        lines = text.splitlines(keepends=True)
        text = b"".join(lines[-tail_lines:]) if tail_lines > 0 else b""
    if limit_bytes is not None:
        text = text[:limit_bytes]
    return text


class KubeletServer:
    def __init__(self, log_file: LogFile, cert: Path, key: Path, ca: Path, host: str = "127.0.0.1"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
        server = ThreadingHTTPServer((host, 0), _handler(log_file))
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> KubeletServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="gpunode-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(log_file: LogFile) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "containerLogs":
                return self._answer(404, b"not found\n")
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            unsupported = [k for k in ("follow", "previous", "timestamps") if query.get(k) == "true"]
            if unsupported:
                return self._answer(400, f"not simulated: {', '.join(unsupported)}\n".encode())
            try:
                tail = int(query["tailLines"]) if "tailLines" in query else None
                limit = int(query["limitBytes"]) if "limitBytes" in query else None
            except ValueError:
                return self._answer(400, b"tailLines and limitBytes take whole numbers\n")
            path = log_file(*parts[1:])
            if path is None:
                return self._answer(404, f"container {parts[3]} of pod {parts[1]}/{parts[2]} has no log\n".encode())
            text = current_run(path.read_bytes()) if path.exists() else b""
            return self._answer(200, select(text, tail, limit))

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
            log.debug("kubelet API: " + format, *args)

    return Handler

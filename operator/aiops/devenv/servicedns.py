"""Cluster DNS for the simulated node: `<svc>.<ns>.svc[.cluster.local]:<port>` reaches a ready pod.

A real cluster answers such names from CoreDNS with a ClusterIP that kube-proxy forwards to a
ready endpoint. Here there is no DNS server, no kube-proxy, and the ClusterIPs (10.96/16) lead
nowhere; but the real EndpointSlice controller does list the ready pods' loopback IPs
(127.100.x.y) and target ports. (Endpoints objects stay empty: their validation refuses loopback
addresses, "may not be in the loopback range"; EndpointSlices, which kube-proxy and CoreDNS read
anyway, accept them.) So resolution happens inside the client process instead:
`socket.getaddrinfo` (and `gethostbyname`) and gRPC's channel constructors (gRPC resolves names in
C, past Python's socket module) are wrapped so that a service name, or a ClusterIP, becomes a
ready endpoint's IP, and the service port becomes that endpoint's target port. Any other name
goes to the real resolver untouched.

Where the table of services comes from:
- processes the node launches: a JSON file the node agent rewrites whenever Services or
  EndpointSlices change (`ServiceDnsPublisher`, in servicedns_table.py with the table's making);
  the pod's env points `sitecustomize` at it, so the project's own programs (worker, Milvus
  client, anything in Python) run unchanged and hold no credentials for the API;
- a test, or the operator run in dev mode: `install(api)` asks the API (cached for a second).

Names understood, as a pod's resolv.conf search path would expand them: `svc.ns.svc.cluster.local`,
`svc.ns.svc`, `svc.ns`, `svc` (in the pod's own namespace, or `install(namespace=...)`'s), and
`<hostname>.<svc>.<ns>.svc...` for a StatefulSet pod behind a headless Service; `ExternalName`
services resolve to their external name.

Limits: Python processes only (a C++ or Go client in a pod resolves with libc and does not see
these names); a connection is made to one endpoint chosen at resolution, so a long-lived gRPC
channel keeps its pod as kube-proxy's conntrack would, and must be re-created after that pod is
replaced; no UDP DNS, no SRV records; a service without ready endpoints fails to resolve
(EAI_NONAME) rather than timing out on an unreachable ClusterIP.

This module is loaded at the start of every Python process the node launches: it imports only
the standard library at module level.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import ipaddress
import json
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

FILE_ENV = "AIOPS_SERVICE_DNS_FILE"  # the table's path, in a launched process's environment
NAMESPACE_ENV = "AIOPS_POD_NAMESPACE"  # the namespace short names are searched in
CLUSTER_DOMAIN = "cluster.local"
SITECUSTOMIZE_DIR = Path(__file__).resolve().parent / "sitecustomize"

# {"services": {"ns/name": {"clusterIP": str, "externalName": str,
#                           "endpoints": [{"ip": str, "hostname": str, "ports": {"svcport": target}}]}}}
Table = dict


# ---- resolving with the table (pure) -------------------------------------------------------------

def split_service_name(host: str, namespace: str | None) -> tuple[str, str, str] | None:
    """(namespace, service, pod hostname or "") for a name that may be a service, else None."""
    name = host.rstrip(".").lower()
    for suffix in (f".svc.{CLUSTER_DOMAIN}", ".svc"):
        if name.endswith(suffix):
            labels = name[: -len(suffix)].split(".")
            if len(labels) == 2:
                return labels[1], labels[0], ""
            if len(labels) == 3:
                return labels[2], labels[1], labels[0]
            return None
    labels = name.split(".")
    if len(labels) == 1 and namespace and name != "localhost":
        return namespace, labels[0], ""
    if len(labels) == 2:
        return labels[1], labels[0], ""
    return None


class ServiceUnavailable(socket.gaierror):
    """A known service with no ready endpoint (what a client sees instead of a hanging connect)."""


def resolve(table: Table, host: str, port, namespace: str | None = None,
            choose: Callable[[list], dict] = random.choice) -> tuple[str, object] | None:
    """(endpoint IP, target port) for a service name or ClusterIP in `table`; None when `host`
    is no service there. `port` (int, digit string or None) maps through the chosen endpoint's
    ports; other ports pass unchanged. ExternalName services give (external name, port)."""
    services = table.get("services", {})
    entry, hostname = None, ""
    if _is_ip(host):
        entry = next((s for s in services.values() if s.get("clusterIP") == host), None)
    else:
        parts = split_service_name(host, namespace)
        if parts:
            ns, name, hostname = parts
            entry = services.get(f"{ns}/{name}")
    if entry is None:
        return None
    if entry.get("externalName"):
        return entry["externalName"], port
    candidates = [e for e in entry["endpoints"] if not hostname or e["hostname"] == hostname]
    if not candidates:
        raise ServiceUnavailable(socket.EAI_NONAME, f"{host}: service has no ready endpoints")
    endpoint = choose(candidates)
    key = str(port) if port is not None else None
    if key is not None and key in endpoint["ports"]:
        mapped = endpoint["ports"][key]
        port = mapped if isinstance(port, int) else str(mapped)
    return endpoint["ip"], port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def rewrite_grpc_target(target: str, lookup: Callable[[str, object], tuple[str, object] | None]) -> str:
    """`host:port`, `dns:host:port` or `dns:///host:port` with a service host -> `ip:port`."""
    rest = target
    for prefix in ("dns:///", "dns:"):
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
            break
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or host.startswith("["):
        return target
    found = lookup(host, int(port))
    return f"{found[0]}:{found[1]}" if found else target


# ---- where the table comes from -----------------------------------------------------------------

class FileResolver:
    """The table in a JSON file another process keeps current; re-read when it changes."""

    def __init__(self, path: str | Path, namespace: str | None = None):
        self.path, self.namespace = Path(path), namespace
        self._stamp: tuple[int, int] | None = None
        self._table: Table = {}

    def table(self) -> Table:
        try:
            st = self.path.stat()
        except OSError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._table = json.loads(self.path.read_text())
                self._stamp = stamp
            except (OSError, ValueError):  # replaced while reading: the next call reads it again
                pass
        return self._table


class ApiResolver:
    """The table from the API (Services and EndpointSlices of all namespaces), at most `ttl` old."""

    def __init__(self, api, namespace: str | None = None, ttl: float = 1.0):
        from kubernetes import client

        # Imported here: a launched process loads this file alone, without the aiops package.
        from aiops.devenv.servicedns_table import build_table, endpoint_slice_lister

        self.core = client.CoreV1Api(api)
        self.slices = endpoint_slice_lister(api)
        self._build_table = build_table
        self.namespace, self.ttl = namespace, ttl
        self._at, self._table = 0.0, {}
        self._lock = threading.Lock()

    def table(self) -> Table:
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                with _passthrough():  # the API client's own connection must resolve normally
                    self._table = self._build_table(self.core.list_service_for_all_namespaces().items,
                                                    self.slices()["items"])
                self._at = time.monotonic()
            return self._table


# ---- the patches ---------------------------------------------------------------------------------

_state = threading.local()
_originals: dict[str, Callable] = {}
_resolver = None


class _passthrough:
    def __enter__(self):
        _state.busy = getattr(_state, "busy", 0) + 1

    def __exit__(self, *exc):
        _state.busy -= 1


def lookup(host, port) -> tuple[str, object] | None:
    """What the installed resolver makes of (host, port); None: not a service, resolve normally."""
    if _resolver is None or getattr(_state, "busy", 0) or not host:
        return None
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host.startswith("127.") or host in ("localhost", "0.0.0.0", "::1", "::"):
        return None
    if "." not in host.rstrip(".") and not _resolver.namespace:
        return None
    with _passthrough():
        return resolve(_resolver.table(), host, port, _resolver.namespace)


def _getaddrinfo(host, port, *args, **kwargs):
    found = lookup(host, port)
    if found:
        host, port = found
    return _originals["getaddrinfo"](host, port, *args, **kwargs)


def _gethostbyname(host):
    found = lookup(host, None)
    return _originals["gethostbyname"](found[0] if found else host)


def _patch_grpc(module) -> None:
    """Wraps a grpc (or grpc.aio) module's channel constructors to rewrite service targets."""
    for name in ("insecure_channel", "secure_channel"):
        original = getattr(module, name, None)
        if original is None or getattr(original, "_aiops_dns", False):
            continue

        def channel(target, *args, _original=original, _secure=(name == "secure_channel"), **kwargs):
            rewritten = rewrite_grpc_target(target, lookup)
            if _secure and rewritten != target:  # keep TLS checking the name, not the pod IP
                host = target.rsplit(":", 1)[0].removeprefix("dns:///").removeprefix("dns:")
                options = list(kwargs.get("options") or (args[1] if len(args) > 1 else None) or [])
                options.append(("grpc.ssl_target_name_override", host))
                if len(args) > 1:
                    args = (args[0], options, *args[2:])
                else:
                    kwargs["options"] = options
            return _original(rewritten, *args, **kwargs)

        channel._aiops_dns = True
        setattr(module, name, channel)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a callback on a module right after it is first imported (grpc is imported late)."""

    def __init__(self, callbacks: dict[str, Callable]):
        self.callbacks = callbacks

    def find_spec(self, fullname, path, target=None):
        callback = self.callbacks.get(fullname)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _CallbackLoader(spec.loader, callback)
                return spec
        return None


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, loader, callback):
        self.loader, self.callback = loader, callback

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self.loader
        self.loader.exec_module(module)
        self.callback(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.loader, name)


def _install(resolver) -> None:
    global _resolver
    _resolver = resolver
    if "getaddrinfo" not in _originals:
        _originals["getaddrinfo"], _originals["gethostbyname"] = socket.getaddrinfo, socket.gethostbyname
        socket.getaddrinfo, socket.gethostbyname = _getaddrinfo, _gethostbyname
    pending = {}
    for name in ("grpc", "grpc.aio"):
        if name in sys.modules:
            _patch_grpc(sys.modules[name])
        else:
            pending[name] = _patch_grpc
    if pending and not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(pending))


def install(api, namespace: str | None = None, ttl: float = 1.0) -> None:
    """Makes this process resolve service names through the API (tests, `make dev`'s operator).
    `namespace`: where single-label names are looked up (None: only qualified names)."""
    _install(ApiResolver(api, namespace, ttl))


def install_from_env() -> bool:
    """What `sitecustomize` calls in processes the node launches; False when not in such a pod."""
    path = os.environ.get(FILE_ENV)
    if not path:
        return False
    _install(FileResolver(path, os.environ.get(NAMESPACE_ENV) or None))
    return True


def uninstall() -> None:
    global _resolver
    _resolver = None
    if _originals:
        socket.getaddrinfo, socket.gethostbyname = _originals.pop("getaddrinfo"), _originals.pop("gethostbyname")


def pod_env(table_file: Path, namespace: str, pythonpath: str = "") -> dict[str, str]:
    """Environment for a launched process: our `sitecustomize` first on PYTHONPATH, the table
    and the pod's namespace."""
    path = os.pathsep.join(filter(None, [str(SITECUSTOMIZE_DIR), pythonpath]))
    return {"PYTHONPATH": path, FILE_ENV: str(table_file), NAMESPACE_ENV: namespace}


"""Keeps dnsmasq's hosts directory in step with the cluster's Services and Endpoints: the name half
of the real node's cluster DNS (clusterdns.py). Runs in its own container beside dnsmasq, with
only the Python standard library, and the pod's ServiceAccount.

Names written, as Kubernetes' DNS specification asks for A records:
- `<service>.<namespace>.svc.<domain>`: the ClusterIP; for a headless Service, the address of
  every ready endpoint;
- `<hostname>.<service>.<namespace>.svc.<domain>`: each ready endpoint that has a hostname (the
  pods of a StatefulSet).
ExternalName Services (CNAMEs), SRV and PTR records are not served: dnsmasq's hosts files hold
addresses only.

The hosts file is written under a dot name and renamed: dnsmasq re-reads the directory on every
change (inotify), and would otherwise read half a file.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
import threading
import time
from pathlib import Path

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def records(services: dict, endpoints: dict, domain: str) -> list[tuple[str, str]]:
    """(address, name) pairs for the given Service and Endpoints objects, keyed by (ns, name)."""
    out = []
    for (ns, name), svc in sorted(services.items()):
        spec = svc.get("spec", {})
        fqdn = f"{name}.{ns}.svc.{domain}"
        if spec.get("type") == "ExternalName":
            continue
        cluster_ip = spec.get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            out.append((cluster_ip, fqdn))
            continue
        for subset in endpoints.get((ns, name), {}).get("subsets") or []:
            for address in subset.get("addresses") or []:
                out.append((address["ip"], fqdn))
                if address.get("hostname"):
                    out.append((address["ip"], f"{address['hostname']}.{fqdn}"))
    return out


def render(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"{ip} {name}\n" for ip, name in pairs)


def write_atomically(directory: Path, text: str) -> None:
    tmp = directory / ".cluster.hosts"
    tmp.write_text(text)
    tmp.rename(directory / "cluster.hosts")


class ApiServer:
    """GETs and watches against the API server with the pod's ServiceAccount token."""

    def __init__(self):
        self.host = os.environ["KUBERNETES_SERVICE_HOST"]
        self.port = int(os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
        self.context = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))

    def _connection(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)

    def _headers(self) -> dict:
        return {"Authorization": "Bearer " + (SA_DIR / "token").read_text().strip(), "Accept": "application/json"}

    def get(self, path: str) -> dict:
        conn = self._connection(30)
        try:
            conn.request("GET", path, headers=self._headers())
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise OSError(f"GET {path}: {resp.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def watch(self, path: str, resource_version: str, seconds: int = 300):
        """Yields watch events until the server ends the watch."""
        conn = self._connection(seconds + 30)
        try:
            conn.request("GET", f"{path}?watch=1&resourceVersion={resource_version}"
                                f"&timeoutSeconds={seconds}&allowWatchBookmarks=true", headers=self._headers())
            resp = conn.getresponse()
            if resp.status != 200:
                raise OSError(f"watch {path}: {resp.status} {resp.read()[:200]!r}")
            while line := resp.readline():
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


class Mirror(threading.Thread):
    """A list-then-watch copy of one kind, keyed by (namespace, name); calls `changed` on change."""

    def __init__(self, api: ApiServer, path: str, changed):
        super().__init__(daemon=True, name=path)
        self.api, self.path, self.changed = api, path, changed
        self.items: dict = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()

    def run(self) -> None:
        while True:
            try:
                listed = self.api.get(self.path)
                with self.lock:
                    self.items = {self._key(o): o for o in listed.get("items", [])}
                self.synced.set()
                self.changed()
                version = listed["metadata"]["resourceVersion"]
                while True:
                    for event in self.api.watch(self.path, version):
                        obj = event.get("object", {})
                        if event["type"] == "ERROR":
                            raise OSError(f"watch {self.path}: {obj.get('message')}")
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        if event["type"] == "BOOKMARK":
                            continue
                        with self.lock:
                            if event["type"] == "DELETED":
                                self.items.pop(self._key(obj), None)
                            else:
                                self.items[self._key(obj)] = obj
                        self.changed()
            except (OSError, ValueError, KeyError, http.client.HTTPException) as e:
                print(f"cluster-dns-sync: {e}; listing again in 1s", file=sys.stderr, flush=True)
                time.sleep(1)

    @staticmethod
    def _key(obj: dict) -> tuple[str, str]:
        return obj["metadata"]["namespace"], obj["metadata"]["name"]

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.items)


def main() -> int:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "/etc/cluster-dns")
    domain = os.environ.get("CLUSTER_DOMAIN", "cluster.local")
    api = ApiServer()
    wake = threading.Event()
    services = Mirror(api, "/api/v1/services", wake.set)
    endpoints = Mirror(api, "/api/v1/endpoints", wake.set)
    services.start()
    endpoints.start()
    services.synced.wait()
    endpoints.synced.wait()  # never a file with the Services but not yet their endpoints
    written = None
    while True:
        wake.wait()
        time.sleep(0.05)  # one write for a burst of events
        wake.clear()
        text = render(records(services.snapshot(), endpoints.snapshot(), domain))
        if text != written:
            write_atomically(directory, text)
            written = text


if __name__ == "__main__":
    sys.exit(main())

"""The table that the cluster DNS emulation (servicedns.py) resolves names with, made from the
cluster's Services and EndpointSlices: how the table is built, how the EndpointSlices are listed
in whichever version the API server serves, and the node agent's publisher, which keeps the
table's file current for the processes the node launches.

This is the side that talks to the API, so it lives apart from servicedns.py, which every launched
Python process loads at start-up and which must import only the standard library.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from kubernetes import client

from aiops.devenv.kubemirror import Mirror
from aiops.devenv.servicedns import Table

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def build_table(services: list, slices: list[dict]) -> Table:
    """The DNS view of Services (kubernetes client objects) and their EndpointSlices (dicts, as
    v1 and v1beta1 share these fields): ready IPv4 endpoints only, each with its service port ->
    target port map (slice ports carry the service port's name)."""
    by_service: dict[str, list[dict]] = defaultdict(list)
    for sl in slices:
        meta = sl["metadata"]
        name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if name:
            by_service[f"{meta.get('namespace')}/{name}"].append(sl)
    table: dict[str, dict] = {}
    for svc in services:
        key = f"{svc.metadata.namespace}/{svc.metadata.name}"
        service_ports = {p.name or "": p.port for p in svc.spec.ports or []}
        addresses = []
        for sl in sorted(by_service.get(key, []), key=lambda s: s["metadata"]["name"]):
            if sl.get("addressType", "IPv4") != "IPv4":
                continue
            targets = {p.get("name") or "": p.get("port") for p in sl.get("ports") or []}
            ports = {str(port): targets[name] for name, port in service_ports.items()
                     if targets.get(name) is not None}
            for ep in sl.get("endpoints") or []:
                ready = (ep.get("conditions") or {}).get("ready")
                if ready is False or not ep.get("addresses"):  # unset means ready
                    continue
                addresses.append({"ip": ep["addresses"][0], "hostname": ep.get("hostname") or "",
                                  "ports": ports})
        table[key] = {"clusterIP": svc.spec.cluster_ip or "", "externalName": svc.spec.external_name or "",
                      "endpoints": addresses}
    return {"services": table}


def endpoint_slice_lister(api) -> Callable:
    """`list(**kwargs)` of all EndpointSlices as dicts, in the version the server serves
    (discovery.k8s.io/v1 from Kubernetes 1.21, v1beta1 on 1.20); usable with `watch.Watch`."""
    custom = client.CustomObjectsApi(api)
    for version in ("v1", "v1beta1"):
        lister = functools.partial(custom.list_cluster_custom_object, "discovery.k8s.io", version,
                                   "endpointslices")
        try:
            lister(limit=1)
            return lister
        except client.ApiException as e:
            if e.status != 404:
                raise
    raise RuntimeError("the API server serves no discovery.k8s.io EndpointSlices")


class ServiceDnsPublisher:
    """Keeps `path` current with the cluster's Services and EndpointSlices (in the node agent)."""

    def __init__(self, api, path: Path, stop: threading.Event):
        core = client.CoreV1Api(api)
        self.path = Path(path)
        self._written = ""
        self._lock = threading.Lock()
        self.services = Mirror(core.list_service_for_all_namespaces, self.publish, stop, "Services")
        self.endpoints = Mirror(endpoint_slice_lister(api), self.publish, stop, "EndpointSlices")

    def publish(self) -> None:
        if not (self.services.synced.is_set() and self.endpoints.synced.is_set()):
            return
        with self._lock:
            text = json.dumps(build_table(self.services.items(), self.endpoints.items()), sort_keys=True)
            if text == self._written:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(text)
            os.replace(partial, self.path)  # readers see the old table or the new, never half
            self._written = text

"""The Kubernetes client configuration the operator's own code uses (Kopf has its own for its
watches): the shared aiohttp session (aiops.kube.session) takes its host and credentials, and
leader election (aiops.kube.lease) makes its calls with the client it returns.

Configured when first needed, not at import: the kubernetes package reads $KUBECONFIG when it is
imported, which is too early for tests and tools that point it at a cluster they just started.
"""

from __future__ import annotations

import os
import threading

from kubernetes import client, config

_lock = threading.Lock()
_clients: dict[str, client.ApiClient] = {}


def api_client() -> client.ApiClient:
    """In a pod: the ServiceAccount. Elsewhere: $KUBECONFIG (or ~/.kube/config)."""
    key = "in-cluster" if os.environ.get("KUBERNETES_SERVICE_HOST") else os.environ.get("KUBECONFIG", "")
    with _lock:
        if key not in _clients:
            cfg = client.Configuration()
            if key == "in-cluster":
                config.load_incluster_config(client_configuration=cfg)
            else:
                config.load_kube_config(config_file=key or None, client_configuration=cfg)
            _clients[key] = client.ApiClient(cfg)
        return _clients[key]

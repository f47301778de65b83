"""The pods bound to one node, as a kubelet learns of them: list, then watch from that version,
re-listing whenever the watch breaks or its version expires."""

from __future__ import annotations

import logging
import queue
import threading

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

WATCH_SECONDS = 2  # a watch request's lifetime: bounds how long a stop waits for the watch thread


def watch_node_pods(api_client: client.ApiClient, node_name: str, events: queue.Queue[tuple[str, object]],
                    stop: threading.Event) -> None:
    """Puts ("SYNC", pod) for every listed pod and (event type, pod) for every change into `events`
    until `stop` is set."""
    selector = f"spec.nodeName={node_name}"
    core = client.CoreV1Api(api_client)
    while not stop.is_set():
        try:
            listed = core.list_pod_for_all_namespaces(field_selector=selector)
            for pod in listed.items:
                events.put(("SYNC", pod))
            version = listed.metadata.resource_version
            while not stop.is_set():
                stream = watch.Watch().stream(core.list_pod_for_all_namespaces,
                                              field_selector=selector, resource_version=version,
                                              timeout_seconds=WATCH_SECONDS)
                for event in stream:
                    events.put((event["type"], event["object"]))
                    version = event["object"].metadata.resource_version
        except ApiException as e:
            if e.status != 410:  # 410: our resourceVersion expired; re-list
                log.warning("pod watch on %s failed: %s", node_name, e.reason)
                stop.wait(1)
        except Exception as e:  # noqa: BLE001 - a dropped watch is re-listed below
            log.warning("pod watch on %s failed: %s", node_name, e)
            stop.wait(1)

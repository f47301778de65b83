"""A local copy of all objects of one kind, kept current by list + watch (a small informer).

The node agent's provisioner and cluster DNS need "every PVC/PV/Service/Endpoints now" and a call
whenever that changes; polling the API for it would cost requests every half second for nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kubernetes import watch
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

WATCH_SECONDS = 2  # a watch request's lifetime: bounds how long a stop waits for the thread


def object_key(obj) -> str:
    """`namespace/name` (or `name`) of a typed object or of a raw dict (CustomObjectsApi)."""
    if isinstance(obj, dict):
        meta = obj["metadata"]
        namespace, name = meta.get("namespace"), meta["name"]
    else:
        namespace, name = obj.metadata.namespace, obj.metadata.name
    return f"{namespace}/{name}" if namespace else name


def _version(obj) -> str:
    return obj["metadata"]["resourceVersion"] if isinstance(obj, dict) else obj.metadata.resource_version


def _items(listed) -> list:
    return listed["items"] if isinstance(listed, dict) else listed.items


class Mirror:
    """Objects returned by `list_fn` (e.g. `CoreV1Api.list_persistent_volume`, or a partial of
    `CustomObjectsApi.list_cluster_custom_object`, whose objects are dicts), by `namespace/name`;
    `on_change()` runs in the mirror's thread after the initial list and after every change.
    `synced` is set once the first list arrived."""

    def __init__(self, list_fn: Callable, on_change: Callable[[], None], stop: threading.Event,
                 what: str):
        self.list_fn, self.on_change, self.stop, self.what = list_fn, on_change, stop, what
        self.synced = threading.Event()
        self._objects: dict[str, object] = {}
        self._lock = threading.Lock()

    def items(self) -> list:
        with self._lock:
            return list(self._objects.values())

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                listed = self.list_fn()
                with self._lock:
                    self._objects = {object_key(o): o for o in _items(listed)}
                self.synced.set()
                self._changed()
                version = _version(listed)
                while not self.stop.is_set():
                    for event in watch.Watch().stream(self.list_fn, resource_version=version,
                                                      timeout_seconds=WATCH_SECONDS):
                        obj = event["object"]
                        version = _version(obj)
                        with self._lock:
                            if event["type"] == "DELETED":
                                self._objects.pop(object_key(obj), None)
                            else:
                                self._objects[object_key(obj)] = obj
                        self._changed()
            except ApiException as e:
                if e.status != 410:  # 410: the resourceVersion expired; list again
                    log.warning("watching %s failed: %s", self.what, e.reason)
                    self.stop.wait(1)
            except Exception as e:  # noqa: BLE001 - the API server may be restarting; list again
                log.warning("watching %s failed: %s", self.what, e)
                self.stop.wait(1)

    def _changed(self) -> None:
        try:
            self.on_change()
        except Exception:
            log.exception("reacting to a change of %s failed", self.what)

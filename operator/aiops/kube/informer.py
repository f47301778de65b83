"""List, then watch, one built-in kind and hand each change to a few callbacks: the controllers'
view of their child objects (pods, Jobs, Deployments, ...), as client-go's informers give Go
controllers.

Why not Kopf's watches: Kopf turns every event into a Body, matches it against every handler of
its resource and builds each handler's keyword arguments. For the ~18 pod, Job and Deployment
events a new ModelDeployment causes, that was about 40% of the operator's CPU in a py-spy profile
of bench_reconcile. Here each event is decoded once and the plain dict goes to the callbacks.

Like client-go's reflector: a paged LIST, then a WATCH from the list's resourceVersion (with
bookmarks); a watch the server ends is resumed from the last resourceVersion seen; 410 Gone (that
version is too old) lists again, and the new list replaces what is known: objects it lacks are
announced DELETED. Kopf sends nothing for those, which is why the controllers used to check their
caches against a LIST every few minutes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
import orjson
from kubernetes.client.rest import ApiException

from aiops.kube.session import ApiSession

log = logging.getLogger(__name__)

Key = tuple[str, str]
Callback = Callable[[str, dict], None]  # (ADDED | MODIFIED | DELETED, the object)
WATCH_SECONDS = 290  # the server ends each watch after this; resumed from the last resourceVersion
PAGE = 500
BACKOFF = (0.5, 30.0)  # after an error: first wait, longest wait


class Expired(Exception):
    """The resourceVersion to watch from is gone from the API server's history: list again."""


def _key(obj: dict) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _known(obj: dict) -> dict:
    """What is kept of each object: enough to announce its deletion after a re-list."""
    meta = obj["metadata"]
    return {"kind": obj.get("kind"), "apiVersion": obj.get("apiVersion"),
            "metadata": {k: meta.get(k) for k in ("namespace", "name", "uid", "resourceVersion", "labels")}}


class Informer:
    """One kind, cluster-wide or in one namespace. `selector`: a label selector the API server
    applies."""

    def __init__(self, api: ApiSession, prefix: str, plural: str, namespace: str = "", selector: str = ""):
        self.api = api
        self.path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
        self.selector = selector
        self.known: dict[Key, dict] = {}
        self.synced = asyncio.Event()  # set once the first list has been handed out
        self.resource_version = ""
        self._callbacks: list[Callback] = []
        self._task: asyncio.Task | None = None

    def subscribe(self, callback: Callback) -> None:
        self._callbacks.append(callback)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"informer {self.path}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _params(self, **extra: str) -> dict[str, str]:
        return {"labelSelector": self.selector, **extra} if self.selector else dict(extra)

    async def _run(self) -> None:
        wait = BACKOFF[0]
        while True:
            try:
                if not self.resource_version:
                    await self.relist()
                await self._watch()
                wait = BACKOFF[0]
            except Expired:
                log.info("%s: resourceVersion %s expired; listing again", self.path, self.resource_version)
                self.resource_version = ""
            except (TimeoutError, ApiException, aiohttp.ClientError, ValueError, KeyError) as e:
                log.warning("%s: %s: %s; again in %.1f s", self.path, type(e).__name__, str(e).strip(), wait)
                if isinstance(e, ApiException) and e.status == 410:
                    self.resource_version = ""
                await asyncio.sleep(wait)
                wait = min(wait * 2, BACKOFF[1])

    async def relist(self) -> None:
        """A full LIST, handed out page by page (a page of full objects in memory at a time, not
        every pod of the cluster at once), then what it lacks is announced deleted."""
        listed: set[Key] = set()
        params = self._params(limit=str(PAGE))
        timeout = aiohttp.ClientTimeout(total=60)
        while True:
            async with await self.api.get(self.path, params, timeout) as response:
                page = orjson.loads(await response.read())
            kind = (page.get("kind") or "").removesuffix("List")
            for obj in page.get("items") or []:  # a list's items carry no kind of their own
                obj.setdefault("kind", kind)
                obj.setdefault("apiVersion", page.get("apiVersion"))
                self._merge(obj, listed)
            more = (page.get("metadata") or {}).get("continue")
            if not more:
                break
            params = self._params(limit=str(PAGE), **{"continue": more})
        self._forget_unlisted(listed, page["metadata"]["resourceVersion"])

    def replace(self, items: list[dict], resource_version: str) -> None:
        """Hands out the difference between a fresh list and what was known."""
        listed: set[Key] = set()
        for obj in items:
            self._merge(obj, listed)
        self._forget_unlisted(listed, resource_version)

    def _merge(self, obj: dict, listed: set[Key]) -> None:
        key = _key(obj)
        listed.add(key)
        known = self.known.get(key)
        if known is not None and known["metadata"]["uid"] != obj["metadata"].get("uid"):
            self._handle("DELETED", known)  # deleted and made again while we were away
            known = None
        if known is None:
            self._handle("ADDED", obj)
        elif known["metadata"]["resourceVersion"] != obj["metadata"].get("resourceVersion"):
            self._handle("MODIFIED", obj)

    def _forget_unlisted(self, listed: set[Key], resource_version: str) -> None:
        for key in [k for k in self.known if k not in listed]:
            self._handle("DELETED", self.known[key])
        self.resource_version = resource_version
        self.synced.set()

    async def _watch(self) -> None:
        params = self._params(watch="1", allowWatchBookmarks="true", resourceVersion=self.resource_version,
                              timeoutSeconds=str(WATCH_SECONDS))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=WATCH_SECONDS + 30)
        try:
            response = await self.api.get(self.path, params, timeout)
        except ApiException as e:
            if e.status == 410:
                raise Expired from None
            raise
        async with response:
            pending = b""
            async for chunk in response.content.iter_any():
                # Lines can exceed aiohttp's readline limit (a 128 KiB annotation): split ourselves.
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if line.strip():
                        self._event(orjson.loads(line))

    def _event(self, event: dict) -> None:
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired
            raise ApiException(status=obj.get("code") or 500, reason=obj.get("message") or str(obj))
        self.resource_version = obj["metadata"]["resourceVersion"]
        if kind != "BOOKMARK":
            self._handle(kind, obj)

    def _handle(self, kind: str, obj: dict) -> None:
        key = _key(obj)
        if kind == "DELETED":
            self.known.pop(key, None)
        else:
            self.known[key] = _known(obj)
        for callback in self._callbacks:
            try:
                callback(kind, obj)
            except Exception:  # noqa: BLE001 - one callback's bug must not stop the watch for all
                log.exception("%s: a callback failed on %s %s/%s", self.path, kind, *key)

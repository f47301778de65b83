"""The operator's one asyncio HTTP session to the API server, configured and authenticated exactly
like `aiops.kube.config.api_client` (same kubeconfig or ServiceAccount, same certificates and
token). The informers (aiops.kube.informer) stream their watches through it and every controller's
client (aiops.kube.client) makes its reads and writes through it, all on the operator's event loop
and over one pool of keep-alive connections."""

from __future__ import annotations

import ssl
import time
from typing import Any

import aiohttp
import orjson
from kubernetes import client
from kubernetes.client.rest import ApiException

from aiops.kube.fence import FENCE

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=30)
# How long a credential is used before the client's refresh hook is asked again. The hook of a
# kubeconfig re-applies the whole configuration (its host setter scans the environment for
# proxies): per request it was a tenth of the operator's CPU under load. A ServiceAccount token
# is re-read by the in-cluster loader once a minute at most anyway.
CREDENTIALS_RECHECK = 10.0


class ApiSession:
    """The connection pool has no limit of its own: watches hold a connection each for as long as
    they run, and each client bounds the requests it has in flight (KubeClient's concurrency)."""

    def __init__(self, configuration: client.Configuration):
        self.config = configuration
        self.host = configuration.host.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._authorization: str | None = None
        self._authorization_until = 0.0

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.host.startswith("https"):
            return None
        cfg = self.config
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if not cfg.verify_ssl:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        return context

    def headers(self) -> dict[str, str]:
        """Asked per request: a ServiceAccount token is re-read when it rotates (the client's
        refresh hook runs inside get_api_key_with_prefix, asked every CREDENTIALS_RECHECK s)."""
        now = time.monotonic()
        if now >= self._authorization_until:
            self._authorization, self._authorization_until = self._credentials(), now + CREDENTIALS_RECHECK
        return {"Accept": "application/json", **({"Authorization": self._authorization} if self._authorization else {})}

    def _credentials(self) -> str | None:
        token = self.config.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            return token
        if self.config.username:
            return aiohttp.BasicAuth(self.config.username, self.config.password or "").encode()
        return None

    @property
    def session(self) -> aiohttp.ClientSession:
        """Made on first use, inside the running event loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=0)
            self._session = aiohttp.ClientSession(connector=connector, proxy=self.config.proxy or None)
        return self._session

    async def get(self, path: str, params: dict[str, str], timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """A GET whose body the caller reads (and releases); an error status raises ApiException."""
        response = await self.session.get(self.host + path, params=params, headers=self.headers(), timeout=timeout)
        if response.status != 200:
            text = await response.text()
            response.release()
            raise ApiException(status=response.status, reason=response.reason, body=text[:300])
        return response

    async def request(self, method: str, path: str, body: Any = None, params: dict | None = None,
                      content_type: str = "application/json") -> bytes:
        """One call, JSON both ways; an error status raises the kubernetes client's ApiException,
        which the reconcilers already handle (status 404, 409, ...). A write past the leader's
        Lease raises LeaseExpired unsent (aiops.kube.fence)."""
        if method != "GET":
            FENCE.check(f"{method} {path}")
        headers = {**self.headers(), "Content-Type": content_type}
        data = None if body is None else orjson.dumps(body)
        async with self.session.request(method, self.host + path, params=params, data=data, headers=headers,
                                        timeout=REQUEST_TIMEOUT) as response:
            payload = await response.read()
            if not 200 <= response.status <= 299:
                raise ApiException(status=response.status, reason=response.reason,
                                   body=payload.decode("utf-8", "replace"))
            return payload

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

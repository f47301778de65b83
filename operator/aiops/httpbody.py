"""Bounded HTTP bodies from servers the operator does not control: a Triton or vLLM pod runs the
image the CR author picked, and a body read whole from it could take the operator's memory with
it. Every session that talks to such a pod makes its responses with `bounded_response(limit)`, so
any `read()`, `text()` or `json()` past the limit fails (ResponseTooLarge, an aiohttp ClientError:
callers already treat those as "the pod did not answer") instead of growing without end."""

from __future__ import annotations

import functools

import aiohttp

MAX_API_BYTES = 64 << 20  # Triton's JSON API: repository index, model config, inference outputs
MAX_METRICS_BYTES = 8 << 20  # a metrics page (vLLM with many models: a few hundred KB)


class ResponseTooLarge(aiohttp.ClientPayloadError):
    """A response body over the limit; the connection is closed, nothing more is read."""


@functools.cache
def bounded_response(limit: int) -> type[aiohttp.ClientResponse]:
    """An aiohttp response class whose body is read up to `limit` bytes at most."""

    class BoundedResponse(aiohttp.ClientResponse):
        async def read(self) -> bytes:
            if self._body is None:
                if (self.content_length or 0) > limit:
                    self.close()
                    raise ResponseTooLarge(f"{self.url}: a {self.content_length}-byte answer; at most {limit} "
                                           "are read")
                parts, size = [], 0
                try:
                    while chunk := await self.content.readany():
                        size += len(chunk)
                        if size > limit:
                            raise ResponseTooLarge(f"{self.url}: the answer passed {limit} bytes; "
                                                   "nothing more is read")
                        parts.append(chunk)
                except BaseException:
                    self.close()
                    raise
                self._body = b"".join(parts)
            return await super().read()

    BoundedResponse.__name__ = BoundedResponse.__qualname__ = f"BoundedResponse{limit}"
    return BoundedResponse

"""The TCP forwarder behind a standalone Milvus's listen host. Milvus 2.3 binds every interface, so a
server meant to listen on one address (a pod IP) runs on free ports and this forwards host:port to
them on loopback; see aiops.devenv.milvusserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class TcpForwarder:
    """host:port -> 127.0.0.1:target for each pair, in a thread of its own (an asyncio loop)."""

    def __init__(self, host: str, pairs: list[tuple[int, int]]):
        self.host, self.pairs = host, pairs
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"milvus-forward-{host}", daemon=True)

    def start(self) -> TcpForwarder:
        self._thread.start()
        self._ready.wait(10)
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            servers = [self._loop.run_until_complete(asyncio.start_server(
                lambda r, w, t=target: self._pipe_pair(r, w, t), self.host, listen, reuse_address=True))
                for listen, target in self.pairs]
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        for server in servers:
            server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    @staticmethod
    async def _pipe_pair(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

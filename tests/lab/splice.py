"""A stand-in relay circuit for punch tests: pairs two TCP clients by token and splices them.

Until the relay work (net/relay.py) lands, this is the "relayed connection" the hole punch
upgrades: each end connects, sends one line `TOKEN\\n`, and from then on the bytes of the two
clients with the same token are copied both ways, as a relay circuit does after CircuitOk.
The ends then run an ordinary chinwag Noise session through it (the relay sees ciphertext).

In-process: `async with Splice() as s: s.port`; in a lab namespace: `python splice.py HOST PORT`
(prints `ready` once listening).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from types import TracebackType

#: Bytes of a token line; a test helper, but bounded anyway.
MAX_TOKEN = 64


class Splice:
    """The splice server; pairs clients by token, copies bytes, counts them."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, delay_s: float = 0.0) -> None:
        """`delay_s`: one-way delay added to every byte (a relay path slower than the direct)."""
        self.host = host
        self.port = port
        self.delay_s = delay_s
        self.bytes = 0
        self._server: asyncio.Server | None = None
        self._waiting: dict[bytes, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Splice:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            token = (await reader.readline())[:MAX_TOKEN].strip()
        except (ConnectionError, ValueError):
            writer.close()
            return
        other = self._waiting.pop(token, None)
        if other is None:
            self._waiting[token] = (reader, writer)  # held until the partner comes
            return
        o_reader, o_writer = other
        for src, dst in ((reader, o_writer), (o_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        writer = loop.create_task(self._deliver(queue, dst))
        try:
            while data := await src.read(65536):
                self.bytes += len(data)
                queue.put_nowait((loop.time() + self.delay_s, data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait((loop.time() + self.delay_s, b""))
            await writer

    async def _deliver(
        self, queue: asyncio.Queue[tuple[float, bytes]], dst: asyncio.StreamWriter
    ) -> None:
        """Write each chunk once its delay has passed, in order; b"" ends the stream."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await queue.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())  # the injected latency itself
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                dst.write_eof()


def splice_socket(host: str, port: int, token: str) -> socket.socket:
    """Connect to a splice server, send the token; return the non-blocking socket."""
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(token.encode() + b"\n")
    sock.setblocking(False)
    return sock


async def _main(host: str, port: int) -> None:
    async with Splice(host, port):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(sys.argv[1], int(sys.argv[2])))

"""The JSON-lines API: one command per stdin line, one event per stdout line.

Documented in docs/api.md. Commands are decoded into tagged structs; a line
that is not JSON or not a known, well-formed command gets an `error` event and
the node keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Coroutine
from typing import Any, BinaryIO

import msgspec

from chinwag import events as ev
from chinwag.errors import ChinwagError
from chinwag.node import Node
from chinwag.ui.commands import (  # noqa: F401 - the API's command names, kept importable here
    COMMANDS,
    AcceptFileCmd,
    BlockCmd,
    CancelFileCmd,
    Command,
    DmCmd,
    FilesCmd,
    HistoryCmd,
    InfoCmd,
    JoinCmd,
    LeaveCmd,
    NickCmd,
    PeersCmd,
    Quit,
    RejectFileCmd,
    RoomsCmd,
    SearchCmd,
    Send,
    SendFileCmd,
    Session,
    UnblockCmd,
    VerifyCmd,
    WhoisCmd,
    execute,
    parse_json,
)
from chinwag.ui.stdio import LineTooLong, stdin_lines

log = logging.getLogger(__name__)

API_VERSION = 1


#: Sends accepted but not yet committed before we stop reading stdin (back-pressure).
MAX_IN_FLIGHT = 2_000

_encoder = msgspec.json.Encoder()


#: The JSON-lines API's name for the command layer's JSON parser.
parse_command = parse_json


class JsonLinesUI(Session):
    """Connects a Node to stdin/stdout as the JSON-lines API."""

    def __init__(self, node: Node, out: BinaryIO | None = None) -> None:
        super().__init__(node)
        self.out = out if out is not None else sys.stdout.buffer
        self._in_flight: deque[asyncio.Future[ev.NodeEvent]] = deque()
        self._buffer = bytearray()
        self._flush_scheduled = False
        self._background: set[asyncio.Future[None]] = set()
        node.subscribe(self.write_event)

    def write_event(self, event: ev.NodeEvent) -> None:
        """Queue one event line; all lines of one loop turn are written together."""
        self._buffer += _encoder.encode(event)
        self._buffer += b"\n"
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write queued event lines (blocking if the reader is slow: that is back-pressure)."""
        self._flush_scheduled = False
        data, self._buffer = bytes(self._buffer), bytearray()
        try:
            self.out.write(data)
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass

    async def run(self) -> None:
        """Process commands until quit or end of input; every accepted send is stored first."""
        try:
            await self._run()
        finally:
            # Quit only after everything accepted is committed and sent.
            for fut in self._in_flight:
                try:
                    await fut
                except Exception as exc:  # already reported as an error event
                    log.debug("send failed: %s", exc)
            if self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
            self.flush()

    async def _run(self) -> None:
        async for line in stdin_lines():
            if isinstance(line, LineTooLong):
                self.node.error("command line too long")
                continue
            if not line.strip():
                continue
            try:
                cmd = parse_command(line)
                if isinstance(cmd, Quit):
                    return
                await self.handle(cmd)
            except ChinwagError as exc:
                self.node.error(str(exc))
            except Exception as exc:  # a bug: report it, keep the node running
                log.exception("command failed")
                self.node.error(f"internal error: {type(exc).__name__}")

    async def handle(self, cmd: Command) -> None:
        """Run one command through the command layer; write its answer, if it has one."""
        answer = await execute(self.node, cmd, self)
        if cmd.answered and answer is not None and not isinstance(answer, ev.FileInfo):
            self.write_event(answer)

    async def sent(self, fut: asyncio.Future[ev.NodeEvent], to_room: bool) -> None:
        """Not awaited one by one: sends of one loop turn share one commit."""
        self._in_flight.append(fut)
        while self._in_flight and self._in_flight[0].done():
            done = self._in_flight.popleft()
            if not done.cancelled():
                done.exception()  # failures were reported as error events
        if len(self._in_flight) > MAX_IN_FLIGHT:
            oldest = self._in_flight.popleft()
            await asyncio.wait([oldest])
            if not oldest.cancelled():
                # Its failure was reported as an error event already: raising it here
                # would report it a second time (as this command's error).
                oldest.exception()
        if self.node.congested():
            await self.node.wait_drained()

    async def slow(self, coro: Coroutine[Any, Any, object]) -> None:
        """Hashing a big file takes a while: do not hold up the commands behind it."""
        self._spawn(coro)

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run a slow command in the background; its failure becomes an error event."""

        async def run() -> None:
            try:
                await coro
            except ChinwagError as exc:
                self.node.error(str(exc))
            except Exception as exc:  # a bug: report it, keep the node running
                log.exception("command failed")
                self.node.error(f"internal error: {type(exc).__name__}")

        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

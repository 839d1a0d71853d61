"""The JSON-lines API: one command per stdin line, one event per stdout line.

Documented in docs/api.md. Commands are decoded into tagged structs; a line
that is not JSON or not a known, well-formed command gets an `error` event and
the node keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import typing
from collections import deque
from collections.abc import Coroutine
from typing import Annotated, Any, BinaryIO

import msgspec

from chinwag import events as ev
from chinwag import limits
from chinwag.errors import ChinwagError
from chinwag.node import Node
from chinwag.ui.stdio import LineTooLong, stdin_lines

log = logging.getLogger(__name__)

API_VERSION = 1


class Send(msgspec.Struct, frozen=True, tag_field="cmd", tag="send"):
    text: str
    room: str | None = None


class PeersCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="peers"):
    pass


class NickCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="nick"):
    nick: str


class Quit(msgspec.Struct, frozen=True, tag_field="cmd", tag="quit"):
    pass


class HistoryCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="history"):
    room: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_HISTORY)] = 100
    before: str | None = None


class SearchCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="search"):
    text: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_HISTORY)] = 50


class InfoCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="info"):
    id: str


class JoinCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="join"):
    room: str
    passphrase: str | None = None


class LeaveCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="leave"):
    room: str


class RoomsCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="rooms"):
    pass


class DmCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="dm"):
    to: str
    text: str


class WhoisCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="whois"):
    who: str


class VerifyCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="verify"):
    who: str
    confirm: bool = False


class BlockCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="block"):
    who: str


class UnblockCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="unblock"):
    who: str


class SendFileCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="send_file"):
    to: str
    path: str


class AcceptFileCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="accept_file"):
    id: str
    dir: str | None = None


class RejectFileCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="reject_file"):
    id: str


class CancelFileCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="cancel_file"):
    id: str
    keep: bool = False


class FilesCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="files"):
    pass


Command = (
    Send
    | PeersCmd
    | NickCmd
    | Quit
    | HistoryCmd
    | SearchCmd
    | InfoCmd
    | JoinCmd
    | LeaveCmd
    | RoomsCmd
    | DmCmd
    | WhoisCmd
    | VerifyCmd
    | BlockCmd
    | UnblockCmd
    | SendFileCmd
    | AcceptFileCmd
    | RejectFileCmd
    | CancelFileCmd
    | FilesCmd
)
#: The command names, read off the command structs' tags (one place to add a command).
COMMANDS: frozenset[str] = frozenset(
    str(cmd.__struct_config__.tag) for cmd in typing.get_args(Command)
)
#: Sends accepted but not yet committed before we stop reading stdin (back-pressure).
MAX_IN_FLIGHT = 2_000

_decoder = msgspec.json.Decoder(Command)
_raw_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def parse_command(line: bytes) -> Command:
    """Decode one command line; raise ChinwagError with a readable message if invalid."""
    try:
        cmd: Command = _decoder.decode(line)
        return cmd
    except msgspec.ValidationError as exc:
        try:
            raw = _raw_decoder.decode(line)
        except msgspec.DecodeError:
            raw = None
        if not isinstance(raw, dict) or "cmd" not in raw:
            raise ChinwagError('a command is a JSON object with a "cmd" field') from None
        if not isinstance(raw["cmd"], str) or raw["cmd"] not in COMMANDS:
            raise ChinwagError(
                f"unknown command {str(raw['cmd'])[:40]!r}; known: {', '.join(sorted(COMMANDS))}"
            ) from None
        raise ChinwagError(f"malformed {raw['cmd']!r} command: {exc}") from None
    except msgspec.DecodeError:
        raise ChinwagError("invalid JSON") from None


class JsonLinesUI:
    """Connects a Node to stdin/stdout as the JSON-lines API."""

    def __init__(self, node: Node, out: BinaryIO | None = None) -> None:
        self.node = node
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
        if isinstance(cmd, Send | DmCmd):
            # Not awaited one by one: sends of one loop turn share one commit.
            if isinstance(cmd, Send):
                self._in_flight.append(self.node.post(cmd.text, cmd.room))
            else:
                self._in_flight.append(self.node.dm(cmd.to, cmd.text))
            while self._in_flight and self._in_flight[0].done():
                done = self._in_flight.popleft()
                if not done.cancelled():
                    done.exception()  # failures were reported as error events
            if len(self._in_flight) > MAX_IN_FLIGHT:
                await self._in_flight.popleft()
            if self.node.congested():
                await self.node.wait_drained()
        elif isinstance(cmd, HistoryCmd):
            self.write_event(self.node.history(cmd.room, cmd.limit, cmd.before))
        elif isinstance(cmd, SearchCmd):
            self.write_event(self.node.search(cmd.text, cmd.limit))
        elif isinstance(cmd, InfoCmd):
            self.write_event(self.node.info(cmd.id))
        elif isinstance(cmd, JoinCmd):
            await self.node.join(cmd.room, cmd.passphrase)
        elif isinstance(cmd, LeaveCmd):
            self.node.leave(cmd.room)
        elif isinstance(cmd, RoomsCmd):
            self.write_event(self.node.rooms())
        elif isinstance(cmd, WhoisCmd):
            self.write_event(self.node.whois(cmd.who))
        elif isinstance(cmd, VerifyCmd):
            self.write_event(self.node.verify(cmd.who, cmd.confirm))
        elif isinstance(cmd, BlockCmd | UnblockCmd):
            self.write_event(self.node.block(cmd.who, isinstance(cmd, BlockCmd)))
        elif isinstance(cmd, PeersCmd):
            self.write_event(self.node.peers())
        elif isinstance(cmd, NickCmd):
            self.node.set_nick(cmd.nick)
        elif isinstance(cmd, SendFileCmd):
            # Hashing a big file takes a while: do not hold up the commands behind it.
            self._spawn(self.node.send_file(cmd.to, cmd.path))
        elif isinstance(cmd, AcceptFileCmd):
            self.node.accept_file(cmd.id, cmd.dir)
        elif isinstance(cmd, RejectFileCmd):
            self.node.reject_file(cmd.id)
        elif isinstance(cmd, CancelFileCmd):
            self.node.cancel_file(cmd.id, cmd.keep)
        elif isinstance(cmd, FilesCmd):
            self.write_event(self.node.files())

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

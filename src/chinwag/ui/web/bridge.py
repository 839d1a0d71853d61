"""The WebSocket bridge: node events out to every tab (numbered, replayable), commands in.

Events are the JSON-lines API's event objects plus `seq`, a number increasing by
one per event within this server run (`server_run`). A reconnecting tab sends
`resume` with the last seq it saw and gets what it missed from a bounded ring, or
`resync` when that is gone. Each tab has a bounded send queue: a slow or dead tab
gets `resync` (then is closed if still stuck) and never holds up the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from chinwag import events as ev
from chinwag import limits
from chinwag.errors import ChinwagError
from chinwag.node import Node
from chinwag.ui import commands
from chinwag.ui.line import LineUI

log = logging.getLogger(__name__)


class LineCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="line"):
    """A composer line run through the line UI's command layer (`/join foo`, or a message).

    `room` is where a plain (non-command) line goes and what commands such as
    `/history` act on: a room name or `@peer` for a private conversation.
    """

    text: str
    room: str | None = None


class ResumeCmd(msgspec.Struct, frozen=True, tag_field="cmd", tag="resume"):
    """Sent first on every (re)connect: replay events after `since` (0 the first time)."""

    since: Annotated[int, msgspec.Meta(ge=0)] = 0
    server_run: str | None = None


WebCommand = commands.Command | LineCmd | ResumeCmd
_decoder = msgspec.json.Decoder(WebCommand)
_encoder = msgspec.json.Encoder()
#: Events whose own field `seq` (the author's message number) would clash with the
#: stream's `seq`: on the WebSocket it is renamed `author_seq`.
_OWN_SEQ = (ev.Message, ev.DirectMessage, ev.Info)


def encode_event(event: msgspec.Struct | dict[str, Any], seq: int) -> str:
    """Return one event as a JSON text frame: the JSON-lines object plus `"seq": seq`."""
    if isinstance(event, (dict, _OWN_SEQ)):
        obj = event if isinstance(event, dict) else msgspec.to_builtins(event)
        if "seq" in obj:
            obj = dict(obj)
            obj["author_seq"] = obj.pop("seq")
        obj["seq"] = seq
        return _encoder.encode(obj).decode()
    raw = _encoder.encode(event)
    # Every event is a non-empty JSON object: append the field before the closing brace.
    return (raw[:-1] + b',"seq":%d}' % seq).decode()


def parse_web_command(data: str | bytes) -> WebCommand:
    """Decode one command frame; raise ChinwagError with a readable message if invalid."""
    try:
        cmd: WebCommand = _decoder.decode(data)
        return cmd
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    raw = data.encode() if isinstance(data, str) else data
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        if msgspec.json.decode(raw).get("cmd") in ("line", "resume"):
            raise ChinwagError("malformed web command")
    commands.parse_json(raw)  # raises with the JSON-lines API's own message
    raise ChinwagError("malformed command")


class Bridge:
    """Numbers the node's events, keeps the replay ring and fans events out to the tabs."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.seq = 0
        #: Identifies this server run: a seq from another run means nothing here.
        self.server_run = secrets.token_hex(8)
        self._ring: deque[tuple[int, str]] = deque()
        self._ring_chars = 0
        self.clients: set[Client] = set()
        #: Every open socket, resumed or not (counted against WEB_MAX_CLIENTS from the upgrade).
        self.sockets: set[Client] = set()
        node.subscribe(self._on_event)

    def _on_event(self, event: ev.NodeEvent) -> None:
        self.seq += 1
        frame = encode_event(event, self.seq)
        self._ring.append((self.seq, frame))
        self._ring_chars += len(frame)
        while len(self._ring) > 1 and (
            len(self._ring) > limits.WEB_REPLAY_EVENTS or self._ring_chars > limits.WEB_REPLAY_CHARS
        ):
            self._ring_chars -= len(self._ring.popleft()[1])
        for client in tuple(self.clients):
            client.push(frame)

    def resume(self, client: Client, since: int, server_run: str | None) -> None:
        """Queue hello, then the events after `since` (or resync), then go live; no gaps.

        A first connection (since 0, no server_run) gets no replay: it fetches its state.
        """
        client.push(
            _encoder.encode(
                {
                    "event": "hello",
                    "seq": self.seq,
                    "peer_id": self.node.identity.peer_id,
                    "nick": self.node.nick,
                    "server_run": self.server_run,
                    # The API has no other list of private conversations: a fresh page
                    # needs it to show one that began while no page was open.
                    "conversations": [
                        {"name": name, "peer_id": peer_id}
                        for name, peer_id in self.node.conversations()
                    ],
                }
            ).decode()
        )
        oldest = self._ring[0][0] if self._ring else self.seq + 1
        same_run = server_run in (None, self.server_run)
        if since == 0 and server_run is None:
            # A fresh page fetches its state (rooms, history, ...) after hello: replaying
            # old events to it would show them as new (unread counts, notifications).
            pass
        elif same_run and oldest - 1 <= since <= self.seq:
            for seq, frame in self._ring:
                if seq > since:
                    client.push(frame)
        else:
            client.push(RESYNC)
        self.clients.add(client)

    def reply(self, client: Client, event: msgspec.Struct | dict[str, Any]) -> None:
        """Send an answer to one tab only; it carries the current seq (no new number).

        Before the tab's `resume` it carries 0: the tab has seen none of the events yet.
        """
        client.push(encode_event(event, self.seq if client.resumed else 0))

    async def close(self) -> None:
        """Stop following the node and close every tab's socket (the server is stopping),
        all at once: one close timeout at most, not one per stuck tab."""
        # Else the node keeps this bridge (and numbers events into its ring) for ever.
        self.node.unsubscribe(self._on_event)
        clients = tuple(self.clients | self.sockets)
        self.clients = set()
        await asyncio.gather(*(c.close(WSCloseCode.GOING_AWAY, "chinwag stopped") for c in clients))


#: The frame telling a tab it missed events: re-fetch rooms, peers, files and history.
RESYNC = '{"event":"resync"}'


class Client(commands.Session):
    """One tab: its socket, its bounded send queue, its command layer."""

    def __init__(
        self,
        bridge: Bridge,
        ws: web.WebSocketResponse,
        abort: Callable[[], None] | None = None,
    ) -> None:
        """`abort` cuts the connection at once (for a tab that does not close in time)."""
        super().__init__(bridge.node)
        self.bridge = bridge
        self.ws = ws
        self._abort = abort
        self._queue: deque[str] = deque()
        self._queued_chars = 0
        self._wake = asyncio.Event()
        self._resync_queued = False
        self.closed = False
        self._in_flight: deque[asyncio.Future[ev.NodeEvent]] = deque()
        self._background: set[asyncio.Future[None]] = set()
        self.line = LineUI(self.node, sink=self._line_output)
        self.resumed = False

    # --- out --------------------------------------------------------------

    def push(self, frame: str) -> None:
        """Queue a frame; a tab that fell too far behind gets resync, then is closed."""
        if self.closed:
            return
        full = len(self._queue) >= limits.WEB_CLIENT_QUEUE or (
            self._queue and self._queued_chars + len(frame) > limits.WEB_CLIENT_QUEUE_CHARS
        )
        if full:
            if self._resync_queued:
                log.info("web: a tab is stuck; closing it")
                self._close_soon(WSCloseCode.TRY_AGAIN_LATER, "too slow")
                return
            self._queue.clear()
            frame = RESYNC
            self._queued_chars = 0
            self._resync_queued = True
        self._queue.append(frame)
        self._queued_chars += len(frame)
        self._wake.set()

    def _close_soon(self, code: int, message: str) -> None:
        self.closed = True
        self._queue.clear()
        self._queued_chars = 0
        self._wake.set()
        self.bridge.clients.discard(self)
        self._spawn(self.close(code, message))

    async def close(self, code: int, message: str) -> None:
        """Close the socket; cut it if the tab does not take the close within a bound."""
        self.closed = True
        self._wake.set()
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=message.encode()), limits.WEB_CLOSE_TIMEOUT_S
            )
        except Exception as exc:  # timed out or already broken: cut it
            log.debug("web: cutting a tab's socket: %r", exc)
            if self._abort is not None:
                self._abort()

    async def _writer(self) -> None:
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and not self.closed:
                frame = self._queue.popleft()
                self._queued_chars -= len(frame)
                if frame is RESYNC:
                    self._resync_queued = False
                await self.ws.send_str(frame)

    def _line_output(self, text: str) -> None:
        for line in text.split("\n"):
            self.bridge.reply(self, {"event": "line", "text": line})

    # --- in ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve this tab until its socket closes."""
        writer = asyncio.ensure_future(self._writer())
        # A socket that never says `resume` is closed: it would hold a tab's slot for nothing.
        overdue = asyncio.get_running_loop().call_later(
            limits.WEB_RESUME_TIMEOUT_S, self._resume_overdue
        )
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._command(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.bridge.reply(self, ev.Error(message="commands are JSON text frames"))
                elif msg.type == WSMsgType.ERROR:
                    log.info("web: socket error: %s", self.ws.exception())
        finally:
            overdue.cancel()
            self.closed = True
            self.bridge.clients.discard(self)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await writer
            # Background commands (a file being hashed for its offer) finish without the tab.

    def _resume_overdue(self) -> None:
        if not self.resumed and not self.closed:
            log.info("web: a socket sent no resume in time; closing it")
            self._close_soon(WSCloseCode.POLICY_VIOLATION, "resume expected")

    async def _command(self, data: str) -> None:
        try:
            cmd = parse_web_command(data)
            if isinstance(cmd, ResumeCmd):
                if self.resumed:
                    raise ChinwagError("resume is sent once, first")
                self.resumed = True
                self.bridge.resume(self, cmd.since, cmd.server_run)
                return
            await self.handle(cmd)
        except ChinwagError as exc:
            self.bridge.reply(self, ev.Error(message=str(exc)))
        except Exception as exc:  # a bug: report it, keep the node and the socket running
            log.exception("web command failed")
            self.bridge.reply(self, ev.Error(message=f"internal error: {type(exc).__name__}"))

    async def handle(self, cmd: WebCommand) -> None:
        """Run one command; answers go to this tab only, node events to every tab."""
        if isinstance(cmd, LineCmd):
            await self._line(cmd)
        elif isinstance(cmd, commands.Quit):
            # A page must not stop the node for the terminal that started it.
            raise ChinwagError("quit is not available from the web UI: stop chinwag where it runs")
        elif isinstance(cmd, ResumeCmd):
            pass  # answered by _command, before any other command
        else:
            answer = await commands.execute(self.node, cmd, self)
            if answer is not None and cmd.answered:
                self.bridge.reply(self, answer)

    async def sent(self, fut: asyncio.Future[ev.NodeEvent], to_room: bool) -> None:
        """Not awaited one by one: sends of one loop turn share one commit."""
        self._track(fut)
        if len(self._in_flight) > limits.WEB_MAX_IN_FLIGHT:
            # Back-pressure: stop reading this tab until the oldest send is committed.
            await asyncio.wait([self._in_flight[0]])

    async def slow(self, coro: Coroutine[Any, Any, object]) -> None:
        """Hashing a big file takes a while: do not hold up the commands behind it."""
        self._spawn(coro)

    async def _line(self, cmd: LineCmd) -> None:
        text = cmd.text
        if text.startswith("/") and not text.startswith("//"):
            if cmd.room:
                self.line.room = cmd.room
            name = text[1:].partition(" ")[0].lower()
            if name == "quit":
                raise ChinwagError("/quit is not available from the web UI: close the tab")
            await self.line.handle(text)
            return
        body = text[1:] if text.startswith("//") else text
        if cmd.room and cmd.room.startswith("@"):
            await commands.execute(self.node, commands.DmCmd(to=cmd.room[1:], text=body), self)
        else:
            await commands.execute(self.node, commands.Send(text=body, room=cmd.room), self)

    def _track(self, fut: asyncio.Future[ev.NodeEvent]) -> None:
        """Remember a send until it is committed; its failure becomes an error to this tab."""
        self._in_flight.append(fut)
        fut.add_done_callback(self._sent)

    def _sent(self, fut: asyncio.Future[ev.NodeEvent]) -> None:
        with contextlib.suppress(ValueError):
            self._in_flight.remove(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, ChinwagError):
            self.bridge.reply(self, ev.Error(message=str(exc)))
        elif exc is not None:
            log.error("web send failed", exc_info=exc)
            self.bridge.reply(self, ev.Error(message=f"internal error: {type(exc).__name__}"))

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run a slow command in the background; its failure becomes an error to this tab."""

        async def run() -> None:
            try:
                await coro
            except ChinwagError as exc:
                self.bridge.reply(self, ev.Error(message=str(exc)))
            except Exception as exc:  # a bug: report it, keep the node running
                log.exception("web command failed")
                self.bridge.reply(self, ev.Error(message=f"internal error: {type(exc).__name__}"))

        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

"""A minimal, scriptable chinwag peer for integration tests, built from chinwag's own pieces.

`HostilePeer` dials a node over TCP, completes the real Noise XX handshake
with its own identity (chinwag.protocol.session.Session), and then sends
whatever frames a test asks for: honest messages, forged or equivocating ones,
floods of sync frames. It records the frames the node sends and how the
connection ended (the node's goodbye reason, or end of stream / reset).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from chinwag.crypto.identity import Identity
from chinwag.crypto.noise import generate_static_private
from chinwag.protocol import messages as m
from chinwag.protocol.chat import ChatMessage, make_message
from chinwag.protocol.names import DEFAULT_ROOM
from chinwag.protocol.session import (
    Closed,
    FrameReceived,
    HandshakeComplete,
    LocalInfo,
    Session,
)

F = TypeVar(
    "F",
    m.MailOk,
    m.MailNo,
    m.MailDeliver,
    m.Chat,
    m.Vector,
    m.Want,
    m.Floor,
    m.Rooms,
    m.Graft,
    m.Prune,
    m.IHave,
    m.IWant,
    m.IDontWant,
    m.FileWho,
    m.FileHave,
    m.FileHashesReq,
    m.FileHashes,
    m.FileGet,
    m.FileData,
    m.FileNak,
    m.FileEnd,
    m.Presence,
    m.Observed,
    m.Admit,
)

#: Capabilities announced in our hello (the node's own).
CAPS = ("chat/1",)


class HostilePeer:
    """One scripted connection to a node; every frame it sends is chosen by the test."""

    def __init__(
        self,
        identity: Identity | None = None,
        nick: str = "mallory",
        rooms: tuple[str, ...] = ("general",),
    ) -> None:
        #: Rooms announced right after the handshake.
        self.rooms = rooms
        self.identity = identity or Identity.generate()
        self.nick = nick
        # listen port 0: the node has no address to dial us back on.
        self.local = LocalInfo.create(self.identity, generate_static_private(), nick, 0, CAPS)
        self.session: Session | None = None
        self.handshake: HandshakeComplete | None = None
        #: Frames received from the node, in order (pings are answered by the session).
        self.frames: list[
            m.Chat | m.NickChange | m.SyncFrame | m.MeshFrame | m.FileFrame | m.Presence | m.Admit
        ] = []
        #: How the connection ended: the node's goodbye, or eof / reset.
        self.closed: Closed | None = None
        #: True if the socket failed (e.g. reset) rather than ending cleanly.
        self.reset = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    # --- connection -----------------------------------------------------

    async def connect(
        self,
        port: int,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        local_host: str | None = None,
    ) -> None:
        """Dial the node (from local_host if given) and complete the handshake (raise if it
        fails or takes too long)."""
        loop = asyncio.get_running_loop()
        local = None if local_host is None else (local_host, 0)
        self._reader, self._writer = await asyncio.open_connection(host, port, local_addr=local)
        self.session = Session(self.local, initiator=True, now=loop.time())
        self._flush()
        self._task = asyncio.create_task(self._read())
        await self._wait(lambda: self.handshake is not None or self.closed is not None, timeout)
        if self.handshake is None:
            raise AssertionError(f"handshake failed: {self.closed}")
        # Like a real node: say which rooms we are in (file sharing asks room members only).
        if self.rooms:
            self.send_frames([m.Rooms(joined=[m.RoomAnnounce(room=r) for r in self.rooms])])

    async def _read(self) -> None:
        assert self._reader is not None and self.session is not None
        loop = asyncio.get_running_loop()
        try:
            while not self.session.closed:
                try:
                    data = await self._reader.read(65536)
                except (ConnectionError, OSError):
                    self.reset = True
                    data = b""
                self.session.receive_data(data, loop.time())
                self._process()
                if not data:
                    break
        finally:
            if self.closed is None:
                self.closed = Closed("reader stopped", "eof", by_peer=True)
            self._changed.set()

    def _process(self) -> None:
        assert self.session is not None
        while (event := self.session.next_event()) is not None:
            if isinstance(event, HandshakeComplete):
                self.handshake = event
            elif isinstance(event, FrameReceived):
                self.frames.append(event.frame)
            elif isinstance(event, Closed):
                self.closed = event
        self._flush()
        self._changed.set()

    def _flush(self) -> None:
        assert self.session is not None
        data = self.session.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError, OSError):
                self._writer.write(data)

    async def drain(self) -> None:
        """Wait until the socket took what we wrote (ignoring a connection the node closed)."""
        if self._writer is not None:
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.drain()

    async def close(self) -> None:
        """Drop the connection without a goodbye."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- sending --------------------------------------------------------

    def send_frames(self, frames: Iterable[m.Frame]) -> None:
        """Encrypt frames and write them to the socket in one go."""
        assert self.session is not None
        for frame in frames:
            self.session.send_frame(frame)
        self._flush()

    def message(
        self,
        seq: int,
        text: str,
        room: str = DEFAULT_ROOM,
        ts_ms: int | None = None,
        author: Identity | None = None,
        nick: str | None = None,
    ) -> ChatMessage:
        """A correctly signed message by author (default: this peer)."""
        if ts_ms is None:
            ts_ms = int(time.time() * 1000)
        return make_message(author or self.identity, room, nick or self.nick, ts_ms, seq, text)

    def send_chat(
        self,
        msg: ChatMessage,
        *,
        body: bytes | None = None,
        sig: bytes | None = None,
        hist: bool = False,
    ) -> None:
        """Send msg as a Chat frame, optionally with its body or signature replaced."""
        self.send_frames(
            [
                m.Chat(
                    body=msg.raw_body if body is None else body,
                    sig=msg.sig if sig is None else sig,
                    hist=hist,
                )
            ]
        )

    # --- waiting --------------------------------------------------------

    async def _wait(self, cond: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                self._changed.clear()
                await self._changed.wait()

    async def changed(self) -> None:
        """Wait until the next frame arrives or the connection ends (check state first)."""
        self._changed.clear()
        await self._changed.wait()

    async def wait_closed(self, timeout: float = 10.0) -> Closed:
        """Wait until the node ends the connection; return how it ended."""
        try:
            await self._wait(lambda: self.closed is not None, timeout)
        except TimeoutError:
            raise AssertionError(
                f"the node did not close the connection within {timeout}s"
            ) from None
        assert self.closed is not None
        return self.closed

    async def wait_frame(
        self, kind: type[F], pred: Callable[[F], bool] | None = None, timeout: float = 10.0
    ) -> F:
        """Wait for (and return) the first frame of this type from the node matching pred."""

        def find() -> F | None:
            for f in self.frames:
                if isinstance(f, kind) and (pred is None or pred(f)):
                    return f
            return None

        try:
            await self._wait(lambda: find() is not None or self.closed is not None, timeout)
        except TimeoutError:
            raise AssertionError(
                f"no {kind.__name__} frame within {timeout}s; got {self.frames[-5:]}"
            ) from None
        frame = find()
        if frame is None:
            raise AssertionError(f"connection closed ({self.closed}) before a {kind.__name__}")
        return frame

"""net/link.py: the interface above net/, and the one catch point for remote errors.

The catch-point tests run two real PeerConnections over a real loopback TCP
connection (inside the test's network namespace); only the owner is a stand-in.
"""

from __future__ import annotations

import asyncio
import random

from unit_support import FakeConn, FakeManager, chat_frame, make_info

from chinwag.crypto.identity import Identity
from chinwag.errors import RemoteProtocolError
from chinwag.net.connection import PeerConnection
from chinwag.net.link import Link, Links
from chinwag.net.manager import ConnectionManager
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import Reason
from chinwag.protocol.session import Closed, Event, FrameReceived, HandshakeComplete, Session

TIMEOUT_S = 5.0


class Owner:
    """A ConnectionOwner that records events and may raise on frames, like a handler would."""

    def __init__(self, raise_on_frame: Exception | None = None) -> None:
        self.raise_on_frame = raise_on_frame
        self.events: list[Event] = []
        self.open = asyncio.Event()
        self.closed: asyncio.Future[Closed] = asyncio.get_running_loop().create_future()

    def connection_made(self, conn: PeerConnection) -> None:
        pass

    def session_event(self, conn: PeerConnection, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, HandshakeComplete):
            self.open.set()
        elif isinstance(event, FrameReceived) and self.raise_on_frame is not None:
            raise self.raise_on_frame

    def session_closed(self, conn: PeerConnection, closed: Closed) -> None:
        if not self.closed.done():
            self.closed.set_result(closed)


async def connected_pair(
    server_owner: Owner, client_owner: Owner
) -> tuple[PeerConnection, PeerConnection, asyncio.Server]:
    """Return (server side, client side) of a real loopback connection, handshake done."""
    loop = asyncio.get_running_loop()
    server_info, client_info = make_info("srv", 0), make_info("cli", 0)
    made: list[PeerConnection] = []

    def accept() -> PeerConnection:
        conn = PeerConnection(server_owner, Session(server_info, False, loop.time()))
        made.append(conn)
        return conn

    server = await loop.create_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client = await loop.create_connection(
        lambda: PeerConnection(client_owner, Session(client_info, True, loop.time())),
        "127.0.0.1",
        port,
    )
    await asyncio.wait_for(server_owner.open.wait(), TIMEOUT_S)
    await asyncio.wait_for(client_owner.open.wait(), TIMEOUT_S)
    return made[0], client, server


def test_the_test_fakes_implement_the_interface() -> None:
    assert isinstance(FakeConn("x"), Link)
    assert isinstance(FakeManager(), Links)


async def test_connection_and_manager_implement_the_interface() -> None:
    manager = ConnectionManager(lambda: make_info(), Owner(), random.Random(1))  # type: ignore[arg-type]
    assert isinstance(manager, Links)
    loop = asyncio.get_running_loop()
    conn = PeerConnection(manager, Session(make_info(), True, loop.time()))
    assert isinstance(conn, Link)
    assert conn.peer_id is None and not conn.is_open


async def test_a_remote_error_raised_by_a_handler_closes_only_that_connection() -> None:
    """The handler's RemoteProtocolError becomes a goodbye with its code; nothing escapes."""
    loop = asyncio.get_running_loop()
    escaped: list[object] = []
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))
    server_owner = Owner(RemoteProtocolError("two messages, one seq", Reason.EQUIVOCATION))
    client_owner = Owner()
    server_conn, client_conn, server = await connected_pair(server_owner, client_owner)
    try:
        client_conn.send_frame(chat_frame(Identity.generate()))
        # A frame sent after the offending one is dropped, not handed to the owner.
        client_conn.send_frame(m.NickChange(nick="later"))
        theirs = await asyncio.wait_for(client_owner.closed, TIMEOUT_S)
        ours = await asyncio.wait_for(server_owner.closed, TIMEOUT_S)
    finally:
        server.close()
    assert ours == Closed(ours.reason, Reason.EQUIVOCATION, by_peer=False)
    assert (theirs.code, theirs.by_peer) == (Reason.EQUIVOCATION, True)
    frames = [e.frame for e in server_owner.events if isinstance(e, FrameReceived)]
    assert len(frames) == 1 and isinstance(frames[0], m.Chat)
    assert not server_conn.is_open
    assert escaped == []


async def test_frames_sent_just_before_a_goodbye_are_delivered() -> None:
    """A retired (lingering) connection's last frames and the peer's goodbye often arrive in
    one read: the frames before the goodbye still reach the owner (docs/protocol.md 6)."""
    server_owner, client_owner = Owner(), Owner()
    server_conn, client_conn, server = await connected_pair(server_owner, client_owner)
    try:
        server_conn.close(Reason.DUPLICATE, linger=True)  # we retire it, still reading
        # One write: nick frames and the goodbye leave in the same segment.
        client_conn.session.send_frame(m.NickChange(nick="one"))
        client_conn.session.send_frame(m.NickChange(nick="two"))
        client_conn.session.close(Reason.DUPLICATE)
        client_conn._process()
        closed = await asyncio.wait_for(server_owner.closed, TIMEOUT_S)
    finally:
        server.close()
    assert (closed.code, closed.by_peer) == (Reason.DUPLICATE, True)
    nicks = [
        e.frame.nick
        for e in server_owner.events
        if isinstance(e, FrameReceived) and isinstance(e.frame, m.NickChange)
    ]
    assert nicks == ["one", "two"]


async def test_frames_sent_just_before_a_goodbye_are_handed_on() -> None:
    """A peer's last frames (its signed leave, a message typed before /quit) arrive in the
    same read as its goodbye: they are handed to the owner, then the close."""
    server_owner, client_owner = Owner(), Owner()
    _server_conn, client_conn, server = await connected_pair(server_owner, client_owner)
    try:
        # Queued without a flush: the frame and the goodbye leave in one write.
        client_conn.session.send_frame(m.NickChange(nick="last"))
        client_conn.close(Reason.QUIT)
        closed = await asyncio.wait_for(server_owner.closed, TIMEOUT_S)
    finally:
        server.close()
    assert (closed.code, closed.by_peer) == (Reason.QUIT, True)
    frames = [e.frame for e in server_owner.events if isinstance(e, FrameReceived)]
    assert frames == [m.NickChange(nick="last")]

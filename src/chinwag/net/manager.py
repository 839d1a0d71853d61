"""Connection manager: listen, dial, one connection per peer, reconnects.

It owns the TCP listener, every PeerConnection and the PeerTable (dial
policy). It tells its listener (the Node) only about peers whose handshake
has completed and who are not duplicates, and about frames from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from typing import Protocol

from chinwag import limits
from chinwag.logonce import WarnOnce
from chinwag.net.connection import PeerConnection
from chinwag.protocol import messages as m
from chinwag.protocol.peers import (
    SEEN,
    STRANGER,
    Candidate,
    Dial,
    HandshakeGate,
    PeerTable,
    eviction_victim,
)
from chinwag.protocol.reasons import Reason
from chinwag.protocol.session import (
    Closed,
    Event,
    FrameReceived,
    HandshakeComplete,
    LocalInfo,
    Session,
    UnknownFrameIgnored,
)

log = logging.getLogger(__name__)


class ManagerListener(Protocol):
    """What the manager reports upwards."""

    def peer_joined(self, conn: PeerConnection) -> None: ...
    def peer_left(self, conn: PeerConnection, closed: Closed) -> None: ...
    def frame_received(
        self,
        conn: PeerConnection,
        frame: m.Chat | m.NickChange | m.SyncFrame | m.MeshFrame | m.FileFrame,
    ) -> None: ...


class ConnectionManager:
    """Owns every peer connection of a node; implements net/link.py's Links."""

    def __init__(
        self,
        local: Callable[[], LocalInfo],
        listener: ManagerListener,
        rng: random.Random,
        rank: Callable[[str], int] | None = None,
        *,
        mesh: bool = False,
        contact: Callable[[str], bool] | None = None,
        dial_failed: Callable[[str], None] | None = None,
    ) -> None:
        """`rank(peer_id)` says whom the peer limit keeps first (protocol/peers.py ranks).

        mesh=True: beacons do not make us dial (the gossip mesh asks through `mesh_dial`),
        except contacts (`contact(peer_id)`); `dial_failed(peer_id)` hears of each failed
        dial of a known peer id.
        """
        self._local = local
        self._listener = listener
        self._rank = rank or (lambda _peer_id: STRANGER)
        self._contact = contact or (lambda _peer_id: False)
        self._on_dial_failed = dial_failed
        #: Peers dialled on demand (a private conversation, a file): direct connections,
        #: which the mesh neither counts nor closes.
        self._wanted: set[str] = set()
        self._gate = HandshakeGate()
        self._warn = WarnOnce(log)
        self.peers: dict[str, PeerConnection] = {}
        self._pending: set[PeerConnection] = set()
        self._all: set[PeerConnection] = set()
        self._loop = asyncio.get_running_loop()
        self.table = PeerTable(
            local().identity.peer_id,
            rng,
            lambda peer_id: self._rank(peer_id) > STRANGER,
            dial_discovered=not mesh,
            contact=self._contact,
        )
        self._server: asyncio.Server | None = None
        self._dial_timer: asyncio.TimerHandle | None = None
        self._dial_tasks: set[asyncio.Task[None]] = set()
        self._unknown_logged: set[str] = set()
        self._closing = False
        # Peers whose connection the other side closed as a duplicate: the
        # connection it keeps should complete here within a handshake timeout.
        self._limbo: dict[str, tuple[PeerConnection, Closed, asyncio.TimerHandle]] = {}
        self.port = 0

    @property
    def own_id(self) -> str:
        return self.table.own_peer_id

    # --- lifecycle ------------------------------------------------------

    async def listen(self, host: str, port: int, fallback_any: bool) -> int:
        """Start the TCP listener; return the bound port."""
        try:
            sock = _listening_socket(host, port)
        except OSError:
            if not fallback_any:
                raise
            log.info("port %d is taken; listening on any free port", port)
            sock = _listening_socket(host, 0)
        self.port = int(sock.getsockname()[1])
        self._server = await self._loop.create_server(
            lambda: self._new_connection(initiator=False), sock=sock
        )
        return self.port

    async def close(self, reason: str = Reason.QUIT) -> None:
        """Say goodbye to every peer and stop listening and dialling."""
        self._closing = True
        if self._dial_timer is not None:
            self._dial_timer.cancel()
        for _conn, _closed, timer in self._limbo.values():
            timer.cancel()
        for task in list(self._dial_tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
        conns = list(self._all)
        for conn in conns:
            conn.close(reason)
        # Give the goodbyes a moment to leave (bounded, not a synchronisation sleep).
        for conn in conns:
            if conn.transport is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.wait_drained(0.5), 0.6)
        if self._dial_tasks:
            await asyncio.gather(*self._dial_tasks, return_exceptions=True)

    # --- dialling -------------------------------------------------------

    def add_manual_peer(self, host: str, port: int) -> None:
        self.table.add_manual(host, port, self._loop.time())
        self.schedule_dials()

    def want(self, peer_id: str) -> None:
        """Dial peer_id now if its address is known and it is not connected (on demand).

        Such a connection is direct (`is_direct`): for a private conversation or a file.
        """
        if peer_id not in self.peers and self.table.wanted(peer_id, self._loop.time()):
            if len(self._wanted) < limits.MAX_PEERS:
                self._wanted.add(peer_id)
            self.schedule_dials()

    def mesh_dial(self, peer_id: str) -> bool:
        """Dial peer_id for the gossip mesh; return False if no address of it is known."""
        if peer_id in self.peers:
            return True
        if not self.table.wanted(peer_id, self._loop.time()):
            return self.table.address_of(peer_id) is not None  # in progress already
        self.schedule_dials()
        return True

    def is_outbound(self, peer_id: str) -> bool:
        """Return whether we dialled our connection to peer_id."""
        conn = self.peers.get(peer_id)
        return conn is not None and conn.session.initiator

    def is_direct(self, peer_id: str) -> bool:
        """Return whether our connection to peer_id is direct (not the mesh's to count or close):
        we dialled it on demand (`want`) or because it is a contact."""
        conn = self.peers.get(peer_id)
        if conn is None or not conn.session.initiator:
            return False
        if conn.dial_key is not None and self.table.is_manual(conn.dial_key):
            return False  # `--peer`: the user's way into the network, a mesh connection
        return peer_id in self._wanted or self._contact(peer_id)

    def beacon_heard(self, peer_id: str, host: str, port: int) -> bool:
        """Feed a discovery beacon; return True if it came from a peer we are not connected to."""
        unknown = self.table.beacon(peer_id, host, port, self._loop.time())
        if unknown:
            self.schedule_dials()
        return unknown

    def schedule_dials(self) -> None:
        """Start due dials and arm the timer for the next one."""
        if self._closing:
            return
        now = self._loop.time()
        for dial in self.table.due_dials(now):
            task = self._loop.create_task(self._dial(dial))
            self._dial_tasks.add(task)
            task.add_done_callback(self._dial_tasks.discard)
        if self._dial_timer is not None:
            self._dial_timer.cancel()
            self._dial_timer = None
        when = self.table.get_timer()
        if when is not None:
            self._dial_timer = self._loop.call_at(max(when, now + 0.01), self.schedule_dials)

    async def _dial(self, dial: Dial) -> None:
        try:
            await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: self._new_connection(True, dial.key, dial.expected_peer_id),
                    dial.host,
                    dial.port,
                ),
                limits.CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError, UnicodeError, ValueError) as exc:
            # Manual peers are the user's typing: say why they fail, once per try.
            level = logging.INFO if dial.expected_peer_id is None else logging.DEBUG
            log.log(level, "dial %s:%d failed: %s", dial.host, dial.port, exc)
            self.table.dial_failed(dial.key, self._loop.time())
            self._dial_failed(dial.expected_peer_id)
            self.schedule_dials()

    def _dial_failed(self, peer_id: str | None) -> None:
        if peer_id is None:
            return
        self._wanted.discard(peer_id)
        if self._on_dial_failed is not None and not self._closing:
            self._on_dial_failed(peer_id)

    def _new_connection(
        self, initiator: bool, dial_key: str | None = None, expected: str | None = None
    ) -> PeerConnection:
        session = Session(self._local(), initiator, self._loop.time(), expected)
        return PeerConnection(self, session, dial_key)

    # --- callbacks from PeerConnection ----------------------------------

    def connection_made(self, conn: PeerConnection) -> None:
        # Only inbound handshakes count against the limits: our own dials must
        # get through even while strangers hold half-open connections.
        assert conn.transport is not None
        if self._closing:
            conn.transport.abort()
            return
        if not conn.session.initiator:
            host = conn.address[0]
            admitted, victim = self._gate.admit(conn, host, self._loop.time())
            if not admitted:
                self._warn(
                    ("pending", host),
                    "refusing connection from %s: too many handshakes from it, or in all",
                    host,
                )
                conn.transport.abort()
                return
            if isinstance(victim, PeerConnection) and victim.transport is not None:
                # Its source holds more than its share of the handshake slots.
                log.debug("dropping a pending handshake from %s to make room", victim.address[0])
                victim.transport.abort()
        self._pending.add(conn)
        self._all.add(conn)

    def session_event(self, conn: PeerConnection, event: Event) -> None:
        if isinstance(event, HandshakeComplete):
            self._handshake_complete(conn, event)
        elif isinstance(event, FrameReceived):
            if isinstance(event.frame, m.Chat | m.FileFrame):
                # Not sync frames: every peer sends vectors periodically, idle or not.
                conn.last_active = self._loop.time()
            # Also frames from a duplicate connection being retired (LINGER):
            # the peer may have sent them before it heard our goodbye.
            if (conn.session.peer_id or "") in self.peers:
                self._listener.frame_received(conn, event.frame)
        elif isinstance(event, UnknownFrameIgnored):
            first = event.tag not in self._unknown_logged
            if first and len(self._unknown_logged) < limits.MAX_UNKNOWN_TAGS_LOGGED:
                self._unknown_logged.add(event.tag)
                log.info("ignoring unknown frame type %r (logged once)", event.tag)
            else:
                log.debug("ignoring unknown frame type %r", event.tag)

    def _handshake_complete(self, conn: PeerConnection, ev: HandshakeComplete) -> None:
        self._pending.discard(conn)
        self._gate.done(conn)
        now = self._loop.time()
        if conn.dial_key is not None:
            self.table.dial_reached(conn.dial_key, ev.peer_id)
        existing = self.peers.get(ev.peer_id)
        if existing is not None and existing.is_open:
            if self._tie_rank(conn) < self._tie_rank(existing):
                log.debug("duplicate connection to %s: keeping the new one", ev.peer_id[:8])
                self.peers[ev.peer_id] = conn
                conn.connected_at = now
                existing.close(Reason.DUPLICATE, linger=True)
            else:
                log.debug("duplicate connection to %s: keeping the old one", ev.peer_id[:8])
                conn.close(Reason.DUPLICATE, linger=True)
            return
        limbo = self._limbo.pop(ev.peer_id, None)
        if limbo is not None:
            limbo[2].cancel()
            self.peers[ev.peer_id] = conn
            conn.connected_at = limbo[0].connected_at
            log.debug("replacement connection to %s is up", ev.peer_id[:8])
            return
        if len(self.peers) >= limits.MAX_PEERS and not self._make_room(conn, ev.peer_id, now):
            self._warn(
                "too_many_peers",  # one key: throwaway identities are many
                "refusing peer %s: already %d peers",
                ev.peer_id[:8],
                len(self.peers),
            )
            conn.close(Reason.TOO_MANY_PEERS)
            return
        self.peers[ev.peer_id] = conn
        conn.connected_at = conn.last_active = now
        self.table.connected(ev.peer_id, conn.address[0], ev.listen_port, now, conn.dial_key)
        log.info("connected to %s (%s) at %s:%d", ev.nick, ev.peer_id[:8], *conn.address)
        self._listener.peer_joined(conn)

    def _make_room(self, conn: PeerConnection, peer_id: str, now: float) -> bool:
        """At the peer limit: close a peer ranked below the newcomer; False if none may go."""
        candidates = [
            Candidate(pid, self._rank_of(pid, c), c.last_active) for pid, c in self.peers.items()
        ]
        victim = eviction_victim(candidates, self._rank_of(peer_id, conn), now)
        if victim is None:
            return False
        log.info("evicting peer %s to make room for %s", victim[:8], peer_id[:8])
        # Closing reports it gone at once (session_closed), freeing its place.
        self.peers[victim].close(Reason.EVICTED)
        return len(self.peers) < limits.MAX_PEERS

    def _rank_of(self, peer_id: str, conn: PeerConnection) -> int:
        """Return how much the peer limit wants to keep peer_id (a `--peer` counts as seen)."""
        rank = self._rank(peer_id)
        if conn.dial_key is not None and self.table.is_manual(conn.dial_key):
            rank = max(rank, SEEN)
        return rank

    def _tie_rank(self, conn: PeerConnection) -> tuple[bool, bytes]:
        """Rank a connection for the one-per-pair rule; both sides compute the same ranks.

        The connection dialled by the lower peer id wins; between two dialled by
        the same side, the one with the lower Noise handshake hash.
        """
        peer_id = conn.session.peer_id or ""
        initiator = self.own_id if conn.session.initiator else peer_id
        return (initiator != min(self.own_id, peer_id), conn.session.handshake_hash)

    def session_closed(self, conn: PeerConnection, closed: Closed) -> None:
        self._pending.discard(conn)
        self._gate.done(conn)
        self._all.discard(conn)
        now = self._loop.time()
        peer_id = conn.session.peer_id
        if peer_id is not None and self.peers.get(peer_id) is conn:
            del self.peers[peer_id]
            if closed.by_peer and closed.code == Reason.DUPLICATE and not self._closing:
                timer = self._loop.call_later(
                    limits.HANDSHAKE_TIMEOUT_S, self._limbo_expired, peer_id
                )
                self._limbo[peer_id] = (conn, closed, timer)
                return
            self._peer_gone(conn, closed)
            return
        if closed.code not in (Reason.DUPLICATE, Reason.QUIT) and not self._closing:
            if closed.by_peer:
                log.debug("connection with %s closed: %s", conn.address[0], closed.reason)
            else:  # a peer can cause these again and again
                self._warn(
                    ("closed", closed.code, conn.address[0]),
                    "connection with %s closed: %s",
                    conn.address[0],
                    closed.reason,
                )
        # A dial that never became the peer's connection failed, also when its handshake
        # completed but the connection was refused (the peer limit): retry it with back-off.
        if (
            conn.dial_key is not None
            and closed.code != Reason.DUPLICATE
            and (peer_id is None or peer_id not in self.peers)
        ):
            self.table.dial_failed(conn.dial_key, now)
            self._dial_failed(peer_id)
            self.schedule_dials()

    def _limbo_expired(self, peer_id: str) -> None:
        entry = self._limbo.pop(peer_id, None)
        if entry is not None and peer_id not in self.peers:
            self._peer_gone(entry[0], entry[1])

    def _peer_gone(self, conn: PeerConnection, closed: Closed) -> None:
        peer_id = conn.session.peer_id
        assert peer_id is not None
        log.info("disconnected from %s: %s", peer_id[:8], closed.reason)
        # A peer we evicted for lack of room is not redialled either, until it beacons again.
        goodbye = (closed.by_peer and closed.code == Reason.QUIT) or (
            not closed.by_peer and closed.code == Reason.EVICTED
        )
        self.table.disconnected(peer_id, self._loop.time(), goodbye=goodbye)
        self._wanted.discard(peer_id)
        self._listener.peer_left(conn, closed)
        self.schedule_dials()

    # --- sending --------------------------------------------------------

    def broadcast(self, plaintext: bytes, exclude: frozenset[str] = frozenset()) -> None:
        """Send an encoded frame to every connected peer not in exclude."""
        for peer_id, conn in self.peers.items():
            if peer_id not in exclude:
                conn.send_encoded(plaintext)

    def broadcast_frame(self, frame: m.Frame) -> None:
        """Send one frame to every connected peer."""
        self.broadcast(m.encode(frame))

    def congested(self) -> bool:
        """Return True if some peer's send buffer is above its high-water mark."""
        return any(conn.pending_bytes > limits.SEND_HIGH_WATER for conn in self.peers.values())

    async def wait_drained(self) -> None:
        """Wait for congested peers to drain; disconnect those that stay stuck."""
        for conn in list(self.peers.values()):
            if not await conn.wait_drained(limits.SEND_DRAIN_TIMEOUT_S):
                log.warning("peer %s did not drain its queue; disconnecting", conn.peer_id)
                conn.close(Reason.TOO_SLOW)


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR lets a restarted node take its port back from TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock

"""Connection manager: listen, dial, one connection per peer, reconnects.

It owns the TCP listener, every PeerConnection and the PeerTable (dial
policy). It tells its listener (the Node) only about peers whose handshake
has completed and who are not duplicates, and about frames from them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from chinwag import limits
from chinwag.errors import RemoteProtocolError
from chinwag.logonce import WarnOnce
from chinwag.net.connection import PeerConnection
from chinwag.net.punch import connect_from, simultaneous_open
from chinwag.net.relay import RELAYED, RelayService, classify_path
from chinwag.protocol import messages as m
from chinwag.protocol.addr import AddrError, format_addr, is_public, parse_addr
from chinwag.protocol.peers import (
    SEEN,
    STRANGER,
    Candidate,
    Dial,
    HandshakeGate,
    PeerTable,
    eviction_victim,
)
from chinwag.protocol.punch import Dial as PunchDial
from chinwag.protocol.punch import Puncher, RoundFailed, SendFrame
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
        frame: m.PeerFrame | m.Observed,
    ) -> None: ...
    def path_changed(self, conn: PeerConnection) -> None:
        """The peer's kept connection changed path (docs/reach.md "Paths")."""
        ...


@dataclass
class _RelayRedial:
    """A contact dialled through its relays while it is offline, backing off."""

    relays: list[tuple[str, str]]
    failures: int = 0
    timer: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


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
        relay: bool = False,
        relay_unlimited: Callable[[str], bool] | None = None,
    ) -> None:
        """`rank(peer_id)` says whom the peer limit keeps first (protocol/peers.py ranks).

        mesh=True: beacons do not make us dial (the gossip mesh asks through `mesh_dial`),
        except contacts (`contact(peer_id)`); `dial_failed(peer_id)` hears of each failed
        dial of a known peer id. `relay`: relay circuits for others, `relay_unlimited(peer_id)`
        without limits.
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
        #: Contacts with relays, redialled through them while offline (one per contact).
        self._relay_redials: dict[str, _RelayRedial] = {}
        self._closing = False
        # Peers whose connection the other side closed as a duplicate: the
        # connection it keeps should complete here within a handshake timeout.
        self._limbo: dict[str, tuple[PeerConnection, Closed, asyncio.TimerHandle]] = {}
        self.port = 0
        #: Reservations and circuits, both sides (net/relay.py).
        self.relay = RelayService(self, relay, relay_unlimited)
        self._bind_host = "0.0.0.0"
        # --- punch (docs/reach.md "Hole punching") ---
        #: Try to upgrade relayed connections (off: `--no-punch`; their punches go unanswered).
        self.punch_enabled = True
        #: What each connected peer told us it sees us at (Observed frames), by reporter.
        self.observed: dict[str, str] = {}
        #: More public addresses of ours (a UPnP mapping), offered in punches after the observed.
        self.extra_addrs: Callable[[], list[str]] = list
        #: Addresses a punch we initiate may be answered from: an inbound connection from one
        #: of them is the punched connection, and we are its Noise initiator (net/punch.py).
        self._punch_expect: dict[tuple[str, int], tuple[PeerConnection, int]] = {}
        #: Relayed connections being retired for a direct one: frames from the new connection
        #: wait until the old one has delivered all of its own (no reordering at the switch).
        self._draining: dict[str, PeerConnection] = {}
        self._held: dict[str, list[m.PeerFrame]] = {}

    @property
    def own_id(self) -> str:
        return self.table.own_peer_id

    def local_info(self) -> LocalInfo:
        """What this node proves and announces in a handshake (now)."""
        return self._local()

    async def dial_via(
        self, relay_id: str, relay_addr: tuple[str, int], target: str
    ) -> PeerConnection:
        """Connect to target through a circuit at the relay (raises RelayError)."""
        return await self.relay.dial_via(relay_id, relay_addr, target)

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
        self._bind_host = host
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
        for redial in self._relay_redials.values():
            if redial.timer is not None:
                redial.timer.cancel()
        await self.relay.close()
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
        # Closed connections are half-closed until the peer ends its side (connection.py):
        # wait for that together, then drop what is left, so no socket outlives the stop.
        await asyncio.gather(
            *(conn.finish_closing(limits.CLOSE_FINISH_S) for conn in conns),
            return_exceptions=True,
        )
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

    def learn(self, peer_id: str, addresses: list[tuple[str, int]]) -> bool:
        """Note where peer_id's presence record says it listens (dialled only on demand);
        return whether an address of it is known now."""
        if addresses and peer_id not in self.peers:
            host, port = addresses[0]
            self.table.hint(peer_id, host, port, self._loop.time())
        return self.table.address_of(peer_id) is not None

    def reach(self, peer_id: str, addresses: list[tuple[str, int]]) -> None:
        """Dial peer_id now (`want`), learning first an address its presence record gives."""
        if peer_id in self.peers:
            return
        self.learn(peer_id, addresses)
        self.want(peer_id)

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
        return conn is not None and conn.session.dialled

    def is_direct(self, peer_id: str) -> bool:
        """Return whether our connection to peer_id is direct (not the mesh's to count or close):
        we dialled it on demand (`want`), because it is a contact, or to reserve at a relay."""
        conn = self.peers.get(peer_id)
        if conn is None or not conn.session.dialled:
            return False
        if self.relay.is_relay_link(peer_id, conn.dial_key):
            return True  # our reservation lives on it: the mesh must not close it
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
            # From our listening port: peers then observe the NAT mapping a punch uses.
            sock = await connect_from(
                self._bind_host, self.port, dial.host, dial.port, limits.CONNECT_TIMEOUT_S
            )
            try:
                await self._loop.create_connection(
                    lambda: self._new_connection(True, dial.key, dial.expected_peer_id),
                    sock=sock,
                )
            except BaseException:
                sock.close()
                raise
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

    # --- contacts (issue 14) -------------------------------------------

    def dial_contact(self, peer_id: str, addrs: list[str], relays: list[tuple[str, str]]) -> None:
        """Dial a contact now by every direct address (the handshake checks it is peer_id),
        and by its relays if still not connected CONTACT_RELAY_DELAY_S later.

        Its addresses stay in the table: redialled with back-off whenever it is not connected;
        its relays too, while it stays offline (CONTACT_RELAY_RETRY_*): a contact behind a
        NAT comes back through a relay after its circuit ended or its relay restarted.
        """
        now = self._loop.time()
        for addr in addrs:
            try:
                host, port = parse_addr(addr)
            except AddrError:
                continue  # checked when the invite was read; a stored one may be old
            self.table.add_contact(peer_id, host, port, now)
        self.table.wanted(peer_id, now)
        self.schedule_dials()
        if self._closing:
            return
        redial = self._relay_redials.pop(peer_id, None)
        if redial is not None and redial.timer is not None:
            redial.timer.cancel()
        if relays:
            # A new round from the start (a newer invite, a lost path): no back-off carried.
            redial = _RelayRedial(list(relays), tasks=redial.tasks if redial else set())
            self._relay_redials[peer_id] = redial
            redial.timer = self._loop.call_later(
                limits.CONTACT_RELAY_DELAY_S, self._dial_relays, peer_id
            )

    def forget_contact(self, peer_id: str) -> None:
        """Stop dialling a contact's addresses and relays (its connection, if any, stays)."""
        self.table.remove_contact(peer_id)
        redial = self._relay_redials.pop(peer_id, None)
        if redial is not None and redial.timer is not None:
            redial.timer.cancel()

    def _dial_relays(self, peer_id: str) -> None:
        """Dial an offline contact through each of its relays, then check again later."""
        redial = self._relay_redials.get(peer_id)
        if redial is None or self._closing:
            return
        redial.timer = None
        if peer_id in self.peers:
            return  # back: its next loss (Node.peer_left -> dial_contact) starts a new round
        # Once every round's circuit dials ended, the next round is armed (they may all have
        # failed: the relay is down, or the contact has no reservation there yet).
        delay = min(
            limits.CONTACT_RELAY_RETRY_BASE_S * 2 ** min(redial.failures, 16),
            limits.CONTACT_RELAY_RETRY_CAP_S,
        )
        redial.failures += 1
        if not redial.tasks:
            for relay_id, relay_addr in redial.relays:
                try:
                    addr = parse_addr(relay_addr)  # the relay's dial_via takes (host, port)
                except AddrError:
                    continue
                result = self.dial_via(relay_id, addr, peer_id)
                if inspect.isawaitable(result):
                    task = self._loop.create_task(_awaited(result))
                    self._dial_tasks.add(task)
                    task.add_done_callback(self._dial_tasks.discard)
                    redial.tasks.add(task)
                    task.add_done_callback(redial.tasks.discard)
        redial.timer = self._loop.call_later(delay, self._dial_relays, peer_id)

    def _observed_frame(self, conn: PeerConnection) -> m.Observed | None:
        """Return the `obs` frame telling a peer where we see it, None if we cannot tell.

        A relayed connection's address is the relay's, not the peer's: nothing to tell.
        """
        if not conn.address[0] or getattr(conn, "path", None) == "relayed":
            return None
        return m.Observed(addr=format_addr(*conn.address))

    # --- callbacks from PeerConnection ----------------------------------

    def connection_made(self, conn: PeerConnection) -> None:
        # Only inbound handshakes count against the limits: our own dials must
        # get through even while strangers hold half-open connections.
        assert conn.transport is not None
        if self._closing:
            conn.transport.abort()
            return
        if not conn.session.initiator:
            self._punched_inbound(conn)
        # A circuit's end-to-end connection came through our own circuit connection.
        if not conn.session.initiator and conn.path != RELAYED:
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
            frame = event.frame
            if isinstance(frame, m.Observed | m.PunchConnect | m.PunchSync):
                self._reach_frame(conn, frame)
                # Observed also goes up: the node's reach aggregation (protocol/reach.py).
                if isinstance(frame, m.Observed) and self.peers.get(conn.peer_id or "") is conn:
                    self._listener.frame_received(conn, frame)
                return
            if isinstance(frame, m.Chat | m.FileFrame):
                # Not sync frames: every peer sends vectors periodically, idle or not.
                conn.last_active = self._loop.time()
            if isinstance(frame, m.RelayFrame):
                if self.peers.get(conn.session.peer_id or "") is conn:
                    self.relay.frame(conn, frame)
                return
            # Also frames from a duplicate connection being retired (LINGER):
            # the peer may have sent them before it heard our goodbye.
            peer_id = conn.session.peer_id or ""
            if peer_id in self.peers:
                if self._hold(peer_id, conn, frame):
                    return
                self._listener.frame_received(conn, frame)
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
        if m.CIRCUIT_CAP in ev.caps and not conn.session.dialled:
            # A connection to us as a relay: not a peer; net/relay.py owns it from now on.
            self._all.discard(conn)
            self.relay.take_circuit_connection(conn)
            return
        observed = self._observed_frame(conn)
        if observed is not None:
            conn.send_frame(observed)
        if conn.path != RELAYED:
            conn.path = classify_path(conn.address[0])
        now = self._loop.time()
        if conn.dial_key is not None:
            self.table.dial_reached(conn.dial_key, ev.peer_id)
            self.relay.dialled(conn, ev.caps)
        existing = self.peers.get(ev.peer_id)
        if existing is not None and existing.is_open:
            if self._tie_rank(conn) < self._tie_rank(existing):
                log.debug("duplicate connection to %s: keeping the new one", ev.peer_id[:8])
                self.peers[ev.peer_id] = conn
                conn.connected_at = now
                if existing.path == "relayed" and conn.path != "relayed":
                    self._draining[ev.peer_id] = existing
                existing.close(Reason.DUPLICATE, linger=True)
                self.relay.peer_up(conn, ev.caps)
                self._path_moved(existing, conn)
            else:
                log.debug("duplicate connection to %s: keeping the old one", ev.peer_id[:8])
                conn.close(Reason.DUPLICATE, linger=True)
                self._punch_outcome(conn, ok=False)
            return
        limbo = self._limbo.pop(ev.peer_id, None)
        if limbo is not None:
            limbo[2].cancel()
            self.peers[ev.peer_id] = conn
            conn.connected_at = limbo[0].connected_at
            log.debug("replacement connection to %s is up", ev.peer_id[:8])
            self.relay.peer_up(conn, ev.caps)
            self._path_moved(limbo[0], conn)
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
        # A relayed connection's address is the relay's: nothing to redial the peer at.
        port = 0 if conn.path == RELAYED else ev.listen_port
        self.table.connected(ev.peer_id, conn.address[0], port, now, conn.dial_key)
        log.info("connected to %s (%s) at %s:%d", ev.nick, ev.peer_id[:8], *conn.address)
        self._listener.peer_joined(conn)
        self.relay.peer_up(conn, ev.caps)
        self._opened(conn)

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

    def _tie_rank(self, conn: PeerConnection) -> tuple[bool, bool, bytes]:
        """Rank a connection for the one-per-pair rule; both sides compute the same ranks.

        A direct connection beats a relayed one (both ends know which is which); then
        the connection dialled by the lower peer id wins; between two dialled by
        the same side, the one with the lower Noise handshake hash.
        """
        peer_id = conn.session.peer_id or ""
        initiator = self.own_id if conn.session.initiator else peer_id
        return (
            conn.path == "relayed",
            initiator != min(self.own_id, peer_id),
            conn.session.handshake_hash,
        )

    def session_closed(self, conn: PeerConnection, closed: Closed) -> None:
        self._pending.discard(conn)
        self._gate.done(conn)
        self._all.discard(conn)
        now = self._loop.time()
        peer_id = conn.session.peer_id
        self._punch_closed(conn)
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
        self.observed.pop(peer_id, None)
        log.info("disconnected from %s: %s", peer_id[:8], closed.reason)
        # A peer we evicted for lack of room is not redialled either, until it beacons again.
        goodbye = (closed.by_peer and closed.code == Reason.QUIT) or (
            not closed.by_peer and closed.code == Reason.EVICTED
        )
        self.table.disconnected(peer_id, self._loop.time(), goodbye=goodbye)
        self._wanted.discard(peer_id)
        self.relay.peer_down(peer_id)
        self._listener.peer_left(conn, closed)
        self.schedule_dials()

    # --- paths and hole punching (docs/reach.md "Hole punching") --------

    async def adopt(
        self,
        sock: socket.socket,
        initiator: bool,
        expected: str | None,
        path: str = "direct",
        via: str | None = None,
    ) -> PeerConnection:
        """Run a chinwag session over an already connected socket (a relay circuit, a punch)."""
        conn = self._new_connection(initiator, None, expected)
        conn.path, conn.via = path, via
        await self._loop.create_connection(lambda: conn, sock=sock)
        return conn

    def own_addrs(self) -> tuple[str, ...]:
        """Our public addresses for a punch: as peers observe them (most reported first), UPnP."""
        # Public ones only (as libp2p's DCUtR): a private address names a host in the
        # peer's own LAN, maybe the peer itself, never us.
        ranked = [
            a for a, _n in collections.Counter(self.observed.values()).most_common() if _public(a)
        ]
        out: list[str] = []
        for addr in ranked + self.extra_addrs():
            if addr not in out and len(out) < limits.MAX_PUNCH_ADDRS:
                out.append(addr)
        return tuple(out)

    def _opened(self, conn: PeerConnection) -> None:
        """A peer's first connection is up: tell it where we see it, or start punching."""
        if conn.path == "relayed" and self.punch_enabled:
            conn.punch = Puncher(conn.session.initiator, self._loop.time(), self.own_addrs())
            self._punch_step(conn)
        # (The Observed frame went out at the handshake: _observed_frame.)
        self._punch_outcome(conn, ok=True)

    def _reach_frame(
        self, conn: PeerConnection, frame: m.Observed | m.PunchConnect | m.PunchSync
    ) -> None:
        """Handle an Observed or punch frame; junk raises RemoteProtocolError (closes conn)."""
        peer_id = conn.session.peer_id or ""
        if self.peers.get(peer_id) is not conn:
            return  # from a connection being retired: stale
        if isinstance(frame, m.Observed):
            try:
                parse_addr(frame.addr)
            except AddrError as exc:
                raise RemoteProtocolError(f"bad obs: {exc}", Reason.MALFORMED_FRAME) from None
            # A relayed peer sees the relay, not us; the bound is one entry per connected peer.
            if conn.path != "relayed" and (
                peer_id in self.observed or len(self.observed) < limits.MAX_OBSERVERS
            ):
                self.observed[peer_id] = frame.addr
            return
        if conn.path != "relayed" or not self.punch_enabled:
            return  # a direct peer has nothing to punch; or we do not punch
        now = self._loop.time()
        if conn.punch is None:
            conn.punch = Puncher(conn.session.initiator, now, self.own_addrs())
        conn.punch.own_addrs = self.own_addrs()
        conn.punch.receive(frame, now)
        self._punch_step(conn)

    def _punch_step(self, conn: PeerConnection) -> None:
        """Carry out a puncher's actions and re-arm its timer."""
        punch = conn.punch
        if punch is None:
            return
        while (action := punch.next_action()) is not None:
            if isinstance(action, SendFrame):
                if isinstance(action.frame, m.PunchSync):
                    # From now on the responder dials: its SYN may reach our listener before
                    # our own dial leaves; that connection is the punched one, ours to initiate.
                    for addr in punch.peer_addrs:
                        self._punch_expect[addr] = (conn, action.frame.n)
                conn.send_frame(action.frame)
            elif isinstance(action, PunchDial):
                task = self._loop.create_task(self._punch_dial(conn, action))
                self._dial_tasks.add(task)
                task.add_done_callback(self._dial_tasks.discard)
            elif isinstance(action, RoundFailed):
                log.info(
                    "hole punch to %s failed (round %d); staying relayed, next try in %.0f s",
                    (conn.session.peer_id or "?")[:8],
                    action.round,
                    action.retry_at - self._loop.time(),
                )
        if conn.punch_timer is not None:
            conn.punch_timer.cancel()
            conn.punch_timer = None
        when = punch.get_timer()
        if when is not None and not self._closing:
            conn.punch_timer = self._loop.call_at(when, self._punch_timer_fired, conn)

    def _punch_timer_fired(self, conn: PeerConnection) -> None:
        conn.punch_timer = None
        if conn.punch is not None:
            conn.punch.own_addrs = self.own_addrs()
            conn.punch.handle_timer(self._loop.time())
            self._punch_step(conn)

    async def _punch_dial(self, relayed: PeerConnection, action: PunchDial) -> None:
        """Open the direct connection by simultaneous open; its handshake reports the outcome."""
        punch = relayed.punch
        peer_id = relayed.session.peer_id
        if punch is None or peer_id is None:
            return
        sock, busy = await simultaneous_open(
            self._bind_host, self.port, action.addrs, limits.PUNCH_DIAL_TIMEOUT_S
        )
        if sock is None:
            # Unless the peer's SYN reached our listener first (our connect found the
            # 4-tuple taken): that connection, accepted now or soon, reports the outcome,
            # or the puncher's own deadline fails the attempt.
            if not busy:
                self._punch_result(relayed, action.attempt, ok=False)
            return
        current = self.peers.get(peer_id)
        if self._closing or current is None or current.path != "relayed":
            sock.close()  # the peer left, or is reached directly already
            return
        conn = self._new_connection(punch.initiator, None, peer_id)
        conn.punch_of = (relayed, action.attempt)
        try:
            await self._loop.create_connection(lambda: conn, sock=sock)
        except OSError as exc:
            log.debug("punched socket to %s unusable: %s", peer_id[:8], exc)
            sock.close()
            self._punch_result(relayed, action.attempt, ok=False)

    def _punched_inbound(self, conn: PeerConnection) -> None:
        """An inbound connection answering our punch is ours to initiate (see net/punch.py)."""
        entry = self._punch_expect.get(conn.address) or self._punch_claiming(conn.address[0])
        if entry is None:
            return
        relayed, attempt = entry
        if relayed.punch is None or relayed.punch.attempt != attempt:
            return
        log.debug("punched connection from %s:%d arrived at our listener", *conn.address)
        conn.session = Session(self._local(), True, self._loop.time(), relayed.session.peer_id)
        conn.punch_of = entry

    def _punch_claiming(self, host: str) -> tuple[PeerConnection, int] | None:
        """The one punch now expecting a SYN from host at any port (a symmetric NAT's), or None.

        Two punches claiming one IP (two peers behind one NAT) is ambiguous: neither takes it.
        """
        claims = [
            c for c in self.peers.values() if c.punch is not None and c.punch.claims_inbound(host)
        ]
        if len(claims) != 1 or claims[0].punch is None:
            return None
        return claims[0], claims[0].punch.attempt

    def _punch_outcome(self, conn: PeerConnection, ok: bool) -> None:
        """A punched connection's handshake completed (ok) or failed: tell its puncher."""
        if conn.punch_of is not None:
            relayed, attempt = conn.punch_of
            conn.punch_of = None
            self._punch_result(relayed, attempt, ok)

    def _punch_result(self, relayed: PeerConnection, attempt: int, ok: bool) -> None:
        for addr, (rc, n) in list(self._punch_expect.items()):
            if rc is relayed and n <= attempt:
                del self._punch_expect[addr]
        if relayed.punch is not None:
            relayed.punch.dial_result(attempt, ok, self._loop.time())
            self._punch_step(relayed)

    def _path_moved(self, old: PeerConnection, new: PeerConnection) -> None:
        """The peer's connection is now `new` (a duplicate won, or a punch succeeded)."""
        if old.punch is not None:
            old.punch.succeeded()
            self._punch_step(old)
        self._punch_outcome(new, ok=True)
        if (old.path, old.via) != (new.path, new.via):
            log.info(
                "peer %s is now reached %s (was %s)",
                (new.session.peer_id or "?")[:8],
                new.path,
                old.path,
            )
            self._listener.path_changed(new)

    def _punch_closed(self, conn: PeerConnection) -> None:
        """A connection ended: stop its punching, report a failed punch, release held frames."""
        if conn.punch_timer is not None:
            conn.punch_timer.cancel()
            conn.punch_timer = None
        conn.punch = None
        for addr, (relayed, _n) in list(self._punch_expect.items()):
            if relayed is conn:
                del self._punch_expect[addr]
        self._punch_outcome(conn, ok=False)  # a punched connection that never opened
        peer_id = conn.session.peer_id or ""
        if self._draining.get(peer_id) is conn or (
            peer_id in self._draining and self.peers.get(peer_id) is conn
        ):
            self._release(peer_id)

    def _hold(
        self,
        peer_id: str,
        conn: PeerConnection,
        frame: m.PeerFrame,
    ) -> bool:
        """Hold a frame of a new connection while the old one drains; True if held."""
        old = self._draining.get(peer_id)
        if old is None or old is conn:
            return False
        held = self._held.setdefault(peer_id, [])
        if len(held) >= limits.MIGRATION_HOLD_MAX_FRAMES:
            log.debug("too many frames held for %s; releasing them", peer_id[:8])
            self._release(peer_id)
            return False
        held.append(frame)
        return True

    def _release(self, peer_id: str) -> None:
        """The old connection is done: deliver the frames held from the new one, in order."""
        self._draining.pop(peer_id, None)
        held = self._held.pop(peer_id, [])
        conn = self.peers.get(peer_id)
        if conn is None:
            return
        for frame in held:
            self._listener.frame_received(conn, frame)

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


def _public(addr: str) -> bool:
    try:
        host, _port = parse_addr(addr)
    except AddrError:
        return False
    return is_public(ipaddress.ip_address(host))


async def _awaited(result: Awaitable[object]) -> None:
    """Await a relay dial; its failure is logged, never raised into the loop."""
    try:
        await result
    except Exception as exc:
        log.debug("relay dial failed: %s", exc)


def _listening_socket(host: str, port: int) -> socket.socket:
    # SO_REUSEPORT lets our dials bind the listening port (net/punch.py), but it would also
    # let a second node of the same user share the port and split its connections. A probe
    # without it fails while any listener holds the port (and picks a free port for 0); the
    # listener binds next to the probe (both SO_REUSEADDR, neither listening), then it goes.
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR lets a restarted node take its port back from TIME_WAIT.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = int(probe.getsockname()[1])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
    finally:
        probe.close()
    return sock

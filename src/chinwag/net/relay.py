"""Relay circuits, asyncio side: the relay's splice and the client's reservations and dials.

protocol/relay.py decides (who gets a reservation or a circuit, when a circuit must
close); this module does the I/O (docs/reach.md "Relays", docs/protocol.md section 22):

- On every node: `rsv` answered (granted only with `--relay`), `cinc` taken by opening
  a fresh connection to the relay and sending `cacc`, `dial_via` opening one and
  sending `cconn`. After `cok` the fresh connection's socket is handed to an ordinary
  PeerConnection (an end-to-end Noise session: the dialer initiates and expects the
  target's id), fed first with any bytes that followed `cok` in the same read.
- On a relay: circuit connections (hello capability `circuit/1`) are taken over from
  the connection manager after their handshake; once both ends are there, both get
  `cok` and their sockets are spliced raw, byte and time limits counted, with
  back-pressure (a side whose peer does not read stops being read).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ifaddr

from chinwag import limits
from chinwag.errors import ChinwagError
from chinwag.net.connection import PeerConnection
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import Reason, RelayRefusal
from chinwag.protocol.relay import Circuit, RelayBook, ReservationKeeper
from chinwag.protocol.session import (
    Closed,
    Event,
    FrameReceived,
    HandshakeComplete,
    LocalInfo,
    Session,
)

if TYPE_CHECKING:
    from chinwag.net.manager import ConnectionManager

log = logging.getLogger(__name__)

LAN = "lan"
DIRECT = "direct"
RELAYED = "relayed"


class RelayError(ChinwagError):
    """A circuit through a relay could not be made (refused, timed out, unreachable)."""


def local_networks() -> list[tuple[str, int]]:
    """Return (address, prefix length) of every IPv4/IPv6 address of our interfaces."""
    nets: list[tuple[str, int]] = []
    with contextlib.suppress(OSError):
        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                addr = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
                nets.append((addr.split("%")[0], int(ip.network_prefix)))
    return nets


def classify_path(host: str, networks: list[tuple[str, int]] | None = None) -> str:
    """Return "lan" if host is in one of our interfaces' subnets, else "direct"."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return DIRECT
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for addr, prefix in local_networks() if networks is None else networks:
        with contextlib.suppress(ValueError):
            if ip in ipaddress.ip_network(f"{addr}/{prefix}", strict=False):
                return LAN
    return DIRECT


@dataclass
class _Role:
    """What a circuit connection we opened is for: `cconn` (dial) or `cacc` (accept)."""

    relay_id: str
    #: The far end: the target we dial, or the source that dials us.
    peer_id: str
    circuit: int | None
    done: asyncio.Future[PeerConnection]


class RelayService:
    """Both sides of relaying for one node; owns every circuit connection until handoff."""

    def __init__(
        self,
        manager: ConnectionManager,
        enabled: bool,
        unlimited: Callable[[str], bool] | None = None,
    ) -> None:
        """`enabled`: relay for others (`--relay`); `unlimited(peer_id)`: serve without limits."""
        self._manager = manager
        self._loop = asyncio.get_running_loop()
        self.book = RelayBook(unlimited) if enabled else None
        self.keeper = ReservationKeeper()
        #: Relay peer id -> the address to open circuit connections to.
        self.relay_addrs: dict[str, tuple[str, int]] = {}
        #: `--relay-peer` addresses ("host:port", as the manager's dial keys).
        self._relay_keys: set[str] = set()
        #: `--relay-peer` addresses whose node turned out not to relay (warned once).
        self._not_relays: set[str] = set()
        #: Circuit connections we opened, by connection.
        self._roles: dict[PeerConnection, _Role] = {}
        #: Relay side: circuit connections taken over, waiting for `cconn`/`cacc`.
        self._setup: dict[PeerConnection, asyncio.TimerHandle] = {}
        #: Relay side: the dialer's connection of each circuit waiting for `cacc`.
        self._waiting: dict[int, PeerConnection] = {}
        self._splices: dict[int, _Splice] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False

    # --- configuration --------------------------------------------------------------

    def add_relay_peer(self, host: str, port: int) -> None:
        """A `--relay-peer`: dial it as a manual peer and reserve there once connected."""
        self._relay_keys.add(f"{host}:{port}")
        self._manager.add_manual_peer(host, port)

    def use_relay(self, relay_id: str, host: str, port: int) -> bool:
        """A relay named by a contact or an invite: dial it and reserve there once connected.

        Returns False if we already keep RELAY_MAX_KNOWN relays (this one is not used).
        """
        if not self.keeper.add_relay(relay_id):
            return False
        self.relay_addrs[relay_id] = (host, port)
        self._manager.add_manual_peer(host, port)
        conn = self._manager.peers.get(relay_id)
        if conn is not None and conn.is_open:
            self.keeper.connected(relay_id, self._loop.time())
            self._tick()
        return True

    def is_relay_link(self, peer_id: str, dial_key: str | None) -> bool:
        """Return whether a connection we dialled goes to a relay we reserve (or mean to) at."""
        return self.keeper.knows(peer_id) or (dial_key is not None and dial_key in self._relay_keys)

    def reservations(self) -> list[tuple[str, str]]:
        """Return (relay peer id, "host:port") of each relay we hold a reservation at."""
        out = []
        for relay_id in self.keeper.reserved(self._loop.time()):
            host, port = self.relay_addrs.get(relay_id, ("", 0))
            out.append((relay_id, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"))
        return out

    async def close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for conn, timer in list(self._setup.items()):
            timer.cancel()
            conn.close(Reason.QUIT)
        for conn in list(self._roles):
            conn.close(Reason.QUIT)
        for conn in list(self._waiting.values()):
            conn.close(Reason.QUIT)
        for splice in list(self._splices.values()):
            splice.shut("the relay stops")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- ordinary connections (called by the manager) --------------------------------

    def dialled(self, conn: PeerConnection, caps: tuple[str, ...]) -> None:
        """A dial completed its handshake (kept or a duplicate): a `--relay-peer` tells
        us the relay's id here, even if the connection kept is another one."""
        peer_id = conn.peer_id
        key = conn.dial_key
        if peer_id is None or key is None or key not in self._relay_keys:
            return
        if m.RELAY_CAP not in caps:
            if key not in self._not_relays:  # said once per address: it redials for ever
                self._not_relays.add(key)
                log.warning("--relay-peer %s is a chinwag node that does not relay", key)
            return
        host, _, port = key.rpartition(":")
        self.relay_addrs[peer_id] = (host.strip("[]"), int(port))
        if self.keeper.add_relay(peer_id) and peer_id in self._manager.peers:
            self.keeper.connected(peer_id, self._loop.time())
            self._tick()

    def peer_up(self, conn: PeerConnection, caps: tuple[str, ...]) -> None:
        """A peer connected: if it is a relay we keep a reservation at, reserve there."""
        peer_id = conn.peer_id
        if peer_id is None or m.RELAY_CAP not in caps:
            return
        if conn.session.peer_port and conn.path != RELAYED:
            self.relay_addrs.setdefault(peer_id, (conn.address[0], conn.session.peer_port))
        if self.keeper.knows(peer_id):
            self.keeper.connected(peer_id, self._loop.time())
            self._tick()

    def peer_down(self, peer_id: str) -> None:
        """A peer's ordinary connection is gone: its reservation (either way) with it."""
        if self.book is not None:
            self.book.unreserve(peer_id)
        if self.keeper.knows(peer_id):
            self.keeper.disconnected(peer_id, self._loop.time())
        else:
            # Only relays we keep are remembered past their connection: any peer may say
            # `relay/1`, and throwaway ids must not grow this table.
            self.relay_addrs.pop(peer_id, None)
            self._tick()

    def frame(self, conn: PeerConnection, frame: m.RelayFrame) -> None:
        """A relay frame on an ordinary connection."""
        peer_id = conn.peer_id or ""
        now = self._loop.time()
        if isinstance(frame, m.Reserve):
            if self.book is None:
                conn.send_frame(m.ReserveNo(reason=RelayRefusal.NOT_RELAY))
                return
            answer = self.book.reserve(peer_id, conn.address[0], now, time.time())
            if isinstance(answer, m.ReserveOk):
                log.info("reservation for %s granted", peer_id[:8])
            else:
                log.info("reservation for %s refused: %s", peer_id[:8], answer.reason)
            conn.send_frame(answer)
            self._tick()
        elif isinstance(frame, m.ReserveOk):
            if self.keeper.knows(peer_id):
                log.info("reservation at relay %s: %d s", peer_id[:8], frame.ttl)
                self.keeper.granted(peer_id, frame, now)
                self._tick()
        elif isinstance(frame, m.ReserveNo):
            if self.keeper.knows(peer_id):
                log.info("relay %s refused a reservation: %s", peer_id[:8], frame.reason[:64])
                self.keeper.refused(peer_id, now)
                self._tick()
        elif isinstance(frame, m.Incoming):
            if peer_id not in self.keeper.reserved(now) or peer_id not in self.relay_addrs:
                log.debug("ignoring a circuit offer from %s (no reservation there)", peer_id[:8])
                return
            if len(self._tasks) >= limits.RELAY_MAX_CIRCUITS_PER_PEER:
                # A relay (hostile or busy) cannot make us open connections without bound.
                log.info("ignoring a circuit offer from %s: too many being opened", peer_id[:8])
                return
            self._spawn(self._open(peer_id, frame.src, frame.circuit))
        # cconn/cacc/cok/cno on an ordinary connection: the session refused them already.

    # --- the client side: dialling through a relay ----------------------------------

    async def dial_via(
        self, relay_id: str, relay_addr: tuple[str, int], target: str
    ) -> PeerConnection:
        """Open a circuit to target through the relay; return the end-to-end connection
        once its handshake started (peer_joined follows as for any connection).

        Raises RelayError if the relay refuses or does not answer in time.
        """
        return await self._circuit(relay_id, relay_addr, target, None)

    async def _open(self, relay_id: str, src: str, circuit: int) -> None:
        try:
            await self._circuit(relay_id, self.relay_addrs[relay_id], src, circuit)
        except RelayError as exc:
            log.info("could not take a circuit from %s via %s: %s", src[:8], relay_id[:8], exc)

    async def _circuit(
        self, relay_id: str, addr: tuple[str, int], peer_id: str, circuit: int | None
    ) -> PeerConnection:
        done: asyncio.Future[PeerConnection] = self._loop.create_future()
        local = self._manager.local_info()
        circuit_local = LocalInfo.create(
            local.identity,
            local.noise_static,
            local.nick,
            local.listen_port,
            (*local.caps, m.CIRCUIT_CAP),
        )
        session = Session(circuit_local, True, self._loop.time(), relay_id)
        conn = PeerConnection(self, session)
        self._roles[conn] = _Role(relay_id, peer_id, circuit, done)
        try:
            try:
                await asyncio.wait_for(
                    self._loop.create_connection(lambda: conn, addr[0], addr[1]),
                    limits.CONNECT_TIMEOUT_S,
                )
            except (OSError, TimeoutError) as exc:
                raise RelayError(f"cannot reach relay {relay_id[:8]}: {exc}") from None
            try:
                return await asyncio.wait_for(
                    asyncio.shield(done), limits.HANDSHAKE_TIMEOUT_S + limits.RELAY_CIRCUIT_SETUP_S
                )
            except TimeoutError:
                raise RelayError(f"relay {relay_id[:8]} did not answer in time") from None
        finally:
            if not done.done():
                done.cancel()
                conn.close(Reason.QUIT)
            self._roles.pop(conn, None)

    # --- ConnectionOwner, for circuit connections -----------------------------------

    def connection_made(self, conn: PeerConnection) -> None:
        if self._closing and conn.transport is not None:
            conn.transport.abort()

    def session_event(self, conn: PeerConnection, event: Event) -> None:
        role = self._roles.get(conn)
        if role is not None:
            self._client_event(conn, role, event)
        elif isinstance(event, FrameReceived) and conn in self._setup:
            self._relay_frame(conn, event.frame)

    def session_closed(self, conn: PeerConnection, closed: Closed) -> None:
        role = self._roles.pop(conn, None)
        if role is not None and not role.done.done():
            role.done.set_exception(RelayError(f"relay connection closed: {closed.reason}"))
        timer = self._setup.pop(conn, None)
        if timer is not None:
            timer.cancel()
        for cid, waiting in list(self._waiting.items()):
            if waiting is conn:
                del self._waiting[cid]
                if self.book is not None:
                    self.book.close(cid)

    def _client_event(self, conn: PeerConnection, role: _Role, event: Event) -> None:
        if isinstance(event, HandshakeComplete):
            if role.circuit is None:
                conn.send_frame(m.Connect(target=role.peer_id))
            else:
                conn.send_frame(m.Accept(circuit=role.circuit))
        elif isinstance(event, FrameReceived) and isinstance(event.frame, m.CircuitNo):
            if not role.done.done():
                role.done.set_exception(
                    RelayError(f"relay {role.relay_id[:8]} refused: {event.frame.reason[:64]}")
                )
            conn.close(Reason.QUIT)
        elif isinstance(event, FrameReceived) and isinstance(event.frame, m.CircuitOk):
            detached = conn.detach()
            self._roles.pop(conn, None)
            if detached is None:
                return
            transport, rest = detached
            # The circuit's own session: the dialer initiates, each end checks the other's id.
            session = Session(
                self._manager.local_info(), role.circuit is None, self._loop.time(), role.peer_id
            )
            e2e = PeerConnection(self._manager, session)
            e2e.path, e2e.via, e2e.limited = RELAYED, role.relay_id, event.frame.max_bytes > 0
            transport.set_protocol(e2e)
            e2e.connection_made(transport)
            if rest:
                e2e.data_received(rest)
            log.info(
                "circuit to %s via %s is up%s",
                role.peer_id[:8],
                role.relay_id[:8],
                " (limited)" if e2e.limited else "",
            )
            if not role.done.done():
                role.done.set_result(e2e)

    # --- the relay side --------------------------------------------------------------

    def take_circuit_connection(self, conn: PeerConnection) -> None:
        """The manager hands over an inbound connection whose hello said `circuit/1`."""
        conn.manager = self
        ip = conn.address[0]
        if (
            len(self._setup) + len(self._splices) >= 2 * limits.RELAY_MAX_CIRCUITS
            # One host's silent circuit connections must not fill every setup slot.
            or sum(1 for c in self._setup if c.address[0] == ip) >= limits.RELAY_MAX_CIRCUITS_PER_IP
        ):
            conn.close(Reason.QUIT)
            return
        self._setup[conn] = self._loop.call_later(
            limits.RELAY_CIRCUIT_SETUP_S, self._setup_expired, conn
        )

    def _setup_expired(self, conn: PeerConnection) -> None:
        if self._setup.pop(conn, None) is not None:
            conn.close(Reason.QUIT)

    def _refuse(self, conn: PeerConnection, reason: RelayRefusal) -> None:
        timer = self._setup.pop(conn, None)
        if timer is not None:
            timer.cancel()
        conn.send_frame(m.CircuitNo(reason=reason))
        if conn.transport is not None:
            # Reading was paused for the splice: read again, or the dialler's end of stream
            # is never seen and the half-closed socket waits for its abort.
            conn.transport.resume_reading()
        conn.close(Reason.QUIT)

    def _relay_frame(self, conn: PeerConnection, frame: m.Frame) -> None:
        if not isinstance(frame, m.Connect | m.Accept):
            return
        if conn.transport is not None:
            # The session stopped reading; nothing more is read until the splice.
            conn.transport.pause_reading()
        peer_id = conn.peer_id or ""
        now = self._loop.time()
        if self.book is None:
            self._refuse(conn, RelayRefusal.NOT_RELAY)
            return
        if isinstance(frame, m.Connect):
            result = self.book.connect(peer_id, frame.target, now, conn.address[0])
            if isinstance(result, m.CircuitNo):
                log.info("no circuit %s -> %s: %s", peer_id[:8], frame.target[:8], result.reason)
                self._refuse(conn, RelayRefusal(result.reason))
                return
            target = self._manager.peers.get(frame.target)
            if target is None or not target.is_open:
                self.book.close(result.id)
                self._refuse(conn, RelayRefusal.TARGET_GONE)
                return
            # From now on the book's setup deadline bounds it (and answers `cno` at the end).
            timer = self._setup.pop(conn, None)
            if timer is not None:
                timer.cancel()
            self._waiting[result.id] = conn
            target.send_frame(m.Incoming(circuit=result.id, src=peer_id))
            self._tick()
            return
        accepted = self.book.accept(peer_id, frame.circuit, now)
        if isinstance(accepted, m.CircuitNo):
            # Not offered to this peer (circuit ids are guessable counters): the dialer
            # stays waiting for the real target.
            self._refuse(conn, RelayRefusal.UNKNOWN_CIRCUIT)
            return
        dialer = self._waiting.pop(frame.circuit, None)
        if dialer is None or not dialer.is_open:
            self.book.close(accepted.id)
            self._refuse(conn, RelayRefusal.UNKNOWN_CIRCUIT)
            return
        for end in (dialer, conn):
            timer = self._setup.pop(end, None)
            if timer is not None:
                timer.cancel()
            end.send_frame(self.book.ok_frame(accepted))
        a, b = dialer.detach(), conn.detach()
        if a is None or b is None:
            self.book.close(accepted.id)
            for end in (dialer, conn):
                end.close(Reason.QUIT)
            return
        splice = _Splice(self, accepted, a, b)
        self._splices[accepted.id] = splice
        log.info(
            "circuit %d %s -> %s spliced%s",
            accepted.id,
            accepted.src[:8],
            accepted.dst[:8],
            " (limited)" if accepted.limited else "",
        )
        splice.start()
        self._tick()

    def splice_closed(self, circuit_id: int) -> None:
        self._splices.pop(circuit_id, None)
        if self.book is not None:
            self.book.close(circuit_id)

    # --- one timer for the book and the keeper ---------------------------------------

    def _tick(self) -> None:
        if self._closing:
            return
        now = self._loop.time()
        if self.book is not None:
            for cid in self.book.due(now):
                waiting = self._waiting.pop(cid, None)
                if waiting is not None:
                    self.book.close(cid)
                    self._refuse(waiting, RelayRefusal.TARGET_GONE)
                splice = self._splices.get(cid)
                if splice is not None:
                    splice.shut("its time limit")
                self.book.close(cid)
        for relay_id in self.keeper.due(now):
            conn = self._manager.peers.get(relay_id)
            if conn is not None and conn.is_open:
                conn.send_frame(m.Reserve())
            else:
                self.keeper.disconnected(relay_id, now)
        times = [t for t in (self.keeper.get_timer(),) if t is not None]
        if self.book is not None and (t := self.book.get_timer()) is not None:
            times.append(t)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if times:
            self._timer = self._loop.call_at(max(min(times), now + 0.01), self._tick)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Splice:
    """Two sockets copied into each other raw, with the circuit's byte limits counted."""

    def __init__(
        self,
        service: RelayService,
        circuit: Circuit,
        src: tuple[asyncio.Transport, bytes],
        dst: tuple[asyncio.Transport, bytes],
    ) -> None:
        self.service = service
        self.circuit = circuit
        self.ends = (_SpliceEnd(self, True, src[0]), _SpliceEnd(self, False, dst[0]))
        self._rest = (src[1], dst[1])
        self.closed = False

    def start(self) -> None:
        for end in self.ends:
            end.transport.set_protocol(end)
            end.transport.set_write_buffer_limits(high=limits.RELAY_SPLICE_HIGH_WATER)
            # Each chunk leaves at once (the loop sets this only on some sockets).
            sock = end.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for end, rest in zip(self.ends, self._rest, strict=True):
            if rest:
                self.forward(end.from_src, rest)
        for end in self.ends:
            if not self.closed:
                end.transport.resume_reading()

    def other(self, end: _SpliceEnd) -> _SpliceEnd:
        return self.ends[1] if end is self.ends[0] else self.ends[0]

    def forward(self, from_src: bool, data: bytes) -> None:
        if self.closed:
            return
        book = self.service.book
        assert book is not None
        allowed = book.allow(self.circuit.id, from_src, len(data))
        out = self.ends[1] if from_src else self.ends[0]
        if allowed:
            out.transport.write(data[:allowed] if allowed < len(data) else data)
        if allowed < len(data) or book.exhausted(self.circuit.id):
            self.shut("its byte limit")

    def shut(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("closing circuit %d: %s", self.circuit.id, why)
        loop = asyncio.get_running_loop()
        for end in self.ends:
            if not end.transport.is_closing():
                end.transport.close()  # flushes what was allowed through, then closes
                loop.call_later(1.0, end.transport.abort)
        self.service.splice_closed(self.circuit.id)


class _SpliceEnd(asyncio.Protocol):
    """One socket of a splice: what it reads goes to the other; its back-pressure pauses it."""

    def __init__(self, splice: _Splice, from_src: bool, transport: asyncio.Transport) -> None:
        self.splice = splice
        self.from_src = from_src
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.splice.forward(self.from_src, data)

    def eof_received(self) -> bool | None:
        self.splice.shut("an end closed it")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.splice.shut("an end went away")

    def pause_writing(self) -> None:
        # This end does not take bytes as fast as the other sends them: stop reading there.
        other = self.splice.other(self).transport
        if not other.is_closing():
            other.pause_reading()

    def resume_writing(self) -> None:
        other = self.splice.other(self).transport
        if not other.is_closing():
            other.resume_reading()

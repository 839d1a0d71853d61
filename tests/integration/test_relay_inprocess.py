"""Relays with in-process nodes over real loopback sockets (docs/reach.md "Relays", "Paths").

In process, so a test can plug in the relay's contacts and watch every event; the
three-process tests (test_e2e_relay.py) cover the command line and the JSON API.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from it_support import until

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.crypto.noise import generate_static_private
from chinwag.errors import UsageError
from chinwag.net.connection import PeerConnection
from chinwag.net.manager import ConnectionManager
from chinwag.net.relay import RelayError, RelayService, _Splice
from chinwag.node import Node
from chinwag.protocol import messages as msg
from chinwag.protocol.invite import make_invite
from chinwag.protocol.relay import Circuit, RelayBook
from chinwag.protocol.session import HandshakeComplete, LocalInfo, Session
from node_support import make_node as loopback_node

#: Seconds to wait for anything on loopback.
WAIT_S = 10.0

pytestmark = pytest.mark.timeout(60)


class Made:
    """A node and every event it emitted."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.events: list[ev.NodeEvent] = []
        node.subscribe(self.events.append)

    @property
    def id(self) -> str:
        return self.node.identity.peer_id

    def _running_manager(self) -> ConnectionManager:
        return self.node._running().manager

    def seen(self, kind: type[ev.NodeEvent], **fields: object) -> list[ev.NodeEvent]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())
        ]


Maker = Callable[..., Made]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Maker]:
    made: list[Made] = []

    def factory(name: str, **config: object) -> Made:
        node = loopback_node(tmp_path / name, name)
        # Every address is reachable on loopback: with the gossip mesh, a peer known from its
        # presence record would be dialled directly, and no path would stay relayed. These
        # tests are about relayed paths (the NAT lab, tests/lab, runs them with the mesh on).
        node.config.mesh = False
        for key, value in config.items():
            setattr(node.config, key, value)
        m = Made(node)
        made.append(m)
        return m

    yield factory
    for m in reversed(made):
        await m.node.stop()


async def _relayed_pair(make: Maker, **relay_config: object) -> tuple[Made, Made, Made]:
    """Start relay R (no chat) and two nodes holding reservations there; the one with the
    higher peer id dials the other through R. Returns (R, dialer, target)."""
    r = make("relay", relay=True, chat=False, **relay_config)
    await r.node.start()
    addr = [("127.0.0.1", r.node.port)]
    x, y = make("alice", relay_peers=addr), make("bob", relay_peers=addr)
    for n in (x, y):
        await n.node.start()
    for n in (x, y):
        await until(lambda n=n: [rid for rid, _ in n.node.reservations()] == [r.id], "reserved")
    dialer, target = (x, y) if x.id > y.id else (y, x)
    await dialer.node.connect_via(target.id, r.id)
    await until(
        lambda: (
            dialer.seen(ev.PeerJoined, peer_id=target.id)
            and target.seen(ev.PeerJoined, peer_id=dialer.id)
        ),
        "joined through the relay",
    )
    return r, dialer, target


def _path(node: Node, peer_id: str) -> tuple[str, str | None]:
    info = next(p for p in node.peers().peers if p.peer_id == peer_id)
    return info.path, info.via


async def test_an_unlimited_circuit_between_two_contacts_carries_a_file(
    make: Maker, tmp_path: Path
) -> None:
    r, a, b = await _relayed_pair(make, relay_contacts_unlimited=True)
    # The relay adds both as contacts (their invites) from now on; the circuit above was
    # limited, so make a new one.
    for n in (a, b):
        r.node.add_contact(make_invite(n.node.identity, "n", [], [], 2**40))
    a.node._running().manager.peers[b.id].close("quit")
    await until(lambda: a.seen(ev.PeerLeft, peer_id=b.id), "the limited circuit closed")
    await a.node.connect_via(b.id, r.id)
    await until(lambda: len(a.seen(ev.PeerJoined, peer_id=b.id)) == 2, "joined again")
    assert _path(a.node, b.id) == ("relayed", r.id)

    data = bytes(range(256)) * 4096  # 1 MiB: eight times what a limited circuit carries
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    offer = await a.node.send_file(b.id, str(path))
    await until(lambda: b.seen(ev.FileOffer, id=offer.id), "offer reached bob")
    b.node.accept_file(offer.id, str(tmp_path / "in"))
    await until(lambda: b.seen(ev.FileDone, id=offer.id), "file done", timeout=30)
    assert (tmp_path / "in" / "big.bin").read_bytes() == data
    assert not b.seen(ev.Alert)
    assert len(a.seen(ev.PeerJoined, peer_id=b.id)) == 2  # the one circuit carried it all


async def test_a_direct_connection_replacing_a_relayed_one_emits_path(make: Maker) -> None:
    r, dialer, target = await _relayed_pair(make)
    assert _path(dialer.node, target.id) == ("relayed", r.id)
    assert _path(target.node, dialer.id) == ("relayed", r.id)
    # One connection per pair: the one dialled by the lower id (the target) wins, so a
    # direct dial by the target replaces the relayed connection on both sides.
    target.node._running().manager.add_manual_peer("127.0.0.1", dialer.node.port)
    for x, other in ((dialer, target), (target, dialer)):
        await until(lambda x=x, o=other: x.seen(ev.PathChanged, peer_id=o.id), "path event")
        assert x.seen(ev.PathChanged, peer_id=other.id) == [
            ev.PathChanged(peer_id=other.id, path="lan", via=None)
        ]
        assert _path(x.node, other.id) == ("lan", None)
        assert not x.seen(ev.PeerLeft, peer_id=other.id)


async def test_a_splice_stops_reading_a_side_whose_other_end_does_not_read() -> None:
    """Back-pressure: the relay buffers at most about RELAY_SPLICE_HIGH_WATER towards a slow
    end, reads on once it drains, and delivers every byte in order."""
    loop = asyncio.get_running_loop()
    book = RelayBook(unlimited=lambda _peer: True)
    book.reserve("target", "127.0.0.1", 0.0, 0.0)
    circuit = book.connect("dialer", "target", 0.0)
    assert isinstance(circuit, Circuit)
    book.accept("target", circuit.id, 0.0)
    service = RelayService.__new__(RelayService)  # only the book and the splice table
    service.book, service._splices = book, {}
    src_far, src_near = socket.socketpair()
    dst_far, dst_near = socket.socketpair()
    ends = []
    for near in (src_near, dst_near):
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=near)
        transport.pause_reading()  # as the relay holds them before the splice
        ends.append((transport, b""))
    splice = _Splice(service, circuit, ends[0], ends[1])
    service._splices[circuit.id] = splice
    splice.start()

    data = bytes(range(256)) * (32 * 1024)  # 8 MiB
    _, writer = await asyncio.open_connection(sock=src_far)
    writer.write(data)  # far more than the kernel and the relay may buffer
    src_t, dst_t = ends[0][0], ends[1][0]
    await until(lambda: not src_t.is_reading(), "the relay stopped reading the sender")
    held = dst_t.get_write_buffer_size()
    assert held <= 2 * limits.RELAY_SPLICE_HIGH_WATER, held

    reader, dst_writer = await asyncio.open_connection(sock=dst_far)
    got = await asyncio.wait_for(reader.readexactly(len(data)), WAIT_S)
    assert got == data
    assert circuit.sent == [len(data), 0]
    for w in (writer, dst_writer):
        w.close()
    splice.shut("test over")


async def test_a_relay_says_why_it_makes_no_circuit(make: Maker) -> None:
    r, dialer, target = await _relayed_pair(make)
    nobody = Identity.generate().peer_id
    with pytest.raises(RelayError, match="no_reservation"):
        await dialer.node.connect_via(nobody, r.id)
    # A node that does not relay refuses circuits (target has no --relay) ...
    host = ("127.0.0.1", target.node.port)
    with pytest.raises(RelayError, match="not_relay"):
        await dialer._running_manager().dial_via(target.id, host, r.id)
    # ... and a relay that is not the peer we meant fails the handshake's id check.
    with pytest.raises(RelayError, match="closed"):
        await dialer._running_manager().dial_via(nobody, ("127.0.0.1", r.node.port), target.id)
    # The relay and the circuit between the two are unharmed.
    assert _path(dialer.node, target.id) == ("relayed", r.id)
    # A second circuit to a connected peer would only lose the tie-break: the user is told.
    with pytest.raises(UsageError, match=r"already connected to \S+ \(relayed via"):
        await dialer.node.connect_via(target.id, r.id)


async def test_an_accept_for_another_peers_circuit_is_refused_and_leaves_it_intact(
    make: Maker,
) -> None:
    """Circuit ids are small counters: a stranger who sends `cacc` for one it was not
    offered is refused, and the real target still takes the circuit afterwards."""
    r = make("relay", relay=True, chat=False)
    await r.node.start()
    addr = ("127.0.0.1", r.node.port)
    dialer, target, mallory = (make(n, relay_peers=[addr]) for n in ("alice", "bob", "mallory"))
    for n in (dialer, target, mallory):
        await n.node.start()
    await until(lambda: target.node.reservations(), "bob reserved")
    # Bob sits on the offer (a slow network) until Mallory has had her try.
    offers: list[msg.Incoming] = []
    bob_relay = target._running_manager().relay
    real_frame = bob_relay.frame

    def hold_offers(conn: PeerConnection, frame: msg.RelayFrame) -> None:
        if isinstance(frame, msg.Incoming):
            offers.append(frame)
        else:
            real_frame(conn, frame)

    bob_relay.frame = hold_offers  # type: ignore[method-assign]
    dial = asyncio.create_task(dialer.node.connect_via(target.id, r.id))
    await until(lambda: offers, "the relay offered bob the circuit")
    offer = offers[0]
    with pytest.raises(RelayError, match="unknown_circuit"):
        await mallory._running_manager().relay._circuit(r.id, addr, dialer.id, offer.circuit)
    await bob_relay._circuit(r.id, addr, offer.src, offer.circuit)
    await asyncio.wait_for(dial, WAIT_S)
    await until(
        lambda: (
            dialer.seen(ev.PeerJoined, peer_id=target.id)
            and target.seen(ev.PeerJoined, peer_id=dialer.id)
        ),
        "joined through the relay",
    )
    assert _path(dialer.node, target.id) == ("relayed", r.id)


async def test_a_contact_reached_only_through_a_relay_comes_back_after_the_relay_restarts(
    make: Maker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A contact whose invite names only a relay: its circuit ends (the relay restarts, as
    a limited circuit ends at its limits); we dial it through the relay again, backing off,
    until it is back."""
    monkeypatch.setattr(limits, "RELAY_RETRY_BASE_S", 0.1)  # bob reserves again soon
    monkeypatch.setattr(limits, "CONTACT_RELAY_RETRY_BASE_S", 0.1)
    r = make("relay", relay=True, chat=False)
    await r.node.start()
    port = r.node.port
    addr = ("127.0.0.1", port)
    a, b = make("alice", relay_peers=[addr]), make("bob", relay_peers=[addr])
    for n in (a, b):
        await n.node.start()
    await until(lambda: b.node.reservations(), "bob reserved")
    # Bob's invite naming only the relay (as behind a NAT: no address of his is reachable).
    code = make_invite(b.node.identity, "bob", [], [(r.id, f"127.0.0.1:{port}")], 2**40)
    a.node.add_contact(code)
    await until(lambda: a.seen(ev.PeerJoined, peer_id=b.id), "bob reached through the relay")
    assert _path(a.node, b.id) == ("relayed", r.id)

    await r.node.stop()
    await until(lambda: a.seen(ev.PeerLeft, peer_id=b.id), "the circuit ended")
    r2 = make("relay", relay=True, chat=False)  # the same identity, on the same port
    r2.node.config.port = port
    await r2.node.start()
    await until(
        lambda: len(a.seen(ev.PeerJoined, peer_id=b.id)) == 2, "bob back", timeout=WAIT_S * 2
    )
    assert _path(a.node, b.id) == ("relayed", r.id)


class _Silent:
    """The owner of a circuit connection that completes its handshake and says nothing."""

    def __init__(self) -> None:
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, conn: PeerConnection) -> None:
        pass

    def session_event(self, conn: PeerConnection, event: object) -> None:
        if isinstance(event, HandshakeComplete) and not self.open.done():
            self.open.set_result(None)

    def session_closed(self, conn: PeerConnection, closed: object) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed"))


async def test_one_hosts_silent_circuit_connections_leave_room_for_others(make: Maker) -> None:
    r, dialer, target = await _relayed_pair(make)
    dialer.node._running().manager.peers[target.id].close("quit")
    await until(lambda: dialer.seen(ev.PeerLeft, peer_id=target.id), "the circuit closed")
    # Mallory's few hosts (127.0.0.2-6; each may start 30 handshakes at once) open more
    # circuit connections than the relay holds in all, and say nothing on them.
    loop = asyncio.get_running_loop()
    mallory = Identity.generate()
    info = LocalInfo.create(mallory, generate_static_private(), "mallory", 0, (msg.CIRCUIT_CAP,))
    held = []
    for i in range(5 * int(limits.HANDSHAKES_PER_HOST_BURST)):
        owner = _Silent()
        conn = PeerConnection(owner, Session(info, True, loop.time(), r.id))  # type: ignore[arg-type]
        host = f"127.0.0.{2 + i % 5}"
        await loop.create_connection(
            lambda c=conn: c, "127.0.0.1", r.node.port, local_addr=(host, 0)
        )
        held.append(conn)
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(owner.open, WAIT_S)
    # Alice (127.0.0.1) still gets her circuit while they sit there.
    await dialer.node.connect_via(target.id, r.id)
    await until(lambda: len(dialer.seen(ev.PeerJoined, peer_id=target.id)) == 2, "joined again")
    for conn in held:
        conn.close("quit")


async def test_a_contact_that_moves_to_a_direct_path_is_remembered_there(make: Maker) -> None:
    r = make("relay", relay=True, chat=False)
    await r.node.start()
    addr = ("127.0.0.1", r.node.port)
    a, b = make("alice", relay_peers=[addr]), make("bob", relay_peers=[addr])
    for n in (a, b):
        await n.node.start()
    await until(lambda: b.node.reservations(), "bob reserved")
    code = make_invite(b.node.identity, "bob", [], [(r.id, f"127.0.0.1:{r.node.port}")], 2**40)
    a.node.add_contact(code)
    await until(lambda: a.seen(ev.PeerJoined, peer_id=b.id), "bob reached through the relay")
    # Bob dials Alice directly (as a punch would): the direct connection replaces the circuit.
    b._running_manager().add_manual_peer("127.0.0.1", a.node.port)
    await until(lambda: a.seen(ev.PathChanged, peer_id=b.id), "path event")
    # Where Bob is reached now is kept: the next start dials it before any relay.
    row = a.node._running().contacts._contacts[b.id]
    assert row.addrs[:1] == [f"127.0.0.1:{b.node.port}"]
    stored = {c.peer_id: c for c in a.node._running().store.contacts()}
    assert stored[b.id].addrs == row.addrs


async def test_a_relay_keeps_every_client_beyond_the_mesh_degree(
    make: Maker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay's clients are in none of its meshes (it has no rooms): with the mesh's degree
    rule (close non-mesh connections above D_hi + margin) it would drop their reservations."""
    monkeypatch.setattr(limits, "RELAY_MAX_RESERVATIONS_PER_IP", 64)  # all on 127.0.0.1
    r = make("relay", relay=True, chat=False, mesh=True)
    await r.node.start()
    addr = [("127.0.0.1", r.node.port)]
    count = limits.MESH_D_HI + limits.MESH_CONN_MARGIN + 3
    clients = [make(f"c{i}", relay_peers=addr, mesh=True) for i in range(count)]
    for c in clients:
        await c.node.start()
    for c in clients:
        await until(lambda c=c: c.node.reservations() != [], "reserved", timeout=WAIT_S * 2)
    # A check that nothing happens: three heartbeats of a (would-be) mesh close nobody.
    await asyncio.sleep(3 * limits.MESH_HEARTBEAT_S)
    assert len(r.node.peers().peers) == count
    assert all(c.node.reservations() for c in clients)


async def test_a_relay_we_do_not_keep_is_forgotten_with_its_connection(make: Maker) -> None:
    """Any peer may say `relay/1`: only relays we reserve at are remembered past their
    connection (throwaway ids must not grow the table)."""
    r = make("relay", relay=True)
    await r.node.start()
    a = make("alice")
    await a.node.start()
    relays = a.node._running().manager.relay
    a.node._running().manager.add_manual_peer("127.0.0.1", r.node.port)
    await until(lambda: r.id in relays.relay_addrs, "the relay's address noted")
    await r.node.stop()
    await until(lambda: a.seen(ev.PeerLeft, peer_id=r.id), "the relay gone")
    assert r.id not in relays.relay_addrs

"""Port reuse and the relayed -> direct upgrade, with real nodes on loopback (one namespace).

The relayed connection is tests/lab/splice.py (a stand-in relay circuit); the punch then
runs for real over loopback, where nothing is filtered, so it must succeed at the first try.
The NAT lab version is tests/lab/test_punch_nat.py.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from it_support import until

from chinwag import events as ev
from chinwag.net.punch import connect_from, reuse_socket, simultaneous_open
from chinwag.node import Node

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splice import Splice, splice_socket

from node_support import make_node as loopback_node

WAIT_S = 10.0
RELAY_ID = "r" * 51 + "a"


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(name: str, peers: list[tuple[str, int]] | None = None) -> Node:
        node = loopback_node(tmp_path / name, name, peers=peers)
        made.append(node)
        return node

    yield make
    for node in reversed(made):
        await node.stop()


def events(node: Node) -> list[ev.NodeEvent]:
    seen: list[ev.NodeEvent] = []
    node.subscribe(seen.append)
    return seen


def manager(node: Node):  # type: ignore[no-untyped-def]
    assert node._run is not None
    return node._run.manager


async def test_dials_leave_from_the_listening_port(make_node: Callable[..., Node]) -> None:
    """What a peer sees is our listening port's mapping (the one a punch uses), and it says so."""
    a = make_node("alice")
    await a.start()
    b = make_node("bob", peers=[("127.0.0.1", a.port)])
    await b.start()
    await until(lambda: b.identity.peer_id in manager(a).peers, "bob connected")
    conn = manager(a).peers[b.identity.peer_id]
    assert conn.address == ("127.0.0.1", b.port)
    # Each side tells the other where it sees it (Observed).
    await until(lambda: a.identity.peer_id in manager(b).observed, "observed address told")
    assert manager(b).observed[a.identity.peer_id] == f"127.0.0.1:{b.port}"
    # Loopback is no public address: a punch offers only public ones (and UPnP's).
    assert manager(b).own_addrs() == ()
    manager(b).observed["x"] = f"203.0.113.9:{b.port}"
    assert manager(b).own_addrs() == (f"203.0.113.9:{b.port}",)


async def test_a_busy_four_tuple_falls_back_to_any_port() -> None:
    """A second connection to the same address cannot share our port: it dials as before."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        dest = server.getsockname()[1]
        with socket.socket() as ours:
            ours.bind(("127.0.0.1", 0))
            ours.listen()
            port = ours.getsockname()[1]
        first = await connect_from("127.0.0.1", port, "127.0.0.1", dest, 2.0)
        second = await connect_from("127.0.0.1", port, "127.0.0.1", dest, 2.0)
        try:
            assert first.getsockname()[1] == port
            assert second.getsockname()[1] != port
        finally:
            first.close()
            second.close()


async def test_dialled_and_punched_sockets_send_at_once() -> None:
    """TCP_NODELAY on every socket we dial or punch: asyncio's own loop does not set it on
    sockets made by hand, so a chat frame would wait for Nagle's algorithm."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        dest = server.getsockname()[1]
        ports = []
        for _ in range(2):
            with socket.socket() as ours:
                ours.bind(("127.0.0.1", 0))
                ports.append(ours.getsockname()[1])
        reused = await connect_from("127.0.0.1", ports[0], "127.0.0.1", dest, 2.0)
        plain = await connect_from("127.0.0.1", 0, "127.0.0.1", dest, 2.0)
        punched, _busy = await simultaneous_open("127.0.0.1", ports[1], [("127.0.0.1", dest)], 2.0)
        assert punched is not None
        try:
            for sock in (reused, plain, punched):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), sock
        finally:
            for sock in (reused, plain, punched):
                sock.close()


async def test_simultaneous_open_gives_one_connection_between_the_listening_ports() -> None:
    """Both ends dial each other from their listening ports at once: they end up with one
    TCP connection (a true simultaneous open, or one end's SYN reached the other's listener
    first, and that end's own connect then finds the 4-tuple taken: `busy`)."""
    listeners = [reuse_socket("127.0.0.1", 0) for _ in range(2)]
    for lst in listeners:
        lst.listen()
    pa, pb = (lst.getsockname()[1] for lst in listeners)
    try:
        (sa, busy_a), (sb, busy_b) = await asyncio.gather(
            simultaneous_open("127.0.0.1", pa, [("127.0.0.1", pb)], 2.0),
            simultaneous_open("127.0.0.1", pb, [("127.0.0.1", pa)], 2.0),
        )
        ends = [s for s in (sa, sb) if s is not None]
        assert ends, "no end connected"
        if sa is None:
            assert busy_a
        if sb is None:
            assert busy_b
        for end in ends:
            assert end.getsockname()[1] in (pa, pb)
            assert end.getpeername()[1] in (pa, pb)
            end.close()
    finally:
        for lst in listeners:
            lst.close()


async def test_a_second_node_cannot_share_the_listening_port(
    make_node: Callable[..., Node], tmp_path: Path
) -> None:
    """SO_REUSEPORT on the listener must not let another node split its connections."""
    a = make_node("alice")
    await a.start()
    c = loopback_node(tmp_path / "carol", "carol", port=a.port)
    with pytest.raises(OSError) as info:
        await c.start()
    assert info.value.errno == errno.EADDRINUSE


async def relayed_pair(
    make_node: Callable[..., Node], splice: Splice, punch: bool = True
) -> tuple[Node, Node, list[ev.NodeEvent], list[ev.NodeEvent]]:
    """Two nodes joined only through the splice; alice dialled the circuit."""
    a = make_node("alice")
    b = make_node("bob")
    a.config.punch = b.config.punch = punch
    a_events, b_events = events(a), events(b)
    await a.start()
    await b.start()
    for node in (a, b):
        # What a UPnP mapping would add: the address our listener is reached at.
        manager(node).extra_addrs = lambda node=node: [f"127.0.0.1:{node.port}"]
    sa = splice_socket("127.0.0.1", splice.port, "ab")
    sb = splice_socket("127.0.0.1", splice.port, "ab")
    await manager(a).adopt(sa, True, b.identity.peer_id, "relayed", RELAY_ID)
    await manager(b).adopt(sb, False, a.identity.peer_id, "relayed", RELAY_ID)
    return a, b, a_events, b_events


def texts_from(evs: list[ev.NodeEvent], author: str) -> list[str]:
    return [e.text for e in evs if isinstance(e, ev.Message) and e.peer_id == author and not e.own]


async def test_relayed_pair_moves_to_direct_without_loss_or_reordering(
    make_node: Callable[..., Node],
) -> None:
    # The relay path is slower than the direct one, as it is in life: frames sent relayed just
    # before the switch arrive after frames sent direct just after it, unless held.
    async with Splice(delay_s=0.05) as splice:
        a, b, a_events, b_events = await relayed_pair(make_node, splice)
        a_id, b_id = a.identity.peer_id, b.identity.peer_id

        def path_seen(evs: list[ev.NodeEvent]) -> bool:
            return any(isinstance(e, ev.PathChanged) for e in evs)

        joined = [e for e in a_events + b_events if isinstance(e, ev.PeerJoined)]
        await until(
            lambda: sum(isinstance(e, ev.PeerJoined) for e in a_events + b_events) == 2,
            "relayed connection up",
        )
        # Both chat without pause from the moment the relayed connection is up until well
        # after the switch: the first messages go through the splice, the last direct.
        sent: dict[str, list[str]] = {a_id: [], b_id: []}

        async def chat(node: Node, name: str) -> None:
            n = 0
            for n in range(1, 21):  # queued at once: these leave on the relayed connection
                node.post(f"{name}{n}")
                sent[node.identity.peer_id].append(f"{name}{n}")
            extra = 0
            while extra < 30:
                n += 1
                await node.send(f"{name}{n}")
                sent[node.identity.peer_id].append(f"{name}{n}")
                if path_seen(a_events) and path_seen(b_events):
                    extra += 1

        await asyncio.wait_for(asyncio.gather(chat(a, "a"), chat(b, "b")), WAIT_S)
        relayed_bytes = splice.bytes
        # Exactly what was sent, in the order sent: nothing lost, doubled or reordered.
        for evs, author in ((b_events, a_id), (a_events, b_id)):
            try:
                await until(lambda e=evs, w=author: texts_from(e, w) == sent[w], "all, in order")
            except AssertionError:
                got = texts_from(evs, author)
                raise AssertionError(f"sent {sent[author]}\nreceived {got}") from None
        assert relayed_bytes > 0

    for node, evs, other in ((a, a_events, b_id), (b, b_events, a_id)):
        # Messages arrived on both sides of the switch: relayed before it, direct after.
        at = next(i for i, e in enumerate(evs) if isinstance(e, ev.PathChanged))
        assert texts_from(evs[:at], other) and texts_from(evs[at:], other)
        (path,) = [e for e in evs if isinstance(e, ev.PathChanged)]
        # Loopback is one of our interfaces' subnets: the direct path is called "lan".
        assert (path.peer_id, path.path, path.via) == (other, "lan", None)
        # No flap: one join, no leave.
        assert [type(e) for e in evs if isinstance(e, ev.PeerJoined | ev.PeerLeft)] == [
            ev.PeerJoined
        ]
        conn = manager(node).peers[other]
        assert conn.path == "lan" and conn.address[0] == "127.0.0.1"
    assert len(joined) <= 2


async def test_no_punch_stays_relayed(make_node: Callable[..., Node]) -> None:
    """`--no-punch` on both: nobody starts a punch, the pair stays relayed."""
    async with Splice() as splice:
        a, b, a_events, _ = await relayed_pair(make_node, splice, punch=False)
        b_id = b.identity.peer_id
        await until(lambda: b_id in manager(a).peers, "relayed connection up")
        conn = manager(a).peers[b_id]
        assert conn.path == "relayed" and conn.punch is None
        await a.send("hello")
        await until(lambda: manager(a).peers[b_id].path == "relayed", "still relayed")
        assert not [e for e in a_events if isinstance(e, ev.PathChanged)]

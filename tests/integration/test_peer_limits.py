"""The peer limit and the handshake slots under throwaway identities (hardening, issue 7 and 11).

In-process nodes over real loopback sockets (so the limits can be lowered with monkeypatch),
scripted peers (hostile_peer.HostilePeer) as the throwaway identities.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hostile_peer import HostilePeer
from it_support import until

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.node import Node
from chinwag.protocol import messages as m
from node_support import make_node as loopback_node

#: Seconds to wait for anything on loopback.
WAIT_S = 10.0

NodeMaker = Callable[..., Node]


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[NodeMaker]:
    made: list[Node] = []

    def make(name: str, peers: list[tuple[str, int]] | None = None) -> Node:
        node = loopback_node(tmp_path / name, name, peers=peers)
        made.append(node)
        return node

    yield make
    for node in reversed(made):
        await node.stop()


def connected(node: Node) -> set[str]:
    return {p.peer_id for p in node.peers().peers}


async def stranger(node: Node) -> HostilePeer:
    h = HostilePeer()
    await h.connect(node.port, timeout=WAIT_S)
    return h


async def test_known_peers_replace_strangers_at_the_peer_limit(
    make_node: NodeMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_PEERS", 2)
    a = make_node("alice")
    await a.start()
    h1 = await stranger(a)
    h2 = await stranger(a)
    await until(lambda: connected(a) == {h1.peer_id, h2.peer_id}, "two strangers in")

    # Full of strangers that are not idle: another stranger is refused.
    h3 = await stranger(a)
    assert (await h3.wait_closed(WAIT_S)).code == "too_many_peers"

    # A peer alice verified takes the place of the stranger idle longest.
    v = make_node("victor", peers=[("127.0.0.1", a.port)])
    vid = _peer_id_of(v)
    a.verify(vid, confirm=True)
    await v.start()
    assert (await h1.wait_closed(WAIT_S)).code == "evicted"
    await until(lambda: connected(a) == {h2.peer_id, vid}, "victor in, h1 out")

    # Once strangers are idle, a new one may replace one; never the verified peer.
    monkeypatch.setattr(limits, "PEER_IDLE_EVICT_S", 0.0)
    for _ in range(3):
        before = connected(a) - {vid}
        h = await stranger(a)
        await until(lambda h=h: connected(a) == {h.peer_id, vid}, "a new stranger in")
        assert before.isdisjoint(connected(a))
    for h in (h1, h2, h3):
        await h.close()


def _peer_id_of(node: Node) -> str:
    """The peer id a node will have (its identity is made on first use of its data dir)."""
    from chinwag.datadir import load_or_create_identity

    node.config.data_dir.mkdir(parents=True, exist_ok=True)
    return load_or_create_identity(node.config.data_dir).peer_id


async def test_a_manual_peer_refused_at_our_own_peer_limit_is_retried(
    make_node: NodeMaker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(limits, "MAX_PEERS", 1)
    a = make_node("alice")
    await a.start()
    b = make_node("bob")
    await b.start()
    # bob's only place goes to a peer he verified: his --peer dial of alice is refused by him.
    v = HostilePeer()
    b.verify(v.peer_id, confirm=True)
    await v.connect(b.port, timeout=WAIT_S)
    await until(lambda: connected(b) == {v.peer_id}, "bob full")
    caplog.set_level(logging.DEBUG, logger="chinwag.net.manager")

    def refusals() -> int:
        return sum("refusing peer" in r.getMessage() for r in caplog.records)

    b._running().manager.add_manual_peer("127.0.0.1", a.port)
    await until(lambda: refusals() >= 1, "bob's dial reached alice and was refused")
    assert connected(b) == {v.peer_id}
    # Retried with back-off while refused; the warning is logged once, then at debug level.
    await until(lambda: refusals() >= 2, "bob retried alice while full")
    warned = [r for r in caplog.records if "refusing peer" in r.getMessage()]
    assert [r.levelno for r in warned].count(logging.WARNING) == 1
    # Once the place is free, the --peer address is dialled again (with back-off) and gets in.
    await v.close()
    await until(lambda: connected(b) == {a.identity.peer_id}, "bob retried alice")


async def test_silent_sockets_from_one_address_leave_handshake_slots_to_others(
    make_node: NodeMaker,
) -> None:
    a = make_node("alice")
    await a.start()
    silent = []
    for _ in range(limits.MAX_PENDING_HANDSHAKES + 8):  # more than every slot, one source
        silent.append(await asyncio.open_connection("127.0.0.1", a.port))
    # A peer from another address completes its handshake at once (not after a timeout).
    h = HostilePeer()
    await h.connect(a.port, timeout=limits.HANDSHAKE_TIMEOUT_S / 2, local_host="127.0.0.2")
    await until(lambda: connected(a) == {h.peer_id}, "the good peer is in")
    await h.close()
    for _, writer in silent:
        writer.close()


async def test_nick_changes_and_impostor_alerts_are_rate_limited(
    make_node: NodeMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "NICK_CHANGE_MIN_GAP_S", 0.5)
    a = make_node("alice")
    await a.start()
    got: list[ev.NodeEvent] = []
    a.subscribe(lambda e: got.append(e) if isinstance(e, ev.NickChanged | ev.Alert) else None)
    bob = Identity.generate()
    a._running().book.set_verified(bob.peer_id, "bob")  # alice verified the real bob
    h = HostilePeer()
    await h.connect(a.port, timeout=WAIT_S)
    await until(lambda: h.peer_id in connected(a), "mallory in")
    # A flood of nick changes, passing through bob's (verified) nick again and again.
    h.send_frames([m.NickChange(nick=n) for _ in range(50) for n in ("bob", "m1", "m2")])
    await until(lambda: [e for e in got if isinstance(e, ev.NickChanged)], "a nick change shown")
    await until(
        lambda: [e.nick for e in got if isinstance(e, ev.NickChanged)] == ["bob", "m2"],
        "the flood shown as two changes: the first, then the latest at the end of the gap",
    )
    alerts = [e for e in got if isinstance(e, ev.Alert)]
    assert len(alerts) == 1 and "bob" in alerts[0].message, alerts
    assert {p.nick for p in a.peers().peers} == {"m2"}
    await h.close()

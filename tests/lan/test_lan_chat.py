"""chinwag on a real LAN of network namespaces: one process per host.

Discovery by broadcast across a bridge, a cut cable (peer_left) and its
repair (peer_joined), forwarding along an A-B-C line of two segments, and a
capture on the bridge proving no message text crosses the wire in clear.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from capture import BridgeCapture, tcp_payloads
from lan_support import LEFT_S, REJOIN_S, NodeFactory, delivered, gone, joins, mesh, start_all
from netlab import NetLab

pytestmark = [pytest.mark.lan, pytest.mark.timeout(60)]


def marker(label: str) -> str:
    """A message text that cannot occur on the wire by chance."""
    return f"{label}-{uuid.uuid4().hex}"


async def test_discovery_by_broadcast_three_hosts(lab: NetLab, node: NodeFactory) -> None:
    """Three hosts on one bridge find each other with no --peer, and chat."""
    hosts = [lab.add_host(n) for n in ("a", "b", "c")]
    a, b, c = nodes = [
        node(h, nick) for h, nick in zip(hosts, ("alice", "bob", "carol"), strict=True)
    ]
    await start_all(*nodes)
    await mesh(nodes)
    for n in nodes:
        for other, other_host in zip(nodes, hosts, strict=True):
            if other is n:
                continue
            seen = joins(n, other)
            assert len(seen) == 1, f"{n.nick} saw {len(seen)} peer_joined for {other.nick}: {seen}"
            assert seen[0]["nick"] == other.nick, seen
            assert other_host.address in str(seen[0]["address"]), (seen, other_host.address)
    await delivered(a, marker("hello-lan"), b, c)
    await delivered(c, marker("reply-lan"), a, b)


async def test_cut_link_peer_leaves_and_rejoins(lab: NetLab, node: NodeFactory) -> None:
    """A host whose cable is cut disappears from the others, and comes back when it is restored."""
    hosts = [lab.add_host(n) for n in ("a", "b", "c")]
    a, b, c = nodes = [
        node(h, nick) for h, nick in zip(hosts, ("alice", "bob", "carol"), strict=True)
    ]
    await start_all(*nodes)
    await mesh(nodes)

    lab.cut("c")
    await asyncio.gather(
        gone(a, c, LEFT_S), gone(b, c, LEFT_S), gone(c, a, LEFT_S), gone(c, b, LEFT_S)
    )
    # a and b still see each other: only c's cable was cut.
    assert b.peer_id in a.connected_peers() and a.peer_id in b.connected_peers()

    lab.restore("c")
    await mesh(nodes, REJOIN_S)
    assert len(joins(a, c)) >= 2 and len(joins(c, b)) >= 2
    await delivered(c, marker("back-again"), a, b)


async def test_line_topology_forwards(lab: NetLab, node: NodeFactory) -> None:
    """A and C on different segments, B on both: A's message reaches C through B, and back."""
    lab.add_segment("left")
    lab.add_segment("right")
    ha = lab.add_host("a", ["left"])
    hb = lab.add_host("b", ["left", "right"])
    hc = lab.add_host("c", ["right"])
    a, b, c = node(ha, "alice"), node(hb, "bob"), node(hc, "carol")
    await start_all(a, b, c)
    await asyncio.gather(mesh([a, b]), mesh([b, c]))

    await delivered(a, marker("a-to-c"), b, c)
    await delivered(c, marker("c-to-a"), b, a)
    # The lab gives A and C no path to each other, so what arrived was relayed by B.
    assert not joins(a, c) and not joins(c, a), (joins(a, c), joins(c, a))


async def test_no_cleartext_on_the_wire(lab: NetLab, node: NodeFactory, tmp_path: Path) -> None:
    """A capture on the bridge, while a marker is sent, has TCP traffic but never the marker."""
    ha, hb = lab.add_host("a"), lab.add_host("b")
    cap = BridgeCapture(lab.switch_ns, lab.segments["lan"].bridge, tmp_path / "bridge.cap")
    await cap.start()
    try:
        a, b = node(ha, "alice"), node(hb, "bob")
        await start_all(a, b)
        await mesh([a, b])
        text = marker("cleartext-canary")
        await delivered(a, text, b)
    finally:
        await cap.stop()

    frames = cap.frames()
    assert frames and cap.frame_count == len(frames), (cap.frame_count, len(frames))
    segments = tcp_payloads(frames)
    tcp_bytes = sum(len(s.payload) for s in segments)
    assert tcp_bytes >= len(text), f"capture saw only {tcp_bytes} TCP payload bytes"
    between = {s.src for s in segments if s.payload} | {s.dst for s in segments if s.payload}
    assert {ha.address, hb.address} <= between, between

    needle = text.encode()
    hits = [i for i, f in enumerate(frames) if needle in f]
    assert not hits, f"marker seen in clear in frames {hits[:5]} of {len(frames)}"
    # Also across segment boundaries: each TCP direction's payloads joined up.
    streams: dict[tuple[str, int, str, int], bytearray] = {}
    for s in segments:
        streams.setdefault((s.src, s.sport, s.dst, s.dport), bytearray()).extend(s.payload)
    leaked = [flow for flow, data in streams.items() if needle in data]
    assert not leaked, f"marker seen in clear in TCP streams {leaked}"

"""Private messages on a real LAN of network namespaces, relayed by a host that cannot read them.

A and C are on different segments and B is on both (as in test_lan_chat's line
test), so everything between A and C crosses B. Captures on both bridges, B's
events, B's log and B's database must never hold the private texts in clear.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from capture import BridgeCapture, tcp_payloads
from lan_support import (
    PROMPT_S,
    NodeFactory,
    joins,
    mesh,
    private_rooms_stored,
    start_all,
    store_leaks,
)
from netlab import NetLab

from driver import ChinwagProcess, Event

pytestmark = [pytest.mark.lan, pytest.mark.timeout(60)]


def marker(label: str) -> str:
    """A message text that cannot occur on the wire or on disk by chance."""
    return f"{label}-{uuid.uuid4().hex}"


async def dm(sender: ChinwagProcess, to: str, text: str) -> Event:
    """Send a private message; return the sender's own `dm` event."""
    await sender.send({"cmd": "dm", "to": to, "text": text})
    return await sender.wait_for("dm", timeout=PROMPT_S, from_start=True, text=text, own=True)


async def received(node: ChinwagProcess, own: Event) -> None:
    """Wait until node shows the private message of which own is the sender's event."""
    got = await node.wait_for("dm", timeout=PROMPT_S, from_start=True, id=own["id"])
    assert got == {**own, "own": False}, (got, own)
    assert got["to"] == node.peer_id, got


def leaks_on_wire(cap: BridgeCapture, needles: list[bytes]) -> list[str]:
    """Where a capture holds a needle: in a single frame, or in a joined-up TCP stream."""
    frames = cap.frames()
    found = [f"frame {i}" for i, f in enumerate(frames) for n in needles if n in f]
    streams: dict[tuple[str, int, str, int], bytearray] = {}
    for s in tcp_payloads(frames):
        streams.setdefault((s.src, s.sport, s.dst, s.dport), bytearray()).extend(s.payload)
    found += [f"stream {flow}" for flow, data in streams.items() for n in needles if n in data]
    return found


async def test_dm_relayed_across_segments_stays_private(
    lab: NetLab, node: NodeFactory, tmp_path: Path
) -> None:
    """A's private message reaches C through B (and C's reply comes back); B learns nothing."""
    lab.add_segment("left")
    lab.add_segment("right")
    ha = lab.add_host("a", ["left"])
    hb = lab.add_host("b", ["left", "right"])
    hc = lab.add_host("c", ["right"])
    caps = {
        seg: BridgeCapture(lab.switch_ns, lab.segments[seg].bridge, tmp_path / f"{seg}.cap")
        for seg in ("left", "right")
    }
    await asyncio.gather(*(cap.start() for cap in caps.values()))
    try:
        a, b, c = node(ha, "alice"), node(hb, "bob"), node(hc, "carol")
        await start_all(a, b, c)
        await asyncio.gather(mesh([a, b]), mesh([b, c]))

        text = marker("lan-dm")
        own = await dm(a, c.peer_id, text)
        assert (own["peer_id"], own["to"]) == (a.peer_id, c.peer_id), own
        await received(c, own)
        reply = marker("lan-dm-reply")
        back = await dm(c, "alice", reply)
        assert back["to"] == a.peer_id, back
        await received(a, back)
    finally:
        await asyncio.gather(*(cap.stop() for cap in caps.values()))

    # No path between A and C but through B: B relayed both.
    assert not joins(a, c) and not joins(c, a), (joins(a, c), joins(c, a))
    texts = [text, reply]
    needles = [t.encode() for t in texts]
    ends = {"left": (ha, hb), "right": (hb, hc)}
    for seg, cap in caps.items():
        frames = cap.frames()
        assert frames and cap.frame_count == len(frames), (seg, cap.frame_count, len(frames))
        segments = [s for s in tcp_payloads(frames) if s.payload]
        payload = sum(len(s.payload) for s in segments)
        assert payload >= 2 * sum(map(len, needles)), f"{seg}: only {payload} TCP payload bytes"
        talkers = {s.src for s in segments} | {s.dst for s in segments}
        assert {h.addresses[seg] for h in ends[seg]} <= talkers, (seg, talkers)
        leaks = leaks_on_wire(cap, needles)
        assert not leaks, f"{seg} bridge: private text in clear in {leaks[:5]}"
    # The search does see what is in clear: beacons carry the peer ids.
    assert leaks_on_wire(caps["left"], [a.peer_id.encode()])
    assert leaks_on_wire(caps["right"], [c.peer_id.encode()])

    shown = [ev for ev in b.events if any(t in json.dumps(ev) for t in texts)]
    assert not shown and not [ev for ev in b.events if ev.get("event") == "dm"], shown
    for n in (a, b, c):
        assert await n.quit() == 0, n.stderr_tail()
    for t in texts:
        assert store_leaks(b.data_dir, t) == [], store_leaks(b.data_dir, t)
        assert t.encode() not in b.stderr_path.read_bytes(), "private text in bob's log"
        assert store_leaks(c.data_dir, t), f"carol did not store {t}"
    assert private_rooms_stored(b.data_dir) == set(), private_rooms_stored(b.data_dir)

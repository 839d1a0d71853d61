"""The gossip mesh between real processes (docs/mesh.md, protocol.md section 6.1).

- on a line x - y - z each message crosses y's mesh both ways, exactly once;
- a peer that sends `iwant` for ids never announced, floods `ihave`, or storms `graft`
  loses score and is closed with `low_score`, while the node keeps serving its honest peer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from hostile_peer import HostilePeer
from it_support import (
    PROMPT_S,
    ChinwagProcess,
    NodeFactory,
    ask,
    chat_works,
    connected,
    count,
    stderr_has_traceback,
)

from chinwag import limits
from chinwag.protocol import messages as m
from chinwag.protocol.names import DEFAULT_ROOM
from chinwag.protocol.reasons import Reason

#: Seconds a misbehaving peer may take to be closed (its score falls over a few heartbeats).
CLOSE_S = 30.0


async def test_line_delivers_both_ways_through_the_middle(node: NodeFactory) -> None:
    """x - y - z: z's message reaches x through y's mesh, x's reaches z, each exactly once."""
    y = node("y", discovery=False)
    await y.start()
    x = node("x", "--peer", f"127.0.0.1:{y.port}", discovery=False)
    z = node("z", "--peer", f"127.0.0.1:{y.port}", discovery=False)
    await asyncio.gather(x.start(), z.start())
    await asyncio.gather(connected(x, y), connected(z, y))

    from_z = await chat_works(z, y, x, text="z to x through y")
    from_x = await chat_works(x, y, z, text="x to z through y")
    for i in range(5):  # and a few more each way, once the mesh has grafted for sure
        await chat_works(z, y, x, text=f"z {i}")
        await chat_works(x, y, z, text=f"x {i}")
    assert x.peer_id not in z.connected_peers() and z.peer_id not in x.connected_peers()
    # Live through y's mesh (a history push would not count as heard live through y).
    for near, far in ((x, z), (z, x)):
        listing = await ask(near, {"cmd": "peers"}, "peers")
        assert [(r["peer_id"], r["via"]) for r in listing["relayed"]] == [
            (far.peer_id, y.peer_id)
        ], listing
    for n in (x, y, z):
        assert count(n, "message", id=from_z["id"]) == 1, n.nick
        assert count(n, "message", id=from_x["id"]) == 1, n.nick
        texts = [ev["text"] for ev in n.messages()]
        assert len(texts) == len(set(texts)) == 12, (n.nick, texts)


def logged(node: ChinwagProcess, text: str) -> int:
    """How many lines of node's log contain text."""
    return sum(text in line for line in node.stderr_path.read_text(errors="replace").splitlines())


async def _abuse(
    node: NodeFactory, frames: Callable[[HostilePeer, int], list[m.Frame]], logs: str
) -> tuple[ChinwagProcess, ChinwagProcess, HostilePeer]:
    """A node a with an honest peer b and a hostile peer that sends frames(h, round) every
    50 ms until a closes it; return them (the hostile one closed). The abuse (a line
    containing logs) and the close are each logged once."""
    a = node("a", discovery=False)
    await a.start()
    b = node("b", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    h = HostilePeer(rooms=(DEFAULT_ROOM,))
    await h.connect(a.port, timeout=PROMPT_S)
    await a.wait_for_peers([h.peer_id], timeout=PROMPT_S)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_S
    rnd = 0
    while h.closed is None and loop.time() < deadline:
        h.send_frames(frames(h, rnd))
        await h.drain()
        rnd += 1
        with contextlib.suppress(TimeoutError):  # pacing the abuse, 50 ms a round
            await asyncio.wait_for(h.changed(), 0.05)
    closed = await h.wait_closed(timeout=1.0)
    assert closed.code == Reason.LOW_SCORE, closed
    # The node keeps serving everyone else.
    await chat_works(a, b, text="still here")
    await chat_works(b, a, text="still here too")
    assert not stderr_has_traceback(a)
    assert logged(a, f"mesh: {h.peer_id[:8]} {logs}") == 1, a.stderr_tail()
    assert logged(a, f"mesh: closing {h.peer_id[:8]}") == 1, a.stderr_tail()
    return a, b, h


def _ids(h: HostilePeer, rnd: int, n: int) -> list[m.MeshId]:
    base = rnd * n
    return [(h.peer_id, base + k + 1) for k in range(n)]


async def test_iwant_for_never_announced_ids_closes(node: NodeFactory) -> None:
    """Asking for ids the node never announced costs score until it closes the connection."""

    def frames(h: HostilePeer, rnd: int) -> list[m.Frame]:
        return [m.IWant(room=DEFAULT_ROOM, ids=_ids(h, rnd, limits.MESH_MAX_IWANT_IDS))]

    _a, _b, h = await _abuse(node, frames, "asks by IWANT for ids never announced")
    served = [f for f in h.frames if isinstance(f, m.Chat)]
    assert served == [], "the node served ids it never announced"


async def test_ihave_flood_closes(node: NodeFactory) -> None:
    """Many full `ihave` frames per heartbeat cost score until the connection is closed."""

    def frames(h: HostilePeer, rnd: int) -> list[m.Frame]:
        return [
            m.IHave(room=DEFAULT_ROOM, ids=_ids(h, rnd * 20 + k, limits.MESH_MAX_IHAVE_IDS))
            for k in range(20)
        ]

    _a, _b, h = await _abuse(node, frames, "floods IHAVE")
    # What it asked for is bounded per heartbeat, however many ids were announced.
    asked = sum(len(f.ids) for f in h.frames if isinstance(f, m.IWant))
    beats = CLOSE_S / limits.MESH_HEARTBEAT_S + 1
    assert asked <= limits.MESH_MAX_IWANT_PER_HEARTBEAT * beats, asked


async def test_graft_storm_closes(node: NodeFactory) -> None:
    """Grafting again and again (also while pruned and backed off) costs score until closed."""

    def frames(h: HostilePeer, rnd: int) -> list[m.Frame]:
        return [m.Graft(room=DEFAULT_ROOM), m.Prune(room=DEFAULT_ROOM)] * 10 + [
            m.Graft(room=DEFAULT_ROOM)
        ]

    await _abuse(node, frames, "grafts general during its backoff")

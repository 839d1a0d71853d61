"""Topologies: forwarding along a line, and two nodes dialling each other at once."""

from __future__ import annotations

import asyncio
import time

from it_support import PROMPT_S, NodeFactory, ask, chat_works, connected, count, free_tcp_port

#: Seconds of continuous ping-pong during which a simultaneous-dial pair must not flap.
NO_FLAP_S = 2.0
#: Times the simultaneous dial is repeated (each start is a fresh race).
DIAL_RACES = 8


async def test_line_forwarding_exactly_once(node: NodeFactory) -> None:
    """In A - B - C (no discovery), A's message reaches C via B exactly once, and back."""
    b = node("bob", discovery=False)
    await b.start()
    a = node("alice", "--peer", f"127.0.0.1:{b.port}", discovery=False)
    c = node("carol", "--peer", f"127.0.0.1:{b.port}", discovery=False)
    await asyncio.gather(a.start(), c.start())
    await asyncio.gather(connected(a, b), connected(c, b))

    own = await chat_works(a, b, c, text="a to c via b")
    got = await c.wait_for_message("a to c via b")
    assert got["peer_id"] == a.peer_id and got["nick"] == "alice", got
    assert got["id"] == own["id"]
    # Forwarded, not sent directly: A and C have no connection of their own.
    assert a.peer_id not in c.connected_peers() and c.peer_id not in a.connected_peers()

    # C lists A as reached through B.
    listing = await ask(c, {"cmd": "peers"}, "peers")
    assert [p["peer_id"] for p in listing["peers"]] == [b.peer_id], listing
    assert [(r["peer_id"], r["nick"], r["via"]) for r in listing["relayed"]] == [
        (a.peer_id, "alice", b.peer_id)
    ], listing

    back = await chat_works(c, b, a, text="c to a via b")
    assert (await a.wait_for_message("c to a via b"))["peer_id"] == c.peer_id
    await chat_works(b, a, c, text="from the middle")

    # Flush: a marker sent after everything else has arrived behind any duplicate.
    await chat_works(a, b, c, text="flush from a")
    await chat_works(c, b, a, text="flush from c")
    for n in (a, b, c):
        texts = [ev["text"] for ev in n.messages()]
        assert len(texts) == len(set(texts)) == 5, (n.nick, texts)
        assert count(n, "message", id=own["id"]) == 1
        assert count(n, "message", id=back["id"]) == 1


async def test_simultaneous_dial_one_connection_no_flapping(node: NodeFactory) -> None:
    """Two nodes given each other as --peer end with one connection each and stay connected.

    The dial race is timing-dependent, so it is run several times; the first message goes
    out right after peer_joined, while the duplicate connection may still be resolved.
    """
    for race in range(DIAL_RACES):
        port_a, port_b = free_tcp_port(), free_tcp_port()
        while port_b == port_a:
            port_b = free_tcp_port()
        a = node(
            f"alice{race}", "--port", str(port_a), "--peer", f"127.0.0.1:{port_b}", discovery=False
        )
        b = node(
            f"bob{race}", "--port", str(port_b), "--peer", f"127.0.0.1:{port_a}", discovery=False
        )
        await asyncio.gather(a.start(), b.start())
        assert (a.port, b.port) == (port_a, port_b)
        await a.wait_for_peers([b.peer_id], timeout=PROMPT_S)
        await a.say("first")  # at once: the duplicate connection may still be in flight
        await connected(a, b)
        await b.wait_for_message("first")

        # Ping-pong (for a while in the last race) instead of sleeping: a flap shows as peer_left.
        start = time.monotonic()
        rounds = 0
        while rounds < 1 or (race == DIAL_RACES - 1 and time.monotonic() - start < NO_FLAP_S):
            rounds += 1
            await chat_works(a, b, text=f"ping {rounds}")
            await chat_works(b, a, text=f"pong {rounds}")
        for n in (a, b):
            assert count(n, "peer_joined") == 1, (race, n.nick, n.events)
            assert count(n, "peer_left") == 0, (race, n.nick, n.events)
            assert len(n.messages()) == 2 * rounds + 1, (race, n.messages())
        for n, other in ((a, b), (b, a)):
            await n.send({"cmd": "peers"})
            ev = await n.wait_for("peers", timeout=PROMPT_S)
            assert [p["peer_id"] for p in ev["peers"]] == [other.peer_id], (race, ev)
        assert await a.quit() == 0 and await b.quit() == 0

"""Discovery on loopback, manual peers, and group chat between real processes."""

from __future__ import annotations

import asyncio
import time

from it_support import ChinwagProcess, Event, NodeFactory, chat_works, connected, count


def assert_message(ev: Event, *, text: str, author: ChinwagProcess, own: bool) -> None:
    """Check every field of a message event."""
    assert ev["event"] == "message", ev
    assert ev["text"] == text, ev
    assert ev["room"] == "general", ev
    assert ev["peer_id"] == author.peer_id, ev
    assert ev["nick"] == author.ready["nick"], ev
    assert ev["own"] is own, ev
    assert isinstance(ev["id"], str) and ev["id"], ev
    assert isinstance(ev["ts"], int | float) and not isinstance(ev["ts"], bool), ev
    assert abs(ev["ts"] - time.time()) < 60, f"ts is not Unix seconds near now: {ev}"


def assert_joined(node: ChinwagProcess, other: ChinwagProcess) -> None:
    """node saw exactly one peer_joined for other, with its nick and an address."""
    joins = [
        ev
        for ev in node.events
        if ev.get("event") == "peer_joined" and ev.get("peer_id") == other.peer_id
    ]
    assert len(joins) == 1, f"{node.nick} saw {len(joins)} peer_joined for {other.nick}: {joins}"
    assert joins[0]["nick"] == other.ready["nick"], joins[0]
    assert isinstance(joins[0]["address"], str) and "127.0.0.1" in joins[0]["address"], joins[0]


async def test_ready_event_fields(node: NodeFactory) -> None:
    """The ready event names the peer id, the nick and the bound TCP port."""
    a = node("alice")
    ready = await a.start()
    assert isinstance(ready["peer_id"], str) and len(ready["peer_id"]) >= 8, ready
    assert ready["nick"] == "alice", ready
    assert isinstance(ready["port"], int) and 0 < ready["port"] < 65536, ready


async def test_two_nodes_discover_and_chat(node: NodeFactory) -> None:
    """Two nodes find each other by loopback beacons; a message reaches both, same id."""
    a, b = node("alice"), node("bob")
    await asyncio.gather(a.start(), b.start())
    assert a.peer_id != b.peer_id
    await connected(a, b)
    assert_joined(a, b)
    assert_joined(b, a)

    await a.say("hello bob")
    own = await a.wait_for_message("hello bob")
    got = await b.wait_for_message("hello bob")
    assert_message(own, text="hello bob", author=a, own=True)
    assert_message(got, text="hello bob", author=a, own=False)
    assert own["id"] == got["id"]
    assert own["ts"] == got["ts"]

    await b.say("hi alice")
    own_b = await b.wait_for_message("hi alice")
    got_a = await a.wait_for_message("hi alice")
    assert_message(own_b, text="hi alice", author=b, own=True)
    assert_message(got_a, text="hi alice", author=b, own=False)
    assert own_b["id"] == got_a["id"] != own["id"]


async def test_three_nodes_discover_and_chat(node: NodeFactory) -> None:
    """Three nodes form a full group; each message reaches every node exactly once."""
    nodes = [node("alice"), node("bob"), node("carol")]
    await asyncio.gather(*(n.start() for n in nodes))
    await asyncio.gather(
        *(n.wait_for_peers([m.peer_id for m in nodes if m is not n]) for n in nodes)
    )
    for n in nodes:
        for m in nodes:
            if m is not n:
                assert_joined(n, m)

    for n in nodes:
        await n.say(f"from {n.nick}")
    for n in nodes:
        for author in nodes:
            text = f"from {author.nick}"
            ev = await n.wait_for_message(text)
            assert_message(ev, text=text, author=author, own=n is author)
    # A last round trip flushes anything still in flight before counting duplicates.
    await chat_works(nodes[0], *nodes[1:], text="flush")
    for n in nodes:
        for author in nodes:
            assert count(n, "message", text=f"from {author.nick}") == 1, n.messages()
    ids = {n.nick: {ev["text"]: ev["id"] for ev in n.messages()} for n in nodes}
    assert ids["alice"] == ids["bob"] == ids["carol"]
    assert len(set(ids["alice"].values())) == 4


async def test_manual_peer_without_discovery(node: NodeFactory) -> None:
    """--no-discovery with --peer HOST:PORT connects and chats both ways."""
    a = node("alice", discovery=False)
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    assert_joined(a, b)
    assert_joined(b, a)
    own = await chat_works(b, a, text="dialled by hand")
    assert_message(own, text="dialled by hand", author=b, own=True)
    got = await chat_works(a, b, text="and back")
    assert_message(await b.wait_for_message("and back"), text="and back", author=a, own=False)
    assert got["id"] != own["id"]

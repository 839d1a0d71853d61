"""History sync against hostile peers, between real processes (hostile_peer.HostilePeer).

- a floor for a third party's messages, backed by a made-up vector, writes off nothing;
- thousands of fresh keys with holes neither fill the store nor start a want storm
  that cuts honest links;
- an author's second version of a message, brought by a relay, cuts the author, not the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
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
from chinwag.crypto.identity import Identity
from chinwag.protocol import messages as m

#: Fresh keys in the want-storm attack (each sends one message with seq 2).
FRESH_KEYS = 3_000
TOP = 2**63 - 1


async def hostile(a: ChinwagProcess, identity: Identity | None = None) -> HostilePeer:
    """A scripted peer connected to a (a has reported it joined)."""
    h = HostilePeer(identity=identity)
    await h.connect(a.port, timeout=PROMPT_S)
    await a.wait_for_peers([h.peer_id], timeout=PROMPT_S)
    return h


async def poll(cond: Callable[[], bool], what: str, timeout: float = PROMPT_S) -> None:
    """Wait until cond holds (checked as events and frames come in); fail after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def stored(node: ChinwagProcess) -> list[dict[str, object]]:
    reply = await ask(node, {"cmd": "history", "limit": limits.MAX_HISTORY}, "history")
    return list(reply["messages"])


@pytest.mark.parametrize("floor", [TOP, 6])
async def test_a_floor_cannot_write_off_a_third_partys_history(
    node: NodeFactory, floor: int
) -> None:
    """vec {victim: 2^63-1}, floor {victim, F}: the node still sees and asks for victim's gaps."""
    a = node("alice", discovery=False)
    await a.start()
    h = await hostile(a)
    victim = Identity.generate()
    t0 = int(time.time() * 1000)
    msgs = {
        s: h.message(s, f"victim {s}", author=victim, nick="victim", ts_ms=t0 + s)
        for s in range(1, 5)
    }
    h.send_frames([m.Chat(body=msgs[s].raw_body, sig=msgs[s].sig) for s in (1, 2)])
    await a.wait_for_message("victim 2", timeout=PROMPT_S)

    h.send_frames(
        [
            m.Vector(room="general", have={victim.peer_id: TOP}),
            m.Floor(room="general", author=victim.peer_id, seq=floor),
            m.Chat(body=msgs[4].raw_body, sig=msgs[4].sig),
        ]
    )
    gap = await a.wait_for("gap", timeout=PROMPT_S, peer_id=victim.peer_id)
    assert gap["missing"] == [3, 3], gap
    want = await h.wait_frame(m.Want, lambda w: w.author == victim.peer_id, timeout=PROMPT_S)
    assert (want.lo, want.hi) == (3, 3), want
    h.send_chat(msgs[3], hist=True)
    await a.wait_for("gap_filled", timeout=PROMPT_S, peer_id=victim.peer_id)
    vec = await h.wait_frame(m.Vector, lambda v: v.have.get(victim.peer_id) == 4)
    assert vec.have[victim.peer_id] == 4
    assert all(v.have.get(victim.peer_id, 0) <= 4 for v in h.frames if isinstance(v, m.Vector))
    assert h.closed is None
    await h.close()
    assert await a.quit() == 0
    with contextlib.closing(sqlite3.connect(a.data_dir / "chinwag.db")) as db:
        assert db.execute("SELECT * FROM floors").fetchall() == []
    assert not stderr_has_traceback(a), a.stderr_tail()


async def test_fresh_keys_with_holes_start_no_want_storm(node: NodeFactory) -> None:
    """3,000 messages from fresh keys with seq 2: bounded, and no honest link is cut."""
    a = node("alice", discovery=False)
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    h = await hostile(a)  # the attacker, at a
    watch = await hostile(b)  # an observer at b: receives b's wants like a does
    fresh = [Identity.generate() for _ in range(FRESH_KEYS)]
    junk = {k.peer_id for k in fresh}
    h.send_frames(
        [
            m.Chat(body=msg.raw_body, sig=msg.sig)
            for msg in (h.message(2, "junk", author=k, nick="junk") for k in fresh)
        ]
    )
    await h.drain()

    def asked_all(node: ChinwagProcess, observer: HostilePeer) -> bool:
        gaps = {ev["peer_id"] for ev in node.events if ev.get("event") == "gap"} & junk
        wanted = {f.author for f in observer.frames if isinstance(f, m.Want)}
        return bool(gaps) and gaps <= wanted

    # Both nodes report their gaps and ask for them (their wants reach the observers).
    await poll(lambda: asked_all(a, h) and asked_all(b, watch), "gaps asked for", 3 * PROMPT_S)
    # Chat after the wants on the same connections: each side has handled them.
    await chat_works(a, b, text="still linked a->b")
    await chat_works(b, a, text="still linked b->a")
    assert count(a, "peer_left", peer_id=b.peer_id) == 0, a.events[-5:]
    assert count(b, "peer_left", peer_id=a.peer_id) == 0, b.events[-5:]
    for n in (a, b):
        got = {ev["peer_id"] for ev in await stored(n)} & junk
        assert 0 < len(got) <= limits.MAX_ORPHAN_AUTHORS_PER_PEER, (n.nick, len(got))
        wants_sent = sum(1 for ev in n.events if ev.get("event") == "gap")
        assert wants_sent <= limits.MAX_ORPHAN_AUTHORS_PER_ROOM
        assert not stderr_has_traceback(n), n.stderr_tail()
    assert h.closed is None and watch.closed is None
    await h.close()
    await watch.close()


async def test_a_relayed_equivocation_cuts_the_author_not_the_relay(node: NodeFactory) -> None:
    """The author's two versions of #1: the relay that brings the second stays connected."""
    a = node("alice", discovery=False)
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    victim = Identity.generate()
    author = await hostile(a, identity=victim)  # the equivocating author, connected to a
    relay = await hostile(a)  # an honest relay that passes on what the author signed
    first = author.message(1, "version one")
    second = author.message(1, "version two")
    author.send_chat(first)
    await b.wait_for_message("version one", timeout=PROMPT_S)
    relay.send_chat(second)
    warning = await a.wait_for("warning", timeout=PROMPT_S, peer_id=victim.peer_id)
    assert "two different messages" in warning["message"], warning
    closed = await author.wait_closed(PROMPT_S)
    if not author.reset:
        assert closed.by_peer and closed.code == "equivocation", closed
    # The relay is still welcome: its next message is shown.
    relay.send_chat(relay.message(1, "relay still here"))
    await a.wait_for_message("relay still here", timeout=PROMPT_S)
    assert relay.closed is None, relay.closed
    assert count(a, "peer_left", peer_id=relay.peer_id) == 0
    await chat_works(a, b, text="after the equivocation")
    for n in (a, b):
        texts = [ev["text"] for ev in await stored(n) if ev["peer_id"] == victim.peer_id]
        assert texts == ["version one"], (n.nick, texts)
        assert count(n, "message", text="version two") == 0
        assert not stderr_has_traceback(n), n.stderr_tail()
    await relay.close()
    await author.close()


async def test_a_node_whose_store_was_deleted_never_reuses_a_seq(
    node: NodeFactory, tmp_path: Path
) -> None:
    """chinwag.db deleted, identity kept: the next message waits for its old ones and gets seq 4."""
    a = node("alice", discovery=False)
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    old = [await chat_works(a, b, text=f"before {i}") for i in (1, 2, 3)]
    await a.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=old[-1]["id"], count=1)
    assert await a.quit() == 0
    for f in (tmp_path / "alice").glob("chinwag.db*"):
        f.unlink()

    a2 = node(
        "alice", "--peer", f"127.0.0.1:{b.port}", discovery=False, data_dir=tmp_path / "alice"
    )
    await a2.start()
    await a2.say("after the store was lost")  # before any peer is even connected
    own = await a2.wait_for("message", timeout=PROMPT_S, own=True, text="after the store was lost")
    assert own["seq"] == 4, own
    got = await b.wait_for_message("after the store was lost", timeout=PROMPT_S)
    assert got["id"] == own["id"] and got["seq"] == 4
    mine = [ev for ev in await stored(a2) if ev["peer_id"] == a.peer_id]
    assert [ev["seq"] for ev in mine] == [1, 2, 3, 4], mine
    assert [ev["id"] for ev in mine[:3]] == [ev["id"] for ev in old]
    for n in (a2, b):
        assert not [ev for ev in n.events if "equivocation" in str(ev.get("reason", ""))]
        assert not stderr_has_traceback(n), n.stderr_tail()

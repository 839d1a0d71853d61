"""History and delivery between real processes: restarts, outbox, catch-up, kill -9, hostile peers.

Every node runs on loopback with discovery off; peers are given with --peer.
Scripted peers (hostile_peer.HostilePeer) speak the real protocol with their
own identities to forge, equivocate, flood and leave gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from hostile_peer import HostilePeer
from it_support import (
    PROMPT_S,
    ChinwagProcess,
    Event,
    NodeFactory,
    chat_works,
    connected,
    count,
    start_fails,
    start_pair,
    stderr_has_traceback,
)

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.protocol import messages as m

#: Messages returned by one history command at most (limits.MAX_HISTORY).
ALL = 10_000
#: Send commands piped into the node that is killed with SIGKILL mid-burst.
BURST = 2_000
#: Forged messages written to a node at once.
FORGERIES = 1_000
#: Own message events the node must have printed before it is killed.
KILL_AFTER = 500
#: Padding of each burst message: 2 MB of commands through a 64 KiB pipe pace the node,
#: so that the kill lands mid-burst (short lines are all read and stored in one go).
PAD = "." * 1000

#: Node bug: closing a connection from inside a frame handler (History.sync_frame or
#: chat_received -> PeerConnection.close) re-enters PeerConnection._process, which hands
#: the frames still queued from the same read to the handler again, which closes again...


# --- helpers ----------------------------------------------------------------


async def ask(node: ChinwagProcess, cmd: Event, answer: str) -> Event:
    """Send a command and return the first `answer` event printed after it."""
    before = {id(ev) for ev in node.events}
    await node.send(cmd)
    return await node.wait_for(
        answer, pred=lambda ev: id(ev) not in before, timeout=PROMPT_S, from_start=True
    )


async def history(node: ChinwagProcess, room: str | None = None) -> list[Event]:
    """The node's whole history of a room (default: general), oldest first."""
    cmd: Event = {"cmd": "history", "limit": ALL}
    if room is not None:
        cmd["room"] = room
    ev = await ask(node, cmd, "history")
    assert ev["room"] == (room or "general"), ev
    return list(ev["messages"])


async def wait_ids(node: ChinwagProcess, want: Iterable[str], timeout: float = PROMPT_S) -> None:
    """Wait until the node has printed a message event for every id in want."""
    wanted, seen = set(want), set()
    if not wanted:
        return

    def pred(ev: Event) -> bool:
        seen.add(ev["id"])
        return wanted <= seen

    try:
        await node.wait_for("message", pred=pred, timeout=timeout, from_start=True)
    except TimeoutError:
        raise AssertionError(
            f"{node.nick} lacks {len(wanted - seen)} of {len(wanted)} messages after {timeout}s;"
            f" stderr tail: {node.stderr_tail()}"
        ) from None


async def wait_own(node: ChinwagProcess, texts: list[str]) -> list[Event]:
    """Wait for the node's own message events of these texts; return them in text order."""
    return [
        await node.wait_for("message", timeout=PROMPT_S, from_start=True, text=t, own=True)
        for t in texts
    ]


def ids(events: Iterable[Event]) -> list[str]:
    return [ev["id"] for ev in events]


def by(events: Iterable[Event], author: ChinwagProcess | HostilePeer) -> list[Event]:
    return [ev for ev in events if ev["peer_id"] == author.peer_id]


def assert_no_duplicates(events: list[Event]) -> None:
    """No id and no (room, author, seq) occurs twice."""
    assert len(set(ids(events))) == len(events), "duplicate ids"
    keys = [(ev["room"], ev["peer_id"], ev["seq"]) for ev in events]
    assert len(set(keys)) == len(keys), "duplicate (room, peer_id, seq)"


def assert_clean(*nodes: ChinwagProcess) -> None:
    """No error event and no traceback on any node."""
    for n in nodes:
        assert not [ev for ev in n.events if ev.get("event") == "error"], (n.nick, n.events[-5:])
        assert not stderr_has_traceback(n), n.stderr_tail()


def restart(node: NodeFactory, tmp_path: Path, name: str, *args: str) -> ChinwagProcess:
    """A new process on the data dir of an earlier node of this name (no discovery)."""
    return node(name, *args, discovery=False, data_dir=tmp_path / name)


# --- restart, outbox, catch-up ----------------------------------------------


async def test_restart_keeps_history_and_seq(node: NodeFactory, tmp_path: Path) -> None:
    """Messages sent alone survive a restart in order, with ids and seqs; seq continues."""
    a = node("alice", discovery=False)
    await a.start()
    texts = [f"kept {i}" for i in range(1, 6)]
    for t in texts:
        await a.say(t)
    sent = await wait_own(a, texts)
    assert [ev["seq"] for ev in sent] == [1, 2, 3, 4, 5], sent
    assert await a.quit() == 0, a.stderr_tail()

    a2 = restart(node, tmp_path, "alice")
    assert (await a2.start())["peer_id"] == a.peer_id
    got = await history(a2)
    assert [ev["text"] for ev in got] == texts, got
    assert ids(got) == ids(sent)
    assert [ev["seq"] for ev in got] == [1, 2, 3, 4, 5]
    assert all(ev["own"] is True and ev["peer_id"] == a.peer_id for ev in got), got
    assert [ev["ts"] for ev in got] == [ev["ts"] for ev in sent]

    await a2.say("after restart")
    new = await a2.wait_for_message("after restart")
    assert new["seq"] == 6, new
    assert ids(await history(a2)) == [*ids(sent), new["id"]]
    assert_clean(a, a2)


async def test_history_pages_back_with_before(node: NodeFactory) -> None:
    """`history` with `before` returns the messages older than a given one (API paging)."""
    a = node("alice", discovery=False)
    await a.start()
    texts = [f"page {i}" for i in range(1, 8)]
    for t in texts:
        await a.say(t)
    sent = await wait_own(a, texts)
    last = await ask(a, {"cmd": "history", "limit": 3}, "history")
    assert [ev["text"] for ev in last["messages"]] == texts[4:]
    first_id = last["messages"][0]["id"]
    older = await ask(a, {"cmd": "history", "limit": 3, "before": first_id[:12]}, "history")
    assert [ev["text"] for ev in older["messages"]] == texts[1:4]
    oldest = await ask(a, {"cmd": "history", "limit": 10, "before": sent[1]["id"]}, "history")
    assert [ev["text"] for ev in oldest["messages"]] == texts[:1]
    bad = await ask(a, {"cmd": "history", "before": "ffffffffffff"}, "error")
    assert "no message" in bad["message"]
    assert not stderr_has_traceback(a)


async def test_outbox_delivered_when_a_peer_appears(node: NodeFactory) -> None:
    """Messages typed alone reach a later peer with their original ts, seq and order."""
    a = node("alice", discovery=False)
    await a.start()
    texts = ["typed alone 1", "typed alone 2", "typed alone 3"]
    for t in texts:
        await a.say(t)
    sent = await wait_own(a, texts)
    assert not [ev for ev in a.events if ev.get("event") == "delivered"]

    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    await wait_ids(b, ids(sent))
    got = by(b.messages(), a)
    assert ids(got) == ids(sent), (got, sent)
    assert [ev["seq"] for ev in got] == [1, 2, 3]
    assert [ev["ts"] for ev in got] == [ev["ts"] for ev in sent]
    assert [ev["text"] for ev in got] == texts
    assert all(ev["own"] is False for ev in got)
    for ev in sent:
        await a.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=ev["id"], count=1, of=1)
    await chat_works(b, a, text="flush")
    for ev in sent:
        assert count(b, "message", id=ev["id"]) == 1
    assert_clean(a, b)


async def test_catch_up_after_downtime(node: NodeFactory, tmp_path: Path) -> None:
    """A peer that was down gets exactly what it missed; both histories end identical."""
    a, b = await start_pair(node)
    await chat_works(a, b, text="before the outage")
    assert await b.quit() == 0
    await a.wait_for("peer_left", timeout=PROMPT_S, peer_id=b.peer_id)

    texts = [f"missed {i}" for i in range(20)]
    for t in texts:
        await a.say(t)
    sent = await wait_own(a, texts)

    b2 = restart(node, tmp_path, "bob", "--peer", f"127.0.0.1:{a.port}")
    await b2.start()
    await connected(a, b2)
    await wait_ids(b2, ids(sent))
    await chat_works(a, b2, text="flush a->b")
    await chat_works(b2, a, text="flush b->a")
    got = b2.messages()
    assert ids(got) == [*ids(sent), *ids(got[-2:])], got
    assert [ev["seq"] for ev in got[:20]] == list(range(2, 22)), got
    ha, hb = await history(a), await history(b2)
    assert ids(ha) == ids(hb), (ha, hb)
    assert len(ha) == 23
    assert_no_duplicates(ha)
    assert_clean(a, b, b2)


async def test_third_party_catch_up(node: NodeFactory) -> None:
    """A newcomer gets an absent author's messages from another peer, and they verify."""
    b = node("bob", discovery=False)
    await b.start()
    a = node("alice", "--peer", f"127.0.0.1:{b.port}", discovery=False)
    await a.start()
    await connected(a, b)
    texts = [f"from alice {i}" for i in range(5)]
    for t in texts:
        await a.say(t)
    sent = await wait_own(a, texts)
    await wait_ids(b, ids(sent))
    assert await a.quit() == 0
    await b.wait_for("peer_left", timeout=PROMPT_S, peer_id=a.peer_id)

    c = node("carol", "--peer", f"127.0.0.1:{b.port}", discovery=False)
    await c.start()
    await connected(b, c)
    await wait_ids(c, ids(sent))
    got = by(c.messages(), a)
    assert ids(got) == ids(sent), got
    assert all(ev["nick"] == "alice" and ev["own"] is False for ev in got), got
    assert [ev["seq"] for ev in got] == [1, 2, 3, 4, 5]
    await chat_works(c, b, text="carol got it")
    await chat_works(b, c, text="bob sees carol")
    assert count(c, "peer_left") == 0 and count(b, "peer_left", peer_id=c.peer_id) == 0
    assert ids(await history(c)) == ids(await history(b))
    assert_clean(b, c)


# --- durability -------------------------------------------------------------


async def test_kill_9_mid_burst_loses_nothing_accepted(node: NodeFactory, tmp_path: Path) -> None:
    """Every message the node printed before SIGKILL is stored; the peer converges to it."""
    b = node("bob", discovery=False)
    await b.start()
    a = node("alice", "--peer", f"127.0.0.1:{b.port}", discovery=False)
    await a.start()
    await connected(a, b)

    burst = b"".join(
        json.dumps({"cmd": "send", "text": f"burst {i} {PAD}"}).encode() + b"\n"
        for i in range(BURST)
    )
    writer = asyncio.create_task(a.send_raw(burst))
    printed = 0

    def enough(ev: Event) -> bool:
        nonlocal printed
        printed += ev["own"] is True
        return printed >= KILL_AFTER

    await a.wait_for("message", pred=enough, timeout=PROMPT_S, from_start=True)
    await a.kill()
    with contextlib.suppress(ConnectionError, OSError):
        await writer
    accepted = [ev for ev in a.messages() if ev["own"]]
    assert KILL_AFTER <= len(accepted) < BURST, f"killed after {len(accepted)} of {BURST}"
    await b.wait_for("peer_left", timeout=PROMPT_S * 2, peer_id=a.peer_id)

    # Alone first, so nothing can be restored from the peer.
    a2 = restart(node, tmp_path, "alice")
    await a2.start()
    stored = await history(a2)
    assert_no_duplicates(stored)
    assert set(ids(accepted)) <= set(ids(stored)), "accepted messages lost by kill -9"
    assert [ev["seq"] for ev in stored] == list(range(1, len(stored) + 1))
    assert [ev["text"] for ev in stored] == [f"burst {i} {PAD}" for i in range(len(stored))]
    assert await a2.quit() == 0

    a3 = restart(node, tmp_path, "alice", "--peer", f"127.0.0.1:{b.port}")
    await a3.start()
    await connected(a3, b)
    await wait_ids(b, ids(stored), timeout=PROMPT_S * 2)
    own = await chat_works(a3, b, text="back after kill")
    assert own["seq"] == len(stored) + 1, own
    hb = by(await history(b), a)
    assert ids(hb) == [*ids(stored), own["id"]]
    assert_no_duplicates(hb)
    shown = Counter(ids(b.messages()))
    assert all(shown[msg_id] == 1 for msg_id in ids(stored)), "duplicate message events on b"
    assert ids(await history(a3)) == ids(hb)
    assert_clean(a2, a3, b)


async def test_corrupt_or_foreign_database_refused(node: NodeFactory, tmp_path: Path) -> None:
    """A damaged or foreign chinwag.db stops the node at start, saying which file; untouched."""
    a = node("alice", discovery=False)
    await a.start()
    assert await a.quit() == 0
    data_dir = tmp_path / "alice"
    db = data_dir / "chinwag.db"
    assert db.is_file()

    for extra in ("chinwag.db-wal", "chinwag.db-shm"):
        (data_dir / extra).unlink(missing_ok=True)
    garbage = b"\x13garbage" + os.urandom(16_384)
    db.write_bytes(garbage)
    err = await start_fails(data_dir)
    assert "chinwag.db" in err, err
    assert db.read_bytes() == garbage, "the damaged database was modified"

    db.unlink()
    with contextlib.closing(sqlite3.connect(db)) as other:
        other.execute("CREATE TABLE recipes(name TEXT, steps TEXT)")
        other.execute("INSERT INTO recipes VALUES ('bread', 'flour, water, salt, time')")
        other.commit()
    before = db.read_bytes()
    err = await start_fails(data_dir)
    assert "chinwag.db" in err, err
    assert db.read_bytes() == before, "the foreign database was modified"
    assert sorted(p.name for p in data_dir.glob("chinwag.db*")) == ["chinwag.db"]


# --- hostile peers ----------------------------------------------------------


async def assert_healthy(a: ChinwagProcess, b: ChinwagProcess, text: str) -> None:
    """Both nodes run, log no traceback, and chat both ways."""
    assert a.returncode is None and b.returncode is None, a.stderr_tail()
    await chat_works(a, b, text=text + " a->b")
    await chat_works(b, a, text=text + " b->a")
    for n in (a, b):
        assert not stderr_has_traceback(n), n.stderr_tail()


async def hostile(a: ChinwagProcess) -> HostilePeer:
    """A scripted peer connected to a (a has reported it joined)."""
    h = HostilePeer()
    await h.connect(a.port, timeout=PROMPT_S)
    await a.wait_for_peers([h.peer_id], timeout=PROMPT_S)
    return h


async def disconnected(a: ChinwagProcess, h: HostilePeer, code: str) -> None:
    """The node closed h's connection with reason `code` and reported it gone."""
    closed = await h.wait_closed(PROMPT_S)
    if not h.reset:  # a reset (unread data at the node) can swallow its goodbye
        assert closed.by_peer and closed.code == code, closed
    assert not stderr_has_traceback(a), a.stderr_tail()
    left = await a.wait_for("peer_left", timeout=PROMPT_S, from_start=True, peer_id=h.peer_id)
    assert code in left["reason"], left
    await h.close()


async def test_forged_relayed_message_disconnects_and_is_never_stored(
    node: NodeFactory,
) -> None:
    """A relayed message with a broken signature closes the relay's connection; never shown."""
    a, b = await start_pair(node)
    victim = Identity.generate()
    forged = []
    for case in ("flipped sig", "altered text", "flipped sig as history"):
        h = await hostile(a)
        genuine = h.message(1, f"signed by victim ({case})", author=victim, nick="victim")
        if case == "altered text":
            text = f"forged by mallory ({case})"
            body = m.ChatBody(
                room=genuine.body.room,
                author=genuine.body.author,
                nick=genuine.body.nick,
                ts=genuine.body.ts,
                seq=genuine.body.seq,
                text=text,
            )
            h.send_chat(genuine, body=m.encode(body))
        else:
            text = genuine.body.text
            sig = bytearray(genuine.sig)
            sig[7] ^= 0x01
            h.send_chat(genuine, sig=bytes(sig), hist=case.endswith("history"))
        forged.append(text)
        await disconnected(a, h, "bad_signature")
    assert "signature" in a.stderr_tail(20_000), a.stderr_tail()

    await assert_healthy(a, b, "after forgery")
    for n in (a, b):
        shown = [ev["text"] for ev in n.messages()]
        assert not set(forged) & set(shown), (n.nick, shown)
        assert not [ev for ev in n.messages() if ev["peer_id"] == victim.peer_id]
        stored = await history(n)
        assert not [ev for ev in stored if ev["peer_id"] == victim.peer_id], stored
        assert len(stored) == 2, stored


async def test_burst_of_forgeries_in_one_write(node: NodeFactory) -> None:
    """Hundreds of forged messages in one write end in one clean disconnect; none is shown."""
    a, b = await start_pair(node)
    h = await hostile(a)
    victim = Identity.generate()
    frames = []
    for seq in range(1, FORGERIES + 1):
        genuine = h.message(seq, f"forgery {seq}", author=victim, nick="victim")
        sig = bytearray(genuine.sig)
        sig[7] ^= 0x01
        frames.append(m.Chat(body=genuine.raw_body, sig=bytes(sig)))
    h.send_frames(frames)
    await h.drain()
    await disconnected(a, h, "bad_signature")
    await assert_healthy(a, b, "after forgeries")
    for n in (a, b):
        assert not [ev for ev in n.messages() if ev["peer_id"] == victim.peer_id]
        assert not [ev for ev in await history(n) if ev["peer_id"] == victim.peer_id]


async def test_equivocation_disconnects_and_keeps_the_first(node: NodeFactory) -> None:
    """Two different messages with one (author, room, seq): the first stays, the second never."""
    a, b = await start_pair(node)
    for how in ("one after the other", "in one write"):
        h = await hostile(a)
        first = h.message(1, f"x ({how})")
        second = h.message(1, f"y ({how})")
        assert first.id != second.id
        if how == "in one write":
            h.send_frames([m.Chat(body=msg.raw_body, sig=msg.sig) for msg in (first, second)])
        else:
            h.send_chat(first)
            await a.wait_for_message(first.body.text, timeout=PROMPT_S)
            h.send_chat(second)
        await disconnected(a, h, "equivocation")
        await b.wait_for_message(first.body.text, timeout=PROMPT_S)

        await assert_healthy(a, b, f"after equivocation {how}")
        for n in (a, b):
            assert count(n, "message", id=first.id) == 1, n.messages()
            assert count(n, "message", text=second.body.text) == 0, n.messages()
            mine = by(await history(n), h)
            assert ids(mine) == [first.id], mine
    assert "equivocation" in a.stderr_tail(20_000)


async def test_refused_equivocation_leaves_no_trace(node: NodeFactory) -> None:
    """A refused second version (dated in the future) does not make later messages late."""
    a, b = await start_pair(node)
    h = await hostile(a)
    first = h.message(1, "the real one")
    second = h.message(1, "from the future", ts_ms=int(time.time() * 1000) + 86_400_000)
    h.send_frames([m.Chat(body=msg.raw_body, sig=msg.sig) for msg in (first, second)])
    await disconnected(a, h, "equivocation")
    assert ids(by(await history(a), h)) == [first.id]
    await chat_works(b, a, text="sent after the refusal")
    got = await a.wait_for_message("sent after the refusal")
    assert "late" not in got, got


async def test_sync_flood_disconnects(node: NodeFactory) -> None:
    """A peer sending thousands of vectors is cut off as a sync flood; the node chats on."""
    a, b = await start_pair(node)
    h = await hostile(a)
    # Well past the burst allowance (limits.SYNC_REQUESTS_BURST) in one go.
    flood = [m.Vector(room="general", have={}) for _ in range(int(limits.SYNC_REQUESTS_BURST) * 3)]
    h.send_frames(flood)
    await h.drain()
    await disconnected(a, h, "sync_flood")
    assert "sync requests" in a.stderr_tail(20_000), a.stderr_tail()
    await assert_healthy(a, b, "after sync flood")


async def test_gap_reported_and_repaired(node: NodeFactory) -> None:
    """An author's skipped seqs are reported as a gap, asked for with a Want, and filled."""
    a = node("alice", discovery=False)
    await a.start()
    h = await hostile(a)
    t0 = int(time.time() * 1000)
    msgs = {seq: h.message(seq, f"numbered {seq}", ts_ms=t0 + seq) for seq in (1, 2, 3, 4)}

    h.send_chat(msgs[1])
    await a.wait_for_message("numbered 1", timeout=PROMPT_S)
    h.send_chat(msgs[4])
    gap = await a.wait_for("gap", timeout=PROMPT_S, peer_id=h.peer_id)
    assert gap == {"event": "gap", "room": "general", "peer_id": h.peer_id, "missing": [2, 3]}
    assert (await a.wait_for_message("numbered 4"))["seq"] == 4

    want = await h.wait_frame(m.Want, lambda w: w.author == h.peer_id, timeout=PROMPT_S)
    assert (want.room, want.lo, want.hi) == ("general", 2, 3), want
    h.send_frames([m.Chat(body=msgs[s].raw_body, sig=msgs[s].sig, hist=True) for s in (2, 3)])
    filled = await a.wait_for("gap_filled", timeout=PROMPT_S, peer_id=h.peer_id)
    assert filled == {"event": "gap_filled", "room": "general", "peer_id": h.peer_id}

    stored = await history(a)
    assert [ev["seq"] for ev in stored] == [1, 2, 3, 4], stored
    assert ids(stored) == [msgs[s].id for s in (1, 2, 3, 4)]
    assert count(a, "gap") == 1 and count(a, "gap_filled") == 1
    assert h.closed is None, h.closed
    await h.close()
    assert_clean(a)


# --- display order, search, info --------------------------------------------


async def test_late_marking_after_partition(node: NodeFactory, tmp_path: Path) -> None:
    """A message older than what is already shown arrives marked late; orders agree."""
    a = node("alice", discovery=False)
    await a.start()
    await a.say("early, from alice alone")
    early = await a.wait_for_message("early, from alice alone")

    b = node("bob", discovery=False)
    await b.start()
    texts = ["later, from bob alone 1", "later, from bob alone 2"]
    for t in texts:
        await b.say(t)
    later = await wait_own(b, texts)
    assert later[0]["ts"] > early["ts"]
    assert await b.quit() == 0

    b2 = restart(node, tmp_path, "bob", "--peer", f"127.0.0.1:{a.port}")
    await b2.start()
    await connected(a, b2)
    await wait_ids(b2, [early["id"]])
    await wait_ids(a, ids(later))

    got_b = await b2.wait_for_message(early["text"])
    assert got_b["late"] is True, got_b
    for ev in by(a.messages(), b):
        assert "late" not in ev, ev
    ha, hb = await history(a), await history(b2)
    assert ids(ha) == ids(hb) == [early["id"], *ids(later)], (ha, hb)
    assert hb[0]["late"] is True and not [ev for ev in ha if "late" in ev], (ha, hb)
    assert_clean(a, b, b2)


async def test_search(node: NodeFactory) -> None:
    """search finds a message by a substring, case-insensitively, on both sides."""
    a, b = await start_pair(node)
    own = await chat_works(a, b, text="The Quick Brown Fox")
    await chat_works(b, a, text="a lazy dog")
    for n in (a, b):
        res = await ask(n, {"cmd": "search", "text": "quick BROWN", "limit": 10}, "search")
        assert ids(res["messages"]) == [own["id"]], res
        assert res["messages"][0]["text"] == "The Quick Brown Fox"
        assert res["messages"][0]["peer_id"] == a.peer_id
    res = await ask(a, {"cmd": "search", "text": "no such words", "limit": 10}, "search")
    assert res["messages"] == [], res
    assert_clean(a, b)


async def test_info_lists_the_holder_after_delivery(node: NodeFactory) -> None:
    """Once our message is reported delivered, info on it names the peer holding it."""
    a, b = await start_pair(node)
    own = await chat_works(a, b, text="who has this?")
    await a.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=own["id"], count=1, of=1)
    info = await ask(a, {"cmd": "info", "id": own["id"]}, "info")
    assert (info["id"], info["room"], info["peer_id"], info["seq"]) == (
        own["id"],
        "general",
        a.peer_id,
        1,
    ), info
    assert [(h["peer_id"], h["nick"]) for h in info["holders"]] == [(b.peer_id, "bob")], info
    assert_clean(a, b)


async def test_history_and_search_carry_delivery_counts_of_own_messages(
    node: NodeFactory,
) -> None:
    """Own messages in history/search answers carry delivered/of; others' and live ones do not."""
    a, b = await start_pair(node)
    own = await chat_works(a, b, text="counted mine")
    theirs = await chat_works(b, a, text="counted theirs")
    await a.send({"cmd": "dm", "to": b.peer_id, "text": "counted private"})
    own_dm = await a.wait_for("dm", timeout=PROMPT_S, from_start=True, own=True)
    for mine in (own, own_dm):
        await a.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=mine["id"], count=1)
        assert "delivered" not in mine and "of" not in mine, mine  # live events keep their shape

    got = {ev["id"]: ev for ev in await history(a)}
    assert (got[own["id"]]["delivered"], got[own["id"]]["of"]) == (1, 1), got
    assert "delivered" not in got[theirs["id"]] and "of" not in got[theirs["id"]], got
    conv = await ask(a, {"cmd": "history", "room": "@bob"}, "history")
    dm = {ev["id"]: ev for ev in conv["messages"]}[own_dm["id"]]
    assert (dm["event"], dm["delivered"], dm["of"]) == ("dm", 1, 1), dm

    res = await ask(a, {"cmd": "search", "text": "counted", "limit": 10}, "search")
    found = {ev["id"]: ev for ev in res["messages"]}
    assert set(found) == {own["id"], theirs["id"], own_dm["id"]}, res
    assert (found[own["id"]]["delivered"], found[own["id"]]["of"]) == (1, 1), res
    assert (found[own_dm["id"]]["delivered"], found[own_dm["id"]]["of"]) == (1, 1), res
    assert "delivered" not in found[theirs["id"]] and "of" not in found[theirs["id"]], res
    # On bob's side the roles swap: his message carries the counts, alice's does not.
    await b.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=theirs["id"], count=1)
    on_b = {ev["id"]: ev for ev in await history(b)}
    assert (on_b[theirs["id"]]["delivered"], on_b[theirs["id"]]["of"]) == (1, 1), on_b
    assert "delivered" not in on_b[own["id"]], on_b
    assert_clean(a, b)

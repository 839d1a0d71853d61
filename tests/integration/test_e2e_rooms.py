"""Rooms, private messages and verified identities between real processes on loopback.

Every node runs with discovery off; topologies are built with --peer. Message
texts are random markers, so that finding one in a relay's events, logs or
database files cannot happen by chance.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

from it_support import (
    PROMPT_S,
    ChinwagProcess,
    Event,
    NodeFactory,
    ask,
    ask_until,
    chat_works,
    connected,
    count,
    private_rooms_stored,
    start_pair,
    start_triangle,
    stderr_has_traceback,
    store_leaks,
)

#: Messages returned by one history command at most (limits.MAX_HISTORY).
ALL = 10_000


# --- helpers ----------------------------------------------------------------


def marker(label: str) -> str:
    """A message text that cannot occur anywhere by chance."""
    return f"{label}-{uuid.uuid4().hex}"


async def start_line(node: NodeFactory) -> tuple[ChinwagProcess, ChinwagProcess, ChinwagProcess]:
    """A - B - C: A and C dial B (--peer), so B is the only path between them."""
    b = node("bob", discovery=False)
    await b.start()
    a = node("alice", "--peer", f"127.0.0.1:{b.port}", discovery=False)
    c = node("carol", "--peer", f"127.0.0.1:{b.port}", discovery=False)
    await asyncio.gather(a.start(), c.start())
    await asyncio.gather(connected(a, b), connected(c, b))
    return a, b, c


async def history(node: ChinwagProcess, room: str) -> Event:
    """The node's `history` answer for a room or `@peer` conversation."""
    return await ask(node, {"cmd": "history", "room": room, "limit": ALL}, "history")


async def search(node: ChinwagProcess, text: str) -> list[Event]:
    reply = await ask(node, {"cmd": "search", "text": text, "limit": 100}, "search")
    return list(reply["messages"])


async def join(node: ChinwagProcess, room: str, passphrase: str | None = None) -> Event:
    cmd: Event = {"cmd": "join", "room": room}
    if passphrase is not None:
        cmd["passphrase"] = passphrase
    joined = await ask(node, cmd, "joined")
    assert joined == {"event": "joined", "room": room, "private": passphrase is not None}, joined
    return joined


def room_entry(listing: Event, name: str) -> Event | None:
    """The entry for one room in a `rooms` answer."""
    entries = [r for r in listing["rooms"] if r["name"] == name]
    assert len(entries) <= 1, listing
    return entries[0] if entries else None


async def dm(node: ChinwagProcess, to: str, text: str) -> Event:
    """Send a private message; return the sender's own `dm` event."""
    await node.send({"cmd": "dm", "to": to, "text": text})
    return await node.wait_for("dm", timeout=PROMPT_S, from_start=True, text=text, own=True)


async def got_dm(node: ChinwagProcess, own: Event, to: ChinwagProcess) -> Event:
    """Wait for node to show the received copy of own (the sender's dm event); check it."""
    got = await node.wait_for("dm", timeout=PROMPT_S, from_start=True, id=own["id"])
    want = {**own, "own": False}
    assert got == want and got["to"] == to.peer_id, (got, own)
    return got


def mentions(node: ChinwagProcess, text: str) -> list[Event]:
    """Every event of node whose JSON contains text."""
    return [ev for ev in node.events if text in json.dumps(ev)]


def errors(node: ChinwagProcess) -> list[str]:
    return [ev["message"] for ev in node.events if ev.get("event") == "error"]


async def say_in(node: ChinwagProcess, room: str, texts: list[str]) -> list[Event]:
    """Send texts to a room; return the node's own message events for them, in order."""
    for t in texts:
        await node.say(t, room=room)
    return [
        await node.wait_for("message", timeout=PROMPT_S, from_start=True, text=t, own=True)
        for t in texts
    ]


async def joiner_catches_up(a: ChinwagProcess, b: ChinwagProcess, sent: list[Event]) -> None:
    """b joins sent's room and receives those messages (events and history), with receipts."""
    room = sent[0]["room"]
    assert not [ev for ev in b.messages() if ev["room"] == room], b.messages()
    await join(b, room)
    got = [await b.wait_for_message(ev["text"]) for ev in sent]
    assert got == [{**ev, "own": False} for ev in sent], (got, sent)
    hist = await history(b, room)
    assert hist["room"] == room, hist
    assert [ev["id"] for ev in hist["messages"]] == [ev["id"] for ev in sent], hist
    for ev in sent:
        await a.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=ev["id"], count=1)
    assert errors(a) == [] and errors(b) == [], (errors(a), errors(b))
    assert_no_traceback(a, b)


def assert_no_traceback(*nodes: ChinwagProcess) -> None:
    for n in nodes:
        assert not stderr_has_traceback(n), (n.nick, n.stderr_tail())


# --- public rooms -----------------------------------------------------------


async def test_room_messages_reach_members_only(node: NodeFactory) -> None:
    """A room's messages are shown and stored by its members only; leave stops them."""
    a = node("alice", discovery=False)
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    c = node("carol", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await asyncio.gather(b.start(), c.start())
    await asyncio.gather(connected(a, b), connected(a, c))

    await join(a, "dev")
    await join(b, "dev")
    # Sorted by name; members: peers that announced the room, plus A itself.
    want = [
        {"name": "dev", "members": 2, "joined": True},
        {"name": "general", "members": 3, "joined": True},
    ]
    await ask_until(a, {"cmd": "rooms"}, "rooms", lambda ev: ev["rooms"] == want)

    text = marker("in-dev")
    await a.say(text, room="dev")
    own = await a.wait_for("message", timeout=PROMPT_S, from_start=True, text=text)
    assert (own["room"], own["own"], own["peer_id"]) == ("dev", True, a.peer_id), own
    got = await b.wait_for_message(text)
    assert got == {**own, "own": False}, (got, own)
    # C got the dev message before this one (one connection, in order): it was dropped.
    await chat_works(a, b, c, text=marker("general-after-dev"))
    assert not mentions(c, text), mentions(c, text)
    assert await search(c, text) == []
    not_in = await ask(c, {"cmd": "history", "room": "dev"}, "error")
    assert "not in room" in not_in["message"], not_in
    assert [ev["id"] for ev in (await history(b, "dev"))["messages"]] == [own["id"]]
    assert [ev["id"] for ev in await search(b, text)] == [own["id"]]
    c_rooms = await ask(c, {"cmd": "rooms"}, "rooms")
    assert room_entry(c_rooms, "dev") == {"name": "dev", "members": 1, "joined": False}, c_rooms

    # Sending to a room one has not joined is refused.
    refused = await ask(c, {"cmd": "send", "text": "nope", "room": "dev"}, "error")
    assert "not in room" in refused["message"] and "join" in refused["message"], refused
    assert count(c, "message", text="nope") == 0

    left = await ask(b, {"cmd": "leave", "room": "dev"}, "left")
    assert left == {"event": "left", "room": "dev"}, left
    await ask_until(
        a,
        {"cmd": "rooms"},
        "rooms",
        lambda ev: room_entry(ev, "dev") == {"name": "dev", "members": 1, "joined": True},
    )
    after = marker("dev-after-leave")
    await a.say(after, room="dev")
    await a.wait_for("message", timeout=PROMPT_S, from_start=True, text=after)
    await chat_works(a, b, c, text=marker("general-after-leave"))
    assert not mentions(b, after) and not mentions(c, after)
    assert await search(b, after) == []
    refused = await ask(b, {"cmd": "send", "text": "gone", "room": "dev"}, "error")
    assert "not in room" in refused["message"], refused
    b_rooms = await ask(b, {"cmd": "rooms"}, "rooms")
    assert room_entry(b_rooms, "dev") == {"name": "dev", "members": 1, "joined": False}, b_rooms

    for n in (a, b, c):
        assert await n.quit() == 0, n.stderr_tail()
    assert store_leaks(c.data_dir, text) == [] and store_leaks(c.data_dir, after) == []
    assert store_leaks(b.data_dir, after) == []
    assert errors(a) == [], errors(a)
    assert_no_traceback(a, b, c)


async def test_join_fetches_history_sent_before_connecting(node: NodeFactory) -> None:
    """Messages a peer sent in a room before we connected reach us when we join the room."""
    a = node("alice", discovery=False)
    await a.start()
    await join(a, "ops")
    sent = await say_in(a, "ops", [marker(f"ops-{i}") for i in range(3)])
    assert [ev["seq"] for ev in sent] == [1, 2, 3], sent
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    await chat_works(a, b, text=marker("flush"))
    await joiner_catches_up(a, b, sent)


async def test_join_fetches_history_sent_while_connected(node: NodeFactory) -> None:
    """Messages sent in a room while we were connected but not in it reach us when we join."""
    a, b = await start_pair(node)
    await join(a, "ops")
    sent = await say_in(a, "ops", [marker(f"ops-{i}") for i in range(3)])
    # B has not joined: it was sent the messages live, and dropped them, and then A's
    # vector for the room (VECTOR_DELAY_S after they were stored), which it ignores.
    # That vector must be behind B before B joins, or it (not the join) would fetch the
    # history: once A holds B's receipt for a later message, A's vector timer has fired,
    # and what A sends after that reaches B behind the vector on the same connection.
    flush = await chat_works(a, b, text=marker("flush"))
    await a.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=flush["id"])
    await chat_works(a, b, text=marker("after-the-vector"))
    await joiner_catches_up(a, b, sent)


# --- private messages ---------------------------------------------------------


async def test_dm_through_a_relay_is_unreadable_there(node: NodeFactory) -> None:
    """In A - B - C, A's private message reaches C via B; B shows and stores nothing of it."""
    a, b, c = await start_line(node)
    text = marker("secret-dm")
    own = await dm(a, c.peer_id, text)
    assert (own["peer_id"], own["nick"], own["to"], own["seq"]) == (
        a.peer_id,
        "alice",
        c.peer_id,
        1,
    ), own
    await got_dm(c, own, to=c)

    # C now knows A by nick (from the signed message): reply by nick, again via B.
    reply = marker("secret-reply")
    back = await dm(c, "alice", reply)
    assert (back["peer_id"], back["to"]) == (c.peer_id, a.peer_id), back
    await got_dm(a, back, to=a)

    conv = await history(c, f"@{a.peer_id}")
    assert conv["room"] == f"@{a.peer_id[:8]}", conv
    assert [(ev["event"], ev["id"], ev["text"]) for ev in conv["messages"]] == [
        ("dm", own["id"], text),
        ("dm", back["id"], reply),
    ], conv
    conv_a = await history(a, f"@{c.peer_id}")
    assert [ev["id"] for ev in conv_a["messages"]] == [own["id"], back["id"]], conv_a
    # A learns where C listens from C's presence record and opens a direct connection for
    # the conversation (docs/mesh.md); until it is up, the messages pass B as ciphertext.
    # Either way B shows and keeps none of them.
    await chat_works(a, b, c, text=marker("flush"))
    for t in (text, reply):
        assert not mentions(b, t), mentions(b, t)
        assert await search(b, t) == []
    assert count(b, "dm") == 0

    for n in (a, b, c):
        assert await n.quit() == 0, n.stderr_tail()
    for t in (text, reply):
        assert store_leaks(b.data_dir, t) == [], store_leaks(b.data_dir, t)
        assert t.encode() not in b.stderr_path.read_bytes()
        assert store_leaks(c.data_dir, t), "the recipient did not store the conversation?"
    assert private_rooms_stored(b.data_dir) == set(), private_rooms_stored(b.data_dir)
    assert errors(a) == errors(b) == errors(c) == []
    assert_no_traceback(a, b, c)


async def test_dm_direct_reply_and_outbox(node: NodeFactory, tmp_path: Path) -> None:
    """Direct DMs both ways with receipts; DMs to an offline peer are delivered when it returns."""
    a, b = await start_pair(node)
    first = await dm(a, "bob", marker("hi-bob"))
    assert first["to"] == b.peer_id, first
    await got_dm(b, first, to=b)
    await a.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=first["id"], count=1, of=1)
    reply = await dm(b, a.peer_id, marker("hi-alice"))
    await got_dm(a, reply, to=a)
    await b.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=reply["id"], count=1, of=1)
    assert count(a, "message") == count(b, "message") == 0

    assert await b.quit() == 0, b.stderr_tail()
    await a.wait_for("peer_left", timeout=PROMPT_S, peer_id=b.peer_id)
    # B is offline but known: by nick (from the store) and by id.
    queued = [await dm(a, "bob", marker("while-away-1")), await dm(a, b.peer_id, marker("away-2"))]
    assert [ev["seq"] for ev in queued] == [2, 3], queued
    assert not [ev for ev in queued if count(a, "delivered", id=ev["id"])]

    b2 = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False, data_dir=tmp_path / "bob")
    await b2.start()
    await connected(a, b2)
    for ev in queued:
        await got_dm(b2, ev, to=b2)
        await a.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=ev["id"], count=1, of=1)
    want = [first["id"], reply["id"], *(ev["id"] for ev in queued)]
    for n, other in ((a, b2), (b2, a)):
        conv = await history(n, f"@{other.peer_id}")
        assert [ev["id"] for ev in conv["messages"]] == want, (n.nick, conv)
        assert all(ev["event"] == "dm" for ev in conv["messages"]), conv
    by_nick = await history(b2, "@alice")
    assert [ev["id"] for ev in by_nick["messages"]] == want, by_nick
    assert errors(a) == errors(b) == errors(b2) == []
    assert_no_traceback(a, b, b2)


async def test_ambiguous_nick_is_refused(node: NodeFactory) -> None:
    """Two peers called sam: dm and whois by nick list both short ids; by id works."""
    a = node("alice", discovery=False)
    await a.start()
    sam1 = node("sam1", "--peer", f"127.0.0.1:{a.port}", nick="sam", discovery=False)
    sam2 = node("sam2", "--peer", f"127.0.0.1:{a.port}", nick="sam", discovery=False)
    await asyncio.gather(sam1.start(), sam2.start())
    await asyncio.gather(connected(a, sam1), connected(a, sam2))

    for cmd in (
        {"cmd": "dm", "to": "sam", "text": "which one?"},
        {"cmd": "whois", "who": "sam"},
    ):
        err = await ask(a, cmd, "error")
        msg = err["message"]
        assert "sam" in msg and sam1.peer_id[:8] in msg and sam2.peer_id[:8] in msg, err
        assert sam1.peer_id not in msg and sam2.peer_id not in msg, f"not short ids: {err}"
    assert count(a, "dm") == 0

    own = await dm(a, sam1.peer_id, marker("for-sam1"))
    await got_dm(sam1, own, to=sam1)
    await chat_works(a, sam1, sam2, text=marker("flush"))
    assert count(sam2, "dm") == 0 and not mentions(sam2, own["text"])
    assert_no_traceback(a, sam1, sam2)


# --- private rooms ------------------------------------------------------------


async def test_private_room_needs_the_passphrase(node: NodeFactory) -> None:
    """A, B, C all connected: A and C share a private room; B lacks the passphrase."""
    a, b, c = await start_triangle(node)
    await join(a, "secret", "p1")
    await join(c, "secret", "p1")
    listing = await ask_until(
        b,
        {"cmd": "rooms"},
        "rooms",
        lambda ev: (room_entry(ev, "(private)") or {}).get("members", 0) >= 2,
    )
    assert room_entry(listing, "(private)") == {"name": "(private)", "members": 2, "joined": False}
    assert room_entry(listing, "secret") is None, listing

    err = await ask(b, {"cmd": "join", "room": "secret", "passphrase": "wrong"}, "error")
    assert "wrong passphrase" in err["message"] and "secret" in err["message"], err
    assert count(b, "joined", room="secret") == 0
    refused = await ask(b, {"cmd": "send", "text": "let me in", "room": "secret"}, "error")
    assert "not in room" in refused["message"], refused

    text = marker("private-room")
    await a.say(text, room="secret")
    own = await a.wait_for("message", timeout=PROMPT_S, from_start=True, text=text)
    assert (own["room"], own["own"]) == ("secret", True), own
    got = await c.wait_for_message(text)
    assert got == {**own, "own": False}, (got, own)
    hist = await history(c, "secret")
    assert hist["room"] == "secret" and [ev["id"] for ev in hist["messages"]] == [own["id"]]
    # Nothing of it was shown at B.
    assert not mentions(b, text), mentions(b, text)
    assert await search(b, text) == []

    for n in (a, b, c):
        assert await n.quit() == 0, n.stderr_tail()
    assert store_leaks(b.data_dir, text) == [], store_leaks(b.data_dir, text)
    assert text.encode() not in b.stderr_path.read_bytes()
    assert private_rooms_stored(b.data_dir) == set(), private_rooms_stored(b.data_dir)
    assert [e for e in errors(b) if "wrong passphrase" not in e and "not in room" not in e] == []
    assert errors(a) == errors(c) == []
    assert_no_traceback(a, b, c)


# --- identities -----------------------------------------------------------------


async def test_whois_verify_warning_and_block(node: NodeFactory) -> None:
    """Safety numbers agree; a verified nick on a new key warns; block and unblock."""
    a, b = await start_pair(node)
    wa = await ask(a, {"cmd": "whois", "who": "bob"}, "whois")
    wb = await ask(b, {"cmd": "whois", "who": "alice"}, "whois")
    self_b = await ask(b, {"cmd": "whois", "who": b.peer_id}, "whois")
    assert (wa["peer_id"], wa["nick"], wa["verified"], wa["blocked"], wa["online"]) == (
        b.peer_id,
        "bob",
        False,
        False,
        True,
    ), wa
    assert (wb["peer_id"], wb["nick"]) == (a.peer_id, "alice"), wb
    assert re.fullmatch(r"[0-9a-f]{4}( [0-9a-f]{4}){7}", wa["fingerprint"]), wa
    assert wa["fingerprint"] == self_b["fingerprint"] != wb["fingerprint"], (wa, wb, self_b)
    assert re.fullmatch(r"\d{5}( \d{5}){11}", wa["safety_number"]), wa
    assert wa["safety_number"] == wb["safety_number"], (wa, wb)

    # Oneself is no peer to write to privately or to block.
    to_self = await ask(a, {"cmd": "dm", "to": a.peer_id, "text": "me?"}, "error")
    assert "that is you" in to_self["message"], to_self
    block_self = await ask(a, {"cmd": "block", "who": "alice"}, "error")
    assert "cannot block yourself" in block_self["message"], block_self
    assert count(a, "dm") == 0

    shown = await ask(a, {"cmd": "verify", "who": "bob"}, "whois")
    assert shown == wa, (shown, wa)
    confirmed = await ask(a, {"cmd": "verify", "who": "bob", "confirm": True}, "whois")
    assert confirmed == {**wa, "verified": True}, confirmed
    assert (await ask(a, {"cmd": "whois", "who": b.peer_id}, "whois"))["verified"] is True

    assert await b.quit() == 0, b.stderr_tail()
    await a.wait_for("peer_left", timeout=PROMPT_S, peer_id=b.peer_id)
    gone = await ask(a, {"cmd": "whois", "who": b.peer_id}, "whois")
    assert (gone["online"], gone["verified"]) == (False, True), gone
    assert count(a, "warning") == 0

    # Same nick, new key: A warns once the impostor connects.
    b2 = node("bob2", "--peer", f"127.0.0.1:{a.port}", nick="bob", discovery=False)
    await b2.start()
    assert b2.peer_id != b.peer_id
    await connected(a, b2)
    warning = await a.wait_for("warning", timeout=PROMPT_S, from_start=True)
    assert warning["peer_id"] == b2.peer_id, warning
    assert "bob" in warning["message"] and b2.peer_id[:8] in warning["message"], warning
    assert b.peer_id[:8] in warning["message"], warning
    assert count(b2, "warning") == 0

    blocked = await ask(a, {"cmd": "block", "who": b2.peer_id}, "whois")
    assert (blocked["peer_id"], blocked["blocked"], blocked["verified"]) == (
        b2.peer_id,
        True,
        False,
    ), blocked
    hidden = marker("while-blocked")
    await b2.say(hidden)
    await b2.wait_for("message", timeout=PROMPT_S, from_start=True, text=hidden, own=True)
    # A barrier on the same connection: the nick change is sent after the message.
    await b2.send({"cmd": "nick", "nick": "bobby"})
    await a.wait_for("nick", timeout=PROMPT_S, from_start=True, peer_id=b2.peer_id, nick="bobby")
    assert not mentions(a, hidden), mentions(a, hidden)
    assert await search(a, hidden) == []
    assert hidden not in [ev["text"] for ev in (await history(a, "general"))["messages"]]

    unblocked = await ask(a, {"cmd": "unblock", "who": b2.peer_id}, "whois")
    assert unblocked["blocked"] is False, unblocked
    await chat_works(b2, a, text=marker("after-unblock"))
    assert errors(a) == [to_self["message"], block_self["message"]], errors(a)
    assert errors(b) == errors(b2) == []
    assert_no_traceback(a, b, b2)

"""Private rooms with Megolm between real processes on loopback (docs/protocol.md 27).

Three members; one leaves and the author's next messages use a new session whose key the
leaver never gets; a member that was away catches up by sync and reads the history through
another member's forwarded key. The stores are read afterwards (read-only sqlite).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from pathlib import Path

import pytest
from it_support import (
    PROMPT_S,
    ChinwagProcess,
    Event,
    NodeFactory,
    ask,
    ask_until,
    connected,
    start_triangle,
    stderr_has_traceback,
    store_leaks,
)

from chinwag.crypto import box, group
from chinwag.protocol import messages as m

PASS = "correct horse battery staple"


def marker(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


async def join_vault(n: ChinwagProcess) -> None:
    joined = await ask(n, {"cmd": "join", "room": "vault", "passphrase": PASS}, "joined")
    assert joined["private"] is True, joined


def vault_members(listing: Event) -> int:
    return next((r["members"] for r in listing["rooms"] if r["name"] == "vault"), 0)


async def members_seen(n: ChinwagProcess, want: int) -> None:
    """Wait until n counts `want` members of vault (itself included) announcing it."""
    await ask_until(n, {"cmd": "rooms"}, "rooms", lambda ev: vault_members(ev) == want)


def ro(data_dir: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(f"file:{data_dir / 'chinwag.db'}?mode=ro", uri=True))


def stored_enc(data_dir: Path, msg_id: str) -> bytes:
    """The `enc` of a stored message's signed body."""
    with ro(data_dir) as db:
        (body,) = db.execute("SELECT body FROM messages WHERE id=?", (msg_id,)).fetchone()
    return m.decode_body(body).enc


def inbound_sids(data_dir: Path, author: str) -> set[str]:
    with ro(data_dir) as db:
        rows = db.execute("SELECT sid FROM megolm_inbound WHERE author=?", (author,)).fetchall()
    return {r[0] for r in rows}


def assert_clean(*nodes: ChinwagProcess) -> None:
    for n in nodes:
        assert not [e for e in n.events if e.get("event") == "error"], (n.nick, n.events[-5:])
        assert not stderr_has_traceback(n), (n.nick, n.stderr_tail())


async def test_three_members_one_leaves_and_the_next_session_is_not_its(
    node: NodeFactory,
) -> None:
    a, b, c = await start_triangle(node)
    for n in (a, b, c):
        await join_vault(n)
    await members_seen(b, 3)

    before = marker("before")
    await b.say(before, room="vault")
    own1 = await b.wait_for("message", timeout=PROMPT_S, from_start=True, text=before)
    for n in (a, c):
        got = await n.wait_for_message(before)
        assert got == {**own1, "own": False}, got

    left = await ask(a, {"cmd": "leave", "room": "vault"}, "left")
    assert left["room"] == "vault", left
    await members_seen(b, 2)

    after = marker("after")
    await b.say(after, room="vault")
    own2 = await b.wait_for("message", timeout=PROMPT_S, from_start=True, text=after)
    assert await c.wait_for_message(after) == {**own2, "own": False}

    for n in (a, b, c):
        assert await n.quit() == 0, n.stderr_tail()
    sid1 = group.envelope(stored_enc(c.data_dir, own1["id"]))[0]
    sid2 = group.envelope(stored_enc(c.data_dir, own2["id"]))[0]
    assert sid1 != sid2  # rotated when alice left
    held_by_a = inbound_sids(a.data_dir, b.peer_id)
    assert sid1 in held_by_a and sid2 not in held_by_a, (sid1, sid2, held_by_a)
    assert store_leaks(a.data_dir, after) == []
    # The passphrase no longer decrypts messages: it only admits.
    key = box.derive_room_key("vault", PASS)
    with pytest.raises(box.BadCiphertext):
        box.open_room(key, stored_enc(c.data_dir, own1["id"]))
    assert_clean(b, c)


async def test_a_member_that_was_away_catches_up_by_sync_and_reads_history(
    node: NodeFactory, tmp_path: Path
) -> None:
    """carol joins, goes away; alice and bob write (alice's key reaches bob only); alice goes;
    carol comes back to bob alone: sync brings alice's messages, bob forwards alice's key
    when carol asks for it, and carol reads (and finds) them."""
    b = node("bob", discovery=False)
    await b.start()
    a = node("alice", "--peer", f"127.0.0.1:{b.port}", discovery=False)
    c = node("carol", "--peer", f"127.0.0.1:{b.port}", discovery=False)
    await asyncio.gather(a.start(), c.start())
    await asyncio.gather(connected(a, b), connected(c, b))
    for n in (a, b, c):
        await join_vault(n)
    assert await c.quit() == 0

    texts = {a: marker("from-alice"), b: marker("from-bob")}
    for n, text in texts.items():
        await n.say(text, room="vault")
    await b.wait_for_message(texts[a])  # bob holds alice's message (and her key)
    assert await a.quit() == 0

    c2 = node("carol", "--peer", f"127.0.0.1:{b.port}", discovery=False, data_dir=c.data_dir)
    await c2.start()
    await connected(c2, b)
    for text in texts.values():
        got = await c2.wait_for_message(text)
        assert got["room"] == "vault", got
    found = await ask(c2, {"cmd": "search", "text": texts[a], "limit": 10}, "search")
    assert [e["text"] for e in found["messages"]] == [texts[a]]
    assert_clean(b, c2)

"""Mail that waits for its reader (issue 15 item 4): a third peer holds a private message.

Line a - c - b over loopback (`--peer`, no discovery): a writes to b while b is
offline; c holds the sealed item; a goes; b returns and reads it exactly once;
b goes; a returns and its `delivered` count rises through c (b is gone by then).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from hostile_peer import HostilePeer
from it_support import (
    PROMPT_S,
    ChinwagProcess,
    NodeFactory,
    ask,
    connected,
    count,
    free_tcp_port,
    stderr_has_traceback,
    store_leaks,
)

from chinwag import limits
from chinwag.crypto.identity import Identity, public_from_peer_id
from chinwag.protocol import mailbox as mb
from chinwag.protocol import messages as m
from chinwag.protocol.chat import make_message

SECRET = "the parcel is under the mat"


def start_args(hub: ChinwagProcess) -> tuple[str, ...]:
    return ("--peer", f"127.0.0.1:{hub.port}")


async def test_mail_waits_with_a_third_peer_and_its_receipt_returns(
    node: NodeFactory, tmp_path: Path
) -> None:
    c = node("carol", discovery=False)
    await c.start()
    a = node("ann", *start_args(c), discovery=False)
    b = node("bob", *start_args(c), discovery=False)
    await asyncio.gather(a.start(), b.start())
    await asyncio.gather(connected(a, c), connected(b, c))
    b_id = b.peer_id
    # b goes away; a knows it (it met it through c's presence records, and by id).
    assert await b.quit() == 0
    await c.wait_for("peer_left", timeout=PROMPT_S, from_start=True, peer_id=b_id)

    await a.send({"cmd": "dm", "to": b_id, "text": SECRET})
    own = await a.wait_for("dm", timeout=PROMPT_S, from_start=True, text=SECRET)
    mailed = await a.wait_for("mailed", timeout=PROMPT_S, from_start=True, id=own["id"])
    assert mailed["holders"] == 1, mailed  # c is the only candidate
    assert await a.quit() == 0

    # b returns (a is gone): c delivers the mail, b reads it once.
    b2 = node("bob", *start_args(c), discovery=False, data_dir=b.data_dir)
    await b2.start()
    got = await b2.wait_for("dm", timeout=PROMPT_S, from_start=True, text=SECRET)
    assert got["id"] == own["id"] and got["peer_id"] == a.peer_id and not got["own"], got
    # Its receipt is mailed back through c (a is offline): wait until c took it, then go.
    await _until_holds_for(c, a.peer_id)
    assert await b2.quit() == 0
    assert count(b2, "dm", text=SECRET) == 1

    # What c keeps names each item's reader, never its author: here b's receipt to a names
    # neither b's id nor its key, and its depositor (b) only as a tag keyed by a secret of
    # c's process.
    rows = _rows(c.data_dir, "SELECT recipient, sender, item FROM mailbox")
    assert rows and {r[0] for r in rows} == {a.peer_id}, rows
    for _reader, sender, item in rows:
        assert b_id not in sender and a.peer_id not in sender, sender
        assert public_from_peer_id(b_id) not in item and b_id.encode() not in item

    # a returns while b is gone: c hands it b's receipt, the delivered count rises.
    a2 = node("ann", *start_args(c), discovery=False, data_dir=a.data_dir)
    await a2.start()
    delivered = await a2.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=own["id"])
    assert delivered["count"] == 1, delivered
    assert b_id not in a2.connected_peers()

    # b once more: nothing is delivered twice.
    b3 = node("bob", *start_args(c), discovery=False, data_dir=b.data_dir)
    await b3.start()
    await connected(b3, c)
    found = await ask(b3, {"cmd": "search", "text": "parcel"}, "search")
    assert [m["text"] for m in found["messages"]] == [SECRET], found
    assert count(b3, "dm", text=SECRET) == 0

    # The holder never stored or showed readable text.
    assert not any(SECRET in str(e) for e in c.events)
    assert await c.quit() == 0
    assert store_leaks(c.data_dir, SECRET) == []
    assert store_leaks(c.data_dir, "parcel") == []


async def _until_holds_for(c: ChinwagProcess, reader: str) -> None:
    """Wait until c's store holds an item for reader (b's mailed receipt)."""

    db = c.data_dir / "chinwag.db"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROMPT_S
    while loop.time() < deadline:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            n = conn.execute(
                "SELECT count(*) FROM mailbox WHERE recipient=?", (reader,)
            ).fetchone()[0]
        finally:
            conn.close()
        if n >= 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{c.nick} never held mail for {reader[:8]}")


async def test_a_holder_refuses_bad_mail_with_reasons_and_cuts_forgers(node: NodeFactory) -> None:
    """Forged, replayed, expired and flooding mail against a real holder; its reader gets the
    good item, and once acknowledged it is gone (and cannot be put again)."""
    c = node("carol", discovery=False)
    await c.start()
    reader = Identity.generate()
    author = HostilePeer(nick="author")
    await author.connect(c.port)
    now = int(time.time())
    msg = make_message(author.identity, "general", "author", now * 1000, 1, "hi")
    good = mb.make_item(
        author.identity, reader.public, m.Chat(body=msg.raw_body, sig=msg.sig), now + 60
    )
    stale = mb.make_item(author.identity, reader.public, m.Vector(room="general", have={}), now - 1)
    author.send_frames([m.MailPut(items=[good, stale])])
    ok = await author.wait_frame(m.MailOk)
    assert ok.ids == [mb.mail_id(good.box)]
    no = await author.wait_frame(m.MailNo)
    assert no.reason == "bad_expiry" and no.ids == [mb.mail_id(stale.box)]
    author.send_frames([m.MailPut(items=[good])])
    again = await author.wait_frame(m.MailNo, lambda f: f.reason == "replayed")
    assert again.ids == [mb.mail_id(good.box)]

    # The reader connects: the item is delivered; its ack deletes it.
    bob = HostilePeer(identity=reader, nick="bob")
    await bob.connect(c.port)
    got = await bob.wait_frame(m.MailDeliver)
    assert got.items == [good]
    assert mb.open_item(reader, good).frame == m.Chat(body=msg.raw_body, sig=msg.sig)
    bob.send_frames([m.MailAck(ids=[mb.mail_id(good.box)])])
    await _until_holds_none(c, reader.peer_id)
    # Acknowledged mail put again is a replay (its tombstone stays until it expires).
    author.send_frames([m.MailPut(items=[good])])
    await author.wait_frame(m.MailNo, lambda f: f.reason == "replayed" and f is not again)

    # The author and its signature are inside the seal: c cannot tell an item whose expiry
    # was altered (its reader drops it) from a good one, nor who wrote it; another peer
    # may deposit it (counted against that depositor's quota).
    fresh = mb.make_item(
        author.identity, reader.public, m.Vector(room="general", have={}), now + 60
    )
    forged = m.MailItem(fresh.to, fresh.exp + 1, fresh.box)
    author.send_frames([m.MailPut(items=[forged])])
    kept = await author.wait_frame(m.MailOk, lambda f: f is not ok)
    assert kept.ids == [mb.mail_id(forged.box)]

    # A flood of puts: cut with mail_flood.
    flooder = HostilePeer(nick="flooder")
    await flooder.connect(c.port)
    junk = [
        mb.make_item(flooder.identity, reader.public, m.Vector(room="general", have={}), now - 1)
    ] * 64  # within MAX_FRAME
    flooder.send_frames([m.MailPut(items=junk)] * (int(limits.MAILBOX_PUT_BURST) // len(junk) + 2))
    closed = await flooder.wait_closed(PROMPT_S)
    assert closed.code == "mail_flood", closed
    assert not stderr_has_traceback(c)


async def _until_holds_none(c: ChinwagProcess, reader: str) -> None:
    db = c.data_dir / "chinwag.db"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROMPT_S
    while loop.time() < deadline:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            n = conn.execute(
                "SELECT count(*) FROM mailbox WHERE recipient=?", (reader,)
            ).fetchone()[0]
        finally:
            conn.close()
        if n == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{c.nick} still holds mail for {reader[:8]}")


async def test_a_holder_dials_its_reader_when_presence_shows_it_online(node: NodeFactory) -> None:
    """Line a - c - d - b: c holds a's mail for b; b returns connected only to d, and c,
    hearing b's presence record through d, dials b and delivers."""
    d = node("dora", discovery=False)
    await d.start()
    c = node("carol", "--peer", f"127.0.0.1:{d.port}", discovery=False)
    b = node("bob", "--peer", f"127.0.0.1:{d.port}", discovery=False)
    await asyncio.gather(c.start(), b.start())
    a = node("ann", "--peer", f"127.0.0.1:{c.port}", discovery=False)
    await a.start()
    await asyncio.gather(connected(c, d), connected(b, d), connected(a, c))
    b_id = b.peer_id
    assert await b.quit() == 0
    await d.wait_for("peer_left", timeout=PROMPT_S, from_start=True, peer_id=b_id)

    await a.send({"cmd": "dm", "to": b_id, "text": SECRET})
    own = await a.wait_for("dm", timeout=PROMPT_S, from_start=True, text=SECRET)
    mailed = await a.wait_for("mailed", timeout=PROMPT_S, from_start=True, id=own["id"])
    assert mailed["holders"] == 1, mailed
    assert await a.quit() == 0
    assert b_id not in c.connected_peers()

    b2 = node("bob", "--peer", f"127.0.0.1:{d.port}", discovery=False, data_dir=b.data_dir)
    await b2.start()
    got = await b2.wait_for("dm", timeout=PROMPT_S, from_start=True, text=SECRET)
    assert got["id"] == own["id"], got
    assert c.peer_id in b2.connected_peers()
    assert count(b2, "dm", text=SECRET) == 1


async def test_a_relay_holds_mail_for_its_reservation_holder(
    node: NodeFactory, tmp_path: Path
) -> None:
    """R is a headless relay, B holds a reservation there and A has B's invite (naming R):
    A's message for offline B waits at R; B, back at R, reads it; B's receipt waits at R
    for A."""
    from test_e2e_relay import RelayProcess

    relay = RelayProcess(tmp_path / "relay")
    await relay.start()
    try:
        at_r = ("--relay-peer", relay.addr, "--no-punch")
        a = node("ann", *at_r, discovery=False)
        b = node("bob", *at_r, discovery=False)
        await asyncio.gather(a.start(), b.start())
        await relay.wait_log(f"reservation for {b.peer_id[:8]} granted")
        invite = await ask(b, {"cmd": "invite"}, "invite")
        assert relay.peer_id in str(invite["relays"]), invite
        b_id = b.peer_id
        assert await b.quit() == 0
        await a.send({"cmd": "add", "code": invite["code"]})
        await a.wait_for("contact_added", timeout=PROMPT_S, peer_id=b_id)

        await a.send({"cmd": "dm", "to": b_id, "text": SECRET})
        own = await a.wait_for("dm", timeout=PROMPT_S, from_start=True, text=SECRET)
        mailed = await a.wait_for("mailed", timeout=PROMPT_S, from_start=True, id=own["id"])
        assert mailed["holders"] == 1, mailed  # R, the only peer: a relay of B's
        assert await a.quit() == 0

        b2 = node("bob", *at_r, discovery=False, data_dir=b.data_dir)
        await b2.start()
        got = await b2.wait_for("dm", timeout=PROMPT_S, from_start=True, text=SECRET)
        assert got["id"] == own["id"], got
        await _until_holds_for_dir(relay.data_dir, a.peer_id)
        assert await b2.quit() == 0

        a2 = node("ann", *at_r, discovery=False, data_dir=a.data_dir)
        await a2.start()
        delivered = await a2.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=own["id"])
        assert delivered["count"] == 1, delivered
        assert SECRET not in relay.log()
        assert await relay.stop() == 0
        assert store_leaks(relay.data_dir, SECRET) == []
    finally:
        if relay.proc is not None and relay.proc.returncode is None:
            await relay.stop()


async def _until_holds_for_dir(data_dir: Path, reader: str) -> None:
    db = data_dir / "chinwag.db"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROMPT_S
    while loop.time() < deadline:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            n = conn.execute(
                "SELECT count(*) FROM mailbox WHERE recipient=?", (reader,)
            ).fetchone()[0]
        finally:
            conn.close()
        if n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{data_dir.name} never held mail for {reader[:8]}")


async def test_a_room_message_waits_at_a_non_member_when_no_member_is_online(
    node: NodeFactory,
) -> None:
    """a and b are in room club, c (their only link) is not: with b offline and no member of
    club online, a's club message waits at c; b, back, reads it; its receipt returns."""
    c = node("carol", discovery=False)
    await c.start()
    a = node("ann", "--peer", f"127.0.0.1:{c.port}", discovery=False)
    b = node("bob", "--peer", f"127.0.0.1:{c.port}", discovery=False)
    await asyncio.gather(a.start(), b.start())
    await asyncio.gather(connected(a, c), connected(b, c))
    for n in (a, b):
        await n.send({"cmd": "join", "room": "club"})
        await n.wait_for("joined", timeout=PROMPT_S, from_start=True, room="club")
    await a.send({"cmd": "send", "text": "first in the club", "room": "club"})
    first = await a.wait_for("message", timeout=PROMPT_S, from_start=True, own=True)
    await a.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=first["id"])
    b_id = b.peer_id
    assert await b.quit() == 0
    await a.wait_for("peer_left", timeout=PROMPT_S, from_start=True, peer_id=b_id)

    await a.send({"cmd": "send", "text": SECRET, "room": "club"})
    own = await a.wait_for("message", timeout=PROMPT_S, from_start=True, text=SECRET)
    mailed = await a.wait_for("mailed", timeout=PROMPT_S, from_start=True, id=own["id"])
    assert mailed["holders"] == 1, mailed
    assert await a.quit() == 0

    b2 = node("bob", "--peer", f"127.0.0.1:{c.port}", discovery=False, data_dir=b.data_dir)
    await b2.start()
    got = await b2.wait_for("message", timeout=PROMPT_S, from_start=True, text=SECRET)
    assert got["id"] == own["id"] and got["room"] == "club", got
    await _until_holds_for(c, a.peer_id)
    assert await b2.quit() == 0

    a2 = node("ann", "--peer", f"127.0.0.1:{c.port}", discovery=False, data_dir=a.data_dir)
    await a2.start()
    delivered = await a2.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=own["id"])
    assert delivered["count"] == 1, delivered
    assert not any(SECRET in str(e) for e in c.events)


async def test_a_reader_cuts_a_holder_that_forges_mail_and_acks_what_it_cannot_use(
    node: NodeFactory,
) -> None:
    b = node("bob", discovery=False)
    await b.start()
    reader = public_from_peer_id(b.peer_id)
    author = Identity.generate()
    now = int(time.time())
    # Addressed to bob but sealed to another key: the holder is not to blame.
    stray = mb.make_item(
        author, Identity.generate().public, m.Vector(room="general", have={}), now + 60
    )
    stray = m.MailItem(reader, stray.exp, stray.box)
    holder = HostilePeer(nick="holder")
    await holder.connect(b.port)
    holder.send_frames([m.MailDeliver(items=[stray])])
    ack = await holder.wait_frame(m.MailAck)
    assert ack.ids == [mb.mail_id(stray.box)]
    # A chat of a room bob is not in: never stored, so acknowledged (the holder forgets it).
    attic = make_message(author, "attic", "author", now * 1000, 1, "in a room bob is not in")
    elsewhere = mb.make_item(author, reader, m.Chat(body=attic.raw_body, sig=attic.sig), now + 60)
    holder.send_frames([m.MailDeliver(items=[elsewhere])])
    await holder.wait_frame(m.MailAck, lambda f: f.ids == [mb.mail_id(elsewhere.box)])
    # A chat of bob's room that history refuses (here: it does not decrypt) is never
    # stored either: acknowledged too, else every holder resends it for 7 days.
    junk = make_message(author, "general", "author", now * 1000, 2, "", enc=bytes(64))
    unreadable = mb.make_item(author, reader, m.Chat(body=junk.raw_body, sig=junk.sig), now + 60)
    holder.send_frames([m.MailDeliver(items=[unreadable])])
    await holder.wait_frame(m.MailAck, lambda f: f.ids == [mb.mail_id(unreadable.box)])
    # A good item whose expiry the holder changed: its signature (inside) fails; bob cannot
    # tell the holder's doing from its depositor's, so it is dropped and acknowledged.
    msg = make_message(author, "general", "author", now * 1000, 1, "forged by the holder")
    good = mb.make_item(author, reader, m.Chat(body=msg.raw_body, sig=msg.sig), now + 60)
    altered = m.MailItem(good.to, good.exp + 3600, good.box)
    holder.send_frames([m.MailDeliver(items=[altered])])
    await holder.wait_frame(m.MailAck, lambda f: f.ids == [mb.mail_id(altered.box)])
    # Mail for another reader (the holder knows `to`): the holder is cut.
    other = mb.make_item(
        author, Identity.generate().public, m.Chat(body=msg.raw_body, sig=msg.sig), now + 60
    )
    holder.send_frames([m.MailDeliver(items=[other])])
    closed = await holder.wait_closed(PROMPT_S)
    assert closed.code == "malformed_frame", closed
    assert count(b, "message") == 0
    assert not stderr_has_traceback(b)


async def test_mail_written_with_no_holder_online_goes_out_after_a_restart(
    node: NodeFactory,
) -> None:
    """a writes to offline b while no peer at all is online, then stops; started again
    with c online, a hands the saved item to c, which delivers it to b."""
    port = free_tcp_port()
    c = node("carol", "--port", str(port), discovery=False)
    await c.start()
    hub = ("--peer", f"127.0.0.1:{port}")
    a = node("ann", *hub, discovery=False)
    b = node("bob", *hub, discovery=False)
    await asyncio.gather(a.start(), b.start())
    await asyncio.gather(connected(a, c), connected(b, c))
    b_id = b.peer_id
    assert await b.quit() == 0
    assert await c.quit() == 0
    await a.wait_for("peer_left", timeout=PROMPT_S, from_start=True, peer_id=c.peer_id)

    await a.send({"cmd": "dm", "to": b_id, "text": SECRET})
    own = await a.wait_for("dm", timeout=PROMPT_S, from_start=True, text=SECRET)
    assert await a.quit() == 0
    assert count(a, "mailed") == 0

    c2 = node("carol", "--port", str(port), discovery=False, data_dir=c.data_dir)
    await c2.start()
    a2 = node("ann", *hub, discovery=False, data_dir=a.data_dir)
    await a2.start()
    mailed = await a2.wait_for("mailed", timeout=PROMPT_S, from_start=True, id=own["id"])
    assert mailed["holders"] == 1, mailed
    assert await a2.quit() == 0
    # Once held, the item is no longer in a's saved queue.
    assert _count(a.data_dir, "SELECT count(*) FROM mail_out") == 0

    b2 = node("bob", *hub, discovery=False, data_dir=b.data_dir)
    await b2.start()
    got = await b2.wait_for("dm", timeout=PROMPT_S, from_start=True, text=SECRET)
    assert got["id"] == own["id"], got


def _rows(data_dir: Path, query: str) -> list[tuple[str, str, bytes]]:
    conn = sqlite3.connect(f"file:{data_dir / 'chinwag.db'}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute(query).fetchall()]
    finally:
        conn.close()


def _count(data_dir: Path, query: str) -> int:
    conn = sqlite3.connect(f"file:{data_dir / 'chinwag.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute(query).fetchone()[0])
    finally:
        conn.close()

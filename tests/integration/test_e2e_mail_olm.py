"""Held mail is forward-secret (issue 12 item 2, docs/protocol.md 24.1): a mail item travels
inside the pair's Olm ratchet, so a holder's copy, opened later with both identity keys and
both databases, yields nothing once its reader has read it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import msgspec
from it_support import (
    PROMPT_S,
    ChinwagProcess,
    Event,
    NodeFactory,
    connected,
    stderr_has_traceback,
)
from test_e2e_rooms import dm, got_dm, marker
from test_olm_inprocess import _attack, _copy_db

from chinwag.crypto import box
from chinwag.crypto.identity import Identity
from chinwag.protocol import messages as m


def _held(data_dir: Path, reader: str) -> list[m.MailItem]:
    """The items a (running) holder keeps for reader, read from its database."""
    db = sqlite3.connect(f"file:{data_dir / 'chinwag.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT item FROM mailbox WHERE recipient=?", (reader,)).fetchall()
    finally:
        db.close()
    return [msgspec.msgpack.decode(r[0], type=m.MailItem) for r in rows]


def _seed(data_dir: Path) -> bytes:
    """A node's identity seed, as a thief of its data directory would read it."""
    return (data_dir / "identity.key").read_bytes()


def _open_as(reader_dir: Path, item: m.MailItem) -> m.MailInner:
    """Open a held item with its reader's long-term key alone (what a thief of that key gets)."""
    key = Identity.from_seed(_seed(reader_dir))
    return msgspec.msgpack.decode(box.open_sealed(key, item.box), type=m.MailInner)


async def _mailed_once(
    author: ChinwagProcess, own: Event, holder: ChinwagProcess, reader: ChinwagProcess
) -> m.MailInner:
    """Wait until author's DM own went to one holder; return its item opened as _open_as does."""
    mailed = await author.wait_for("mailed", timeout=PROMPT_S, from_start=True, id=own["id"])
    assert mailed["holders"] == 1, mailed
    [item] = _held(holder.data_dir, reader.peer_id)
    return _open_as(reader.data_dir, item)


async def test_held_mail_does_not_decrypt_with_both_identities_and_databases_once_read(
    node: NodeFactory, tmp_path: Path
) -> None:
    c = node("carol", discovery=False)
    await c.start()
    hub = ("--peer", f"127.0.0.1:{c.port}")
    a = node("ann", *hub, discovery=False)
    await a.start()
    b = node("bob", *hub, "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    await got_dm(b, await dm(a, b.peer_id, marker("hello")), to=b)  # a session exists now
    assert await b.quit() == 0
    await a.wait_for("peer_left", timeout=PROMPT_S, from_start=True, peer_id=b.peer_id)

    secret = marker("held")
    own = await dm(a, b.peer_id, secret)
    # The seal is to bob's long-term key: what it holds must not yield to that key alone.
    inside = await _mailed_once(a, own, c, b)
    assert inside.olm and secret.encode() not in inside.frame
    # Positive control: bob's database as it is while the item waits opens it.
    snapshot = _copy_db(b.data_dir, tmp_path / "bob-then.db")
    seeds = [_seed(a.data_dir), _seed(b.data_dir)]
    assert _attack([inside.frame], seeds, [snapshot]), "the attack cannot break held mail?"
    assert await a.quit() == 0

    b2 = node("bob", *hub, discovery=False, data_dir=b.data_dir)
    await b2.start()
    await got_dm(b2, own, to=b2)
    # bob's receipt goes back to ann the same way, inside their session too.
    [receipt] = await _until_held(c.data_dir, a.peer_id)
    back = _open_as(a.data_dir, receipt)
    assert back.olm
    assert await b2.quit() == 0
    # The thief: both identity seeds and both databases, after bob read it.
    dbs = [
        _copy_db(a.data_dir, tmp_path / "a-stolen.db"),
        _copy_db(b.data_dir, tmp_path / "b-stolen.db"),
    ]
    assert _attack([inside.frame], seeds, dbs) == []
    a2 = node("ann", *hub, discovery=False, data_dir=a.data_dir)
    await a2.start()
    delivered = await a2.wait_for("delivered", timeout=PROMPT_S, from_start=True, id=own["id"])
    assert delivered["count"] == 1, delivered
    for n in (a2, c):
        assert await n.quit() == 0
    for n in (a, b2, a2, c):
        assert not stderr_has_traceback(n), n.stderr_tail()


async def _until_held(data_dir: Path, reader: str) -> list[m.MailItem]:
    """Wait until a running holder keeps an item for reader; return what it keeps."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROMPT_S
    while loop.time() < deadline:
        held = _held(data_dir, reader)
        if held:
            return held
        await asyncio.sleep(0.05)  # polling the holder's database: no event says it
    raise AssertionError(f"nothing held for {reader[:8]}")


async def test_a_burst_of_held_mail_in_one_session_all_opens(
    node: NodeFactory, tmp_path: Path
) -> None:
    """120 items written in one burst share one Olm chain: a ratchet keeps few skipped keys
    (vodozemac: 40), so the holder hands them over in the order they were deposited and
    every one opens (in random order most were dropped)."""
    c = node("carol", discovery=False)
    await c.start()
    hub = ("--peer", f"127.0.0.1:{c.port}")
    a = node("ann", *hub, discovery=False)
    await a.start()
    b = node("bob", *hub, "--peer", f"127.0.0.1:{a.port}", discovery=False)
    await b.start()
    await connected(a, b)
    await got_dm(b, await dm(a, b.peer_id, marker("hello")), to=b)
    assert await b.quit() == 0
    await a.wait_for("peer_left", timeout=PROMPT_S, from_start=True, peer_id=b.peer_id)
    n = 120
    texts = [marker(f"burst{i}") for i in range(n)]
    cmds = [json.dumps({"cmd": "dm", "to": b.peer_id, "text": t}) for t in texts]
    await a.send_raw(("\n".join(cmds) + "\n").encode())
    for _ in range(n):
        await a.wait_for("mailed", timeout=PROMPT_S)
    assert await a.quit() == 0
    b2 = node("bob", *hub, discovery=False, data_dir=b.data_dir)
    await b2.start()
    for t in texts:
        await b2.wait_for("dm", timeout=PROMPT_S, from_start=True, text=t)
    for n_ in (b2, c):
        assert await n_.quit() == 0

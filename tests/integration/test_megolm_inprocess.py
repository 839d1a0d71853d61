"""Hostile members of private rooms, between real nodes in one process (real sockets, real
SQLite, real Olm channels): the Megolm room-key rules of docs/protocol.md 27."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import msgspec
import pytest
from hostile_peer import HostilePeer
from it_support import until

from chinwag import events as ev
from chinwag import limits
from chinwag.crypto import box, group
from chinwag.node import Node, NodeConfig
from chinwag.private import inner
from chinwag.protocol import groupkeys as gk
from chinwag.protocol import mailbox as mb
from chinwag.protocol import messages as m
from chinwag.protocol.chat import make_message
from chinwag.roomkeys import RoomKeys
from node_support import make_node

pytestmark = pytest.mark.timeout(60)

PASS = "open sesame"


def texts(seen: list[ev.NodeEvent]) -> list[str]:
    return [e.text for e in seen if isinstance(e, ev.Message)]


def connected(a: Node, b: Node) -> bool:
    return (
        b.identity.peer_id in a._running().manager.peers
        and a.identity.peer_id in b._running().manager.peers
    )


def spy_sends(keys: RoomKeys) -> list[tuple[str, str]]:
    """Record (peer, kind) of every inner frame keys sends from now on (and still send it)."""
    asked: list[tuple[str, str]] = []
    real_send = keys._send_inner

    def spy(peer: str, kind: str, data: bytes) -> bool:
        asked.append((peer, kind))
        return real_send(peer, kind, data)

    keys._send_inner = spy  # type: ignore[method-assign]
    return asked


async def test_a_peer_announcing_the_room_without_its_passphrase_gets_no_room_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """mallory joined alone with a wrong passphrase and announces the room: her passphrase
    proof (section 28) fails, so alice never counts her in and gives her no room key, while
    bob, who proved it, gets the key and reads."""
    a = make_node(tmp_path / "a", "alice")
    await a.start()
    await a.join("vault", PASS)
    wire = box.private_room_id("vault")
    mallory = make_node(tmp_path / "m", "mallory")
    await mallory.start()
    await mallory.join("vault", "a guess")
    seen: list[ev.NodeEvent] = []
    mallory.subscribe(seen.append)
    delivered: list[bytes] = []
    private = mallory._running().private
    assert private is not None
    handler = mallory._room_key_frame
    private.on(gk.RK, lambda peer, data: (delivered.append(data), handler(peer, data)))
    b = make_node(tmp_path / "b", "bob", peers=[("127.0.0.1", a.port)])
    b_seen: list[ev.NodeEvent] = []
    b.subscribe(b_seen.append)
    try:
        with caplog.at_level(logging.WARNING):
            mallory._running().manager.add_manual_peer("127.0.0.1", a.port)
            await until(lambda: connected(a, mallory), "connected")
            await until(lambda: "passphrase proof with" in caplog.text, "mallory's proof fails")
        await b.start()
        await b.join("vault", PASS)
        await until(lambda: b.identity.peer_id in a._admitted(wire), "bob admitted")
        await a.send("for members only", "vault")
        await until(lambda: "for members only" in texts(b_seen), "bob reads it")
        assert mallory.identity.peer_id not in a._admitted(wire)
        assert delivered == []
        assert "for members only" not in texts(seen)
    finally:
        await b.stop()
        await mallory.stop()
        await a.stop()


async def test_room_keys_from_a_non_member_are_refused_and_a_malformed_one_disconnects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = make_node(tmp_path / "a", "alice")
    await a.start()
    await a.join("vault", PASS)
    wire = box.private_room_id("vault")
    stranger = make_node(tmp_path / "s", "stranger", peers=[("127.0.0.1", a.port)])
    await stranger.start()
    try:
        await until(lambda: connected(a, stranger), "connected")
        private = stranger._running().private
        assert private is not None
        fake = group.Inbound.from_key(group.Outbound.create().session_key).export()
        forged = gk.RoomKey(room=wire, author=stranger.identity.peer_id, key=fake.encode())
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                assert private.send(a.identity.peer_id, inner(gk.RK, gk.encode(forged)))
            ask = gk.RoomKeyRequest(room=wire, author=a.identity.peer_id, sid="x" * 43)
            assert private.send(a.identity.peer_id, inner(gk.RKQ, gk.encode(ask)))
            await until(lambda: "not an admitted member" in caplog.text, "refused")
            assert private.send(a.identity.peer_id, inner(gk.RK, b"\x81\xa1t\xa2rk"))
            await until(lambda: not connected(a, stranger), "disconnected")
        assert caplog.text.count("refusing 'rk' from") == 1, caplog.text
        assert "malformed room-key frame" in caplog.text
    finally:
        await stranger.stop()
        await a.stop()


def _line_node(tmp: Path, nick: str, peers: list[tuple[str, int]]) -> Node:
    """A node without the gossip mesh: it dials only its --peer, so a line stays a line."""
    config = NodeConfig(
        data_dir=tmp / nick,
        nick=nick,
        port=0,
        port_fallback=False,
        bind="127.0.0.1",
        peers=peers,
        discovery=False,
        downloads=tmp / nick / "downloads",
        mesh=False,
    )
    return Node(config)


def _outbound_sid(node: Node, wire: str) -> str | None:
    row = (
        node._running()
        .store.db.execute("SELECT sid FROM megolm_outbound WHERE room=?", (wire,))
        .fetchone()
    )
    return row[0] if row is not None else None


async def test_a_member_beyond_another_leaves_and_is_seen_to_by_its_presence_record(
    tmp_path: Path,
) -> None:
    """alice - bob - carol in a line, all in the room: carol has no connection to alice, so
    only alice's presence record (passed on by bob) tells carol that alice left; carol's next
    message uses a new session all the same."""
    b = _line_node(tmp_path, "bob", [])
    await b.start()
    a = _line_node(tmp_path, "alice", [("127.0.0.1", b.port)])
    c = _line_node(tmp_path, "carol", [("127.0.0.1", b.port)])
    await a.start()
    await c.start()
    wire = box.private_room_id("vault")
    got: list[str] = []
    a.subscribe(lambda e: got.append(e.text) if isinstance(e, ev.Message) else None)
    try:
        await until(lambda: connected(a, b) and connected(c, b), "a line")
        for n in (a, b, c):
            await n.join("vault", PASS)

        def alice_in() -> bool:
            record = c._running().members.get(a.identity.peer_id)
            return record is not None and record.in_room(wire)

        await until(alice_in, "carol knows alice is a member")
        await c.send("before", "vault")
        await until(lambda: "before" in got, "alice reads carol (her key forwarded by bob)")
        first = _outbound_sid(c, wire)
        assert first is not None
        assert a.identity.peer_id not in c._running().manager.peers  # never connected
        a.leave("vault")

        def alice_out() -> bool:
            record = c._running().members.get(a.identity.peer_id)
            return record is not None and not record.in_room(wire)

        await until(alice_out, "carol sees alice's record without the room")
        await c.send("after", "vault")
        assert _outbound_sid(c, wire) != first
    finally:
        for n in (c, a, b):
            await n.stop()


async def test_a_stranger_cannot_write_into_a_private_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 1 of the review: a connected peer that never proved the passphrase sends a
    signed chat into the room (its id is broadcast) under a made-up Megolm session, twice
    (the give-up time 0 stands in for two minutes passing). alice neither keeps it, nor asks
    anyone for its key, nor stores or shows it (no "(cannot decrypt ...)" row)."""
    monkeypatch.setattr(limits, "MEGOLM_GIVE_UP_S", 0.0)
    a = make_node(tmp_path / "a", "alice")
    await a.start()
    await a.join("vault", PASS)
    wire = box.private_room_id("vault")
    seen: list[ev.NodeEvent] = []
    a.subscribe(seen.append)
    h = HostilePeer(rooms=(wire, "general"))
    try:
        await h.connect(a.port)
        keys = a._running().book.group
        assert keys is not None
        asked = spy_sends(keys)
        fake = group.Outbound.create()
        enc = msgspec.msgpack.encode([fake.session_id, b"\x03junk" * 5])
        msg = make_message(h.identity, wire, "mallory", int(time.time() * 1000), 1, "", enc)
        with caplog.at_level(logging.WARNING):
            h.send_chat(msg)
            h.send_chat(msg)
            h.send_chat(h.message(1, "a marker in general"))  # after the two, on one connection
            await until(lambda: "a marker in general" in texts(seen), "the marker shown")
        stored = (
            a._running()
            .store.db.execute("SELECT author, text FROM messages WHERE room=?", (wire,))
            .fetchall()
        )
        assert stored == []
        assert not any(isinstance(e, ev.Message) and e.room == "vault" for e in seen)
        assert keys._held_count == 0
        assert asked == []
        assert h.closed is None
        assert "not a member" in caplog.text
    finally:
        await h.close()
        await a.stop()


async def test_a_stranger_cannot_mail_into_a_private_room_through_a_member(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 1 of the second review: mallory, never admitted, gives bob (a member, acting
    as holder) mail for alice holding a chat she signed into the room under a made-up Megolm
    session, twice (give-up time 0 stands in for two minutes). bob passes on a sealed box he
    cannot read, so he vouches for nothing: alice neither keeps it, nor asks for its key, nor
    stores or shows it; mallory's mail in general still arrives."""
    monkeypatch.setattr(limits, "MEGOLM_GIVE_UP_S", 0.0)
    a = make_node(tmp_path / "a", "alice")
    await a.start()
    await a.join("vault", PASS)
    wire = box.private_room_id("vault")
    b = make_node(tmp_path / "b", "bob", peers=[("127.0.0.1", a.port)])
    await b.start()
    await b.join("vault", PASS)
    seen: list[ev.NodeEvent] = []
    a.subscribe(seen.append)
    h = HostilePeer(nick="mallory")
    try:
        await until(lambda: connected(a, b), "alice and bob connected")
        await until(lambda: b.identity.peer_id in a._admitted(wire), "bob admitted")
        keys = a._running().book.group
        assert keys is not None
        asked = spy_sends(keys)
        await h.connect(b.port)
        fake = group.Outbound.create()
        enc = msgspec.msgpack.encode([fake.session_id, b"\x03junk" * 5])
        now = int(time.time())
        msg = make_message(h.identity, wire, "mallory", now * 1000, 1, "", enc)
        marker = h.message(1, "a marker in general")
        bob_db = b._running().store.db
        with caplog.at_level(logging.WARNING):
            for chat in (msg, msg, marker):
                frame = m.Chat(body=chat.raw_body, sig=chat.sig)
                item = mb.make_item(h.identity, a.identity.public, frame, now + 600)
                h.send_frames([m.MailPut(items=[item])])
                await h.wait_frame(m.MailOk)
                # One at a time: bob delivers it and alice acknowledges it (taken or not).
                await until(
                    lambda: bob_db.execute("SELECT COUNT(*) FROM mailbox").fetchone()[0] == 0,
                    "bob's mailbox emptied by alice",
                )
            await until(lambda: "a marker in general" in texts(seen), "the marker shown")
        stored = (
            a._running()
            .store.db.execute("SELECT author, text FROM messages WHERE room=?", (wire,))
            .fetchall()
        )
        assert stored == []
        assert not any(isinstance(e, ev.Message) and e.room == "vault" for e in seen)
        assert keys._held_count == 0
        assert [kind for _, kind in asked if kind == "rkq"] == []
        assert "not a member" in caplog.text
    finally:
        await h.close()
        await b.stop()
        await a.stop()

"""rooms.py's RoomBook, and history.py's handling of rooms and private messages.

No sockets: a real Store in tmp_path, History driven through fake connections
and a fake manager that records what would be broadcast. Messages are real,
signed and (for private rooms and conversations) sealed by the sender's own
RoomBook, as node.py builds them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from unit_support import FakeConn, FakeManager

from chinwag import events as ev
from chinwag import limits
from chinwag.admission import Admissions
from chinwag.crypto import box
from chinwag.crypto.identity import Identity
from chinwag.errors import UsageError
from chinwag.events import NodeEvent
from chinwag.history import History
from chinwag.protocol import admit as ad
from chinwag.protocol import groupkeys as gk
from chinwag.protocol import messages as m
from chinwag.protocol.admit import Admission
from chinwag.protocol.chat import ChatMessage, make_message
from chinwag.protocol.names import DEFAULT_ROOM, validate_room
from chinwag.roomkeys import UNREADABLE, RoomKeys
from chinwag.rooms import DM, PRIVATE, PUBLIC, Room, RoomBook
from chinwag.store.db import Store

ME = Identity.from_seed(b"z" * 32)
ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)
MALLORY = Identity.from_seed(b"m" * 32)
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
TS = 1_700_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "me.db")
    KEYS_SENT.clear()
    yield s
    s.close()


#: Room-key frames each test book sent: identity's peer id -> [(to, inner frame)].
KEYS_SENT: dict[str, list[tuple[str, bytes]]] = {}


def load_book(store: Store, identity: Identity = ME) -> RoomBook:
    """A book as the node builds it: with Megolm room keys; every test identity is admitted
    to every private room, and room-key frames are recorded in KEYS_SENT."""
    book = RoomBook(store, identity)
    book.load()
    sent = KEYS_SENT.setdefault(identity.peer_id, [])
    everyone = {i.peer_id for i in (ME, ALICE, BOB, CAROL)} - {identity.peer_id}

    def send(peer: str, kind: str, inner: bytes) -> bool:
        sent.append((peer, inner))
        return True

    def passkey(wire: str) -> bytes | None:
        room = book.joined.get(wire)
        return room.key if room is not None else None

    book.group = RoomKeys(store, identity, send, lambda wire: set(everyone), passkey)
    return book


def give_keys(sender: Identity, book: RoomBook) -> int:
    """Deliver to book the room-key frames sender sent to book's owner; return how many."""
    sent = KEYS_SENT.get(sender.peer_id, [])
    mine = [inner for to, inner in sent if to == book.me]
    sent[:] = [(to, inner) for to, inner in sent if to != book.me]
    assert book.group is not None
    for inner in mine:
        book.group.received(sender.peer_id, inner)
    return len(mine)


def reload(store: Store) -> tuple[Store, RoomBook]:
    """Close the store and open it again, as a restart does."""
    store.close()
    again = Store(store.path)
    return again, load_book(again)


# --- RoomBook: joining and persistence -------------------------------------------


def test_general_is_joined_on_first_load(store: Store) -> None:
    book = load_book(store)
    assert book.wires() == [DEFAULT_ROOM]
    assert book.joined[DEFAULT_ROOM] == Room(DEFAULT_ROOM, DEFAULT_ROOM, PUBLIC)
    assert [r[0] for r in store.rooms_joined()] == [DEFAULT_ROOM]


def test_leaving_general_persists_across_a_reload(store: Store) -> None:
    book = load_book(store)
    left = book.leave("general")
    assert left.wire == DEFAULT_ROOM
    assert book.wires() == []
    store, book = reload(store)
    try:
        assert book.wires() == []  # not joined again by default
        assert book.find("general") is None
        with pytest.raises(UsageError):
            book.leave("general")
        book.join_public("general")  # joining again is remembered too
        store, book = reload(store)
        assert book.wires() == [DEFAULT_ROOM]
    finally:
        store.close()


def test_joins_persist_across_a_reload_with_keys(store: Store) -> None:
    book = load_book(store)
    dev = book.join_public("dev")
    secret = book.join_private("secret", KEY)
    dm = book.join_dm(ALICE.peer_id)
    assert secret == Room(box.private_room_id("secret"), "secret", PRIVATE, KEY)
    assert dm == Room(
        box.dm_room(ME.peer_id, ALICE.peer_id), "@" + ALICE.peer_id[:8], DM, None, ALICE.peer_id
    )
    assert book.join_dm(ALICE.peer_id) is dm  # already held: the same room
    before = dict(book.joined)
    store, book = reload(store)
    try:
        assert book.joined == before
        assert book.joined[secret.wire].key == KEY
        assert book.joined[secret.wire].kcv == box.key_check(KEY)
        assert book.joined[dm.wire].peer == ALICE.peer_id
        assert book.find("dev") == dev
    finally:
        store.close()


def test_blocked_and_verified_persist_across_a_reload(store: Store) -> None:
    book = load_book(store)
    book.set_blocked(MALLORY.peer_id, True)
    book.set_blocked(BOB.peer_id, True)
    book.set_blocked(BOB.peer_id, False)
    book.set_verified(ALICE.peer_id, "alice")
    store, book = reload(store)
    try:
        assert book.blocked == {MALLORY.peer_id}
        assert book.verified == {ALICE.peer_id: "alice"}
        assert book.impostor_of(MALLORY.peer_id, "alice") == ALICE.peer_id
        assert book.impostor_of(ALICE.peer_id, "alice") is None
    finally:
        store.close()


def test_find_by_display_name_and_by_wire_name(store: Store) -> None:
    book = load_book(store)
    dev = book.join_public("dev")
    secret = book.join_private("secret", KEY)
    dm = book.join_dm(ALICE.peer_id)
    for name in ("dev", "#dev", "DEV", "#Dev"):
        assert book.find(name) == dev
    for name in ("secret", "#secret", "Secret", secret.wire):
        assert book.find(name) == secret
    for name in ("@" + ALICE.peer_id[:8], dm.wire):
        assert book.find(name) == dm
    assert book.find("general") == book.joined[DEFAULT_ROOM]
    for name in ("nowhere", "p.secret", box.private_room_id("other"), ALICE.peer_id):
        assert book.find(name) is None
    assert book.display(secret.wire) == "secret"
    assert book.display("p.unknown") == "p.unknown"


# --- RoomBook: announcements and listing ---------------------------------------


def test_announcement_lists_public_and_private_rooms_but_no_conversations(store: Store) -> None:
    book = load_book(store)
    book.join_public("dev")
    secret = book.join_private("secret", KEY)
    dm = book.join_dm(ALICE.peer_id)
    frame = book.announcement()
    assert sorted((a.room, a.kcv) for a in frame.joined) == sorted(
        [("general", b""), ("dev", b""), (secret.wire, b"")]
    )  # no key check value: nothing to test passphrases on (docs/protocol.md section 28)
    assert box.key_check(KEY) not in m.encode(frame)
    assert all(a.room != dm.wire for a in frame.joined)
    assert "secret" not in m.encode(frame).decode("latin-1")  # only the opaque id
    # It is a valid frame on the wire.
    assert m.decode_frame(m.encode(frame)) == frame


def test_listing_counts_members_from_two_peers(store: Store) -> None:
    book = load_book(store)
    secret = book.join_private("secret", KEY)
    book.join_dm(ALICE.peer_id)  # conversations are never listed
    hidden = box.private_room_id("hidden")
    book.set_announced(
        ALICE.peer_id,
        m.Rooms(
            joined=[
                m.RoomAnnounce("general"),
                m.RoomAnnounce("dev"),
                m.RoomAnnounce(secret.wire, box.key_check(KEY)),
                m.RoomAnnounce(hidden, b"12345678"),
            ]
        ),
    )
    book.set_announced(
        BOB.peer_id, m.Rooms(joined=[m.RoomAnnounce("general"), m.RoomAnnounce("dev")])
    )
    assert sorted(book.listing()) == sorted(
        [
            ("general", 3, True),  # alice, bob and us
            ("dev", 2, False),
            ("secret", 2, True),  # by its name: we joined it
            ("(private)", 1, False),  # not ours: no name
        ]
    )
    # An announcement replaces the previous one; a peer that leaves is forgotten.
    book.set_announced(BOB.peer_id, m.Rooms(joined=[m.RoomAnnounce("general")]))
    book.forget_peer(ALICE.peer_id)
    assert sorted(book.listing()) == sorted([("general", 2, True), ("secret", 1, True)])


def admit(book: RoomBook, peer: Identity, wire: str, key: bytes) -> bool:
    """Run the passphrase proof between book and a peer holding key; return book's verdict."""
    theirs = Admission(peer.peer_id)
    hh = b"h" * 32
    to_us = theirs.start(book.me, wire, key, hh, b"\x01" * 64, 0.0)
    for _ in range(4):
        to_them: list[ad.Action] = []
        for a in to_us:
            if isinstance(a, ad.Send):
                room = book.joined.get(a.frame.room)
                got = book.admission.received(
                    peer.peer_id, a.frame, room.key if room else None, hh, b"\x02" * 64, 0.0
                )
                to_them += got
        to_us = []
        for a in to_them:
            if isinstance(a, ad.Send):
                to_us += theirs.received(book.me, a.frame, key, hh, b"\x03" * 64, 0.0)
    return book.admission.is_admitted(peer.peer_id, wire)


def test_an_announced_kcv_tells_nothing_and_joining_is_for_the_admission(store: Store) -> None:
    book = load_book(store)
    wire = box.private_room_id("secret")
    # A key check value in an announcement is ignored (older peers send one).
    book.set_announced(ALICE.peer_id, m.Rooms(joined=[m.RoomAnnounce(wire, box.key_check(KEY))]))
    assert book.announced[ALICE.peer_id] == {wire: b""}
    assert book.join_private("secret", OTHER_KEY).wire == wire
    # Joining again with another key is refused locally.
    with pytest.raises(UsageError, match="wrong passphrase"):
        book.join_private("secret", KEY)
    assert book.joined[wire].key == OTHER_KEY


def test_announcements_list_our_private_rooms_to_admit(store: Store) -> None:
    book = load_book(store)
    secret = book.join_private("secret", KEY)
    book.join_public("dev")
    frame = m.Rooms(
        joined=[
            m.RoomAnnounce(secret.wire, box.key_check(OTHER_KEY)),
            m.RoomAnnounce("dev"),
            m.RoomAnnounce("a b"),
        ]
    )
    assert book.set_announced(ALICE.peer_id, frame) == [secret.wire]
    assert book.set_announced(CAROL.peer_id, m.Rooms(joined=[m.RoomAnnounce("dev")])) == []
    assert admit(book, ALICE, secret.wire, KEY)
    assert book.set_announced(ALICE.peer_id, frame) == []  # admitted: nothing to prove
    # An entry that is not a valid room name is ignored, not listed.
    assert "a b" not in [name for name, _, _ in book.listing()]
    # A peer that stops announcing the room, or leaves, is no longer admitted.
    book.set_announced(ALICE.peer_id, m.Rooms(joined=[m.RoomAnnounce("dev")]))
    assert book.admitted(secret.wire) == frozenset()
    book.set_announced(ALICE.peer_id, frame)
    assert admit(book, ALICE, secret.wire, KEY)
    book.forget_peer(ALICE.peer_id)
    assert book.admitted(secret.wire) == frozenset()


def test_a_private_rooms_files_history_and_vectors_only_for_admitted_peers(store: Store) -> None:
    book = load_book(store)
    secret = book.join_private("secret", KEY)
    book.join_public("dev")
    dm = book.join_dm(ALICE.peer_id)
    for who in (BOB, CAROL):
        book.set_announced(
            who.peer_id, m.Rooms(joined=[m.RoomAnnounce(secret.wire), m.RoomAnnounce("dev")])
        )
    # Announcing is not enough (anyone can announce a wire name it heard).
    assert not book.shares_room(CAROL.peer_id, "secret")
    assert not book.peer_in(CAROL.peer_id, secret.wire)
    assert not book.holds_vector(secret.wire, CAROL.peer_id)
    # A receipt that came by mail from a member not connected is heard (nothing goes back).
    assert book.holds_vector(secret.wire, ALICE.peer_id, connected=False)
    assert not admit(book, BOB, secret.wire, OTHER_KEY)  # another passphrase
    assert admit(book, CAROL, secret.wire, KEY)
    assert book.admitted(secret.wire) == frozenset({CAROL.peer_id})
    assert not book.shares_room(BOB.peer_id, "secret")
    assert not book.peer_in(BOB.peer_id, secret.wire)
    assert not book.holds_vector(secret.wire, BOB.peer_id)
    assert book.shares_room(CAROL.peer_id, "secret")
    assert book.peer_in(CAROL.peer_id, secret.wire)
    assert book.holds_vector(secret.wire, CAROL.peer_id)
    assert book.shares_room(BOB.peer_id, "dev") and book.shares_room(CAROL.peer_id, "dev")
    assert book.shares_room(ALICE.peer_id, dm.wire) and not book.shares_room(BOB.peer_id, dm.wire)
    assert not book.shares_room(BOB.peer_id, "nowhere")
    # Presence records of the room go to the admitted peer only.
    assert secret.wire in book.presence_view(CAROL.peer_id)
    assert secret.wire not in book.presence_view(BOB.peer_id)
    # Leaving the room ends every admission to it.
    book.leave("secret")
    assert book.admitted(secret.wire) == frozenset()


def test_a_conversation_is_shared_only_with_its_other_party(store: Store) -> None:
    book = load_book(store)
    dm = book.join_dm(ALICE.peer_id)
    # Bob cannot make himself a member by announcing the conversation's wire name.
    book.set_announced(BOB.peer_id, m.Rooms(joined=[m.RoomAnnounce(dm.wire)]))
    assert book.peer_in(ALICE.peer_id, dm.wire)
    assert not book.peer_in(BOB.peer_id, dm.wire)
    assert book.holds_vector(dm.wire, ALICE.peer_id)
    assert not book.holds_vector(dm.wire, BOB.peer_id)
    # A conversation we do not have yet: only its other party's vector opens it.
    with_carol = box.dm_room(ME.peer_id, CAROL.peer_id)
    assert not book.holds_vector(with_carol, BOB.peer_id)
    assert with_carol not in book.joined
    assert book.holds_vector(with_carol, CAROL.peer_id)
    assert with_carol in book.joined


def test_no_conversation_is_opened_beyond_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_CONVERSATIONS", 2)
    book = load_book(store)
    # Conversations we wrote in are never replaced by a stranger's (hardening #7).
    book.wrote_in(book.join_dm(ALICE.peer_id))
    book.wrote_in(book.join_dm(BOB.peer_id))
    new = book.holds(box.dm_room(ME.peer_id, CAROL.peer_id), CAROL.peer_id)
    assert new is not None and new.kind == DM
    assert not book.remember(new)
    assert new.wire not in book.joined
    # The conversations we have go on; rooms are not conversations.
    alice = book.holds(box.dm_room(ME.peer_id, ALICE.peer_id), ALICE.peer_id)
    assert alice is not None and book.remember(alice)
    assert book.remember(book.join_public("dev"))


def test_a_public_room_message_with_a_ciphertext_has_no_text(store: Store) -> None:
    book = load_book(store)
    general = book.joined[DEFAULT_ROOM]
    clear = make_message(ALICE, DEFAULT_ROOM, "alice", TS, 1, "hi")
    assert book.plaintext(general, clear) == "hi"
    sealed = make_message(ALICE, DEFAULT_ROOM, "alice", TS, 2, "hi", enc=b"x" * 40)
    assert book.plaintext(general, sealed) is None


@pytest.mark.parametrize("name", ["dm.x", "p.secret", "DM.abc", "P.x", "dm.", "p."])
def test_validate_room_refuses_reserved_prefixes(name: str) -> None:
    with pytest.raises(UsageError, match="may not start with"):
        validate_room(name)


@pytest.mark.parametrize("name", ["dm", "p", "pp.x", "dmx", "x.dm.y", "General"])
def test_validate_room_accepts_names_near_the_reserved_prefixes(name: str) -> None:
    assert validate_room(name) == name.lower()


# --- History: fakes ------------------------------------------------------------


@dataclass
class Node:
    """History of ME over a real store, with fake peers."""

    history: History
    book: RoomBook
    manager: FakeManager
    events: list[NodeEvent]
    conns: dict[str, FakeConn]

    def receive(self, sender: Identity, msg: ChatMessage, hist: bool = False) -> FakeConn:
        conn = self.conns[sender.peer_id]
        self.history.chat_received(
            conn,  # type: ignore[arg-type]
            m.Chat(body=msg.raw_body, sig=msg.sig, hist=hist),
        )
        return conn


@pytest.fixture
async def make_node(store: Store) -> Any:
    made: list[History] = []

    def make(*peers: Identity) -> Node:
        conns = {p.peer_id: FakeConn(p.peer_id) for p in (*peers, MALLORY)}
        manager = FakeManager(peers={p.peer_id: conns[p.peer_id] for p in peers})
        events: list[NodeEvent] = []
        book = load_book(store)
        history = History(store, ME, manager, events.append, book)  # type: ignore[arg-type]
        assert book.group is not None
        book.group.retry = history.chat_received  # as node.py wires it
        history.load()
        made.append(history)
        return Node(history, book, manager, events, conns)

    yield make
    for history in made:
        await history.close()


async def turn() -> None:
    """Let History's call_soon group commit run."""
    for _ in range(3):
        await asyncio.sleep(0)


class Sender:
    """Another peer's side: its own RoomBook seals what it sends, as node.py does."""

    def __init__(self, tmp_path: Path, identity: Identity, nick: str) -> None:
        self.identity = identity
        self.nick = nick
        self.store = Store(tmp_path / f"sender-{nick}.db")
        self.book = load_book(self.store, identity)
        self.seq: dict[str, int] = {}

    def post(self, room: Room, text: str) -> ChatMessage:
        seq = self.seq[room.wire] = self.seq.get(room.wire, 0) + 1
        clear, enc = self.book.seal(room, text, seq)
        return make_message(self.identity, room.wire, self.nick, TS + seq, seq, clear, enc)

    def dm(self, peer: Identity, text: str) -> ChatMessage:
        return self.post(self.book.join_dm(peer.peer_id), text)


@pytest.fixture
def sender(tmp_path: Path) -> Iterator[Any]:
    made: list[Sender] = []

    def make(identity: Identity, nick: str) -> Sender:
        s = Sender(tmp_path, identity, nick)
        made.append(s)
        return s

    yield make
    for s in made:
        s.store.close()


def message_count(store: Store) -> int:
    count: int = store.db.execute("SELECT count(*) FROM messages").fetchone()[0]
    return count


def database_bytes(store: Store) -> bytes:
    """Every byte of the database on disk, write-ahead log included."""
    path = store.path
    return b"".join(
        p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()
    )


# --- History: rooms we do not hold --------------------------------------------------


async def test_message_in_a_room_we_have_not_joined_is_relayed_not_stored(
    make_node: Any, sender: Any, store: Store
) -> None:
    node = make_node(ALICE, BOB)
    alice = sender(ALICE, "alice")
    msg = alice.post(alice.book.join_public("dev"), "in dev")
    conn = node.receive(ALICE, msg)
    await turn()
    assert conn.closed is None
    assert message_count(store) == 0
    assert node.events == []
    assert "dev" not in node.book.joined
    # Passed on live, unchanged, to everyone but its sender and author.
    [(frame, exclude)] = node.manager.chats()
    assert (frame.body, frame.sig, frame.hist) == (msg.raw_body, msg.sig, False)
    assert exclude == {ALICE.peer_id}
    # The same message again is neither stored nor relayed twice.
    node.receive(ALICE, msg)
    await turn()
    assert message_count(store) == 0
    assert node.events == []


async def test_message_in_a_room_we_have_not_joined_is_not_relayed_to_nobody_or_from_history(
    make_node: Any, sender: Any, store: Store
) -> None:
    alice = sender(ALICE, "alice")
    dev = alice.book.join_public("dev")
    lonely = make_node(ALICE)  # nobody else to pass it to
    lonely.receive(ALICE, alice.post(dev, "one"))
    await turn()
    assert lonely.manager.broadcasts == []
    crowded = make_node(ALICE, BOB)  # history sync is never relayed
    crowded.receive(ALICE, alice.post(dev, "two"), hist=True)
    await turn()
    assert crowded.manager.broadcasts == []
    assert message_count(store) == 0
    assert lonely.events == crowded.events == []


# --- History: private conversations ---------------------------------------------------


async def test_dm_to_us_is_stored_in_clear_and_shown(
    make_node: Any, sender: Any, store: Store
) -> None:
    node = make_node(ALICE)
    alice = sender(ALICE, "alice")
    text = "psst, only for you"
    msg = alice.dm(ME, text)
    wire = box.dm_room(ME.peer_id, ALICE.peer_id)
    # Plain in the signed body: on the wire it travels only inside a `pm` (private.py).
    assert msg.body.room == wire and msg.body.text == text and not msg.body.enc
    conn = node.receive(ALICE, msg)
    await turn()
    assert conn.closed is None
    [event] = node.events
    assert event == ev.DirectMessage(
        id=msg.id,
        peer_id=ALICE.peer_id,
        nick="alice",
        ts=msg.body.ts / 1000,
        text=text,
        own=False,
        to=ME.peer_id,
        seq=1,
    )
    [row] = store.history(wire, 10)
    assert (row.id, row.author, row.text) == (msg.id, ALICE.peer_id, text)
    # The conversation was joined on sight, and is remembered.
    assert node.book.joined[wire].kind == DM
    assert node.book.joined[wire].peer == ALICE.peer_id
    assert wire in [r[0] for r in store.rooms_joined()]
    # History shows it as a private message too.
    assert node.history.history(wire, 10).messages == [event]


async def test_our_own_dm_coming_back_from_a_peer_opens_with_our_copy(
    make_node: Any, sender: Any, store: Store
) -> None:
    node = make_node(ALICE)
    me = sender(ME, "me")
    msg = me.dm(ALICE, "sent from my other session")
    node.book.join_dm(ALICE.peer_id)
    node.receive(ALICE, msg, hist=True)  # history sync gives it back
    await turn()
    [event] = node.events
    assert isinstance(event, ev.DirectMessage)
    assert (event.text, event.own, event.to) == ("sent from my other session", True, ALICE.peer_id)
    [row] = store.history(msg.body.room, 10)
    assert row.text == "sent from my other session"


async def test_dm_between_two_other_peers_is_never_relayed_stored_or_shown(
    make_node: Any, sender: Any, store: Store
) -> None:
    node = make_node(BOB, CAROL)
    bob = sender(BOB, "bob")
    text = "carol, this stays between us"
    msg = bob.dm(CAROL, text)
    wire = box.dm_room(BOB.peer_id, CAROL.peer_id)
    conn = node.receive(BOB, msg)
    await turn()
    await node.history.close()  # commit and save whatever would be saved
    assert conn.closed is None
    assert node.events == []
    assert message_count(store) == 0
    assert store.history(wire, 10) == []
    assert store.search("between us", 10) == []
    assert wire not in node.book.joined
    assert wire not in [r[0] for r in store.rooms_joined()]
    assert text.encode() not in database_bytes(store)
    # Not passed on either: a conversation travels only between its parties (issue 12).
    assert node.manager.chats() == []
    assert all(c.sent == [] for c in node.conns.values())


async def test_a_dm_in_a_plain_chat_frame_is_refused(
    make_node: Any, sender: Any, store: Store
) -> None:
    node = make_node(ALICE)
    msg = sender(ALICE, "alice").dm(ME, "in clear on the wire")
    conn = node.conns[ALICE.peer_id]
    chat = m.Chat(body=msg.raw_body, sig=msg.sig)
    assert not node.history.chat_received(conn, chat, clear=True)
    await turn()
    assert node.events == [] and message_count(store) == 0
    assert node.history.chat_received(conn, chat)  # the same inside a pm: taken


async def test_our_dm_and_its_history_go_only_through_the_private_channel(
    make_node: Any, sender: Any, store: Store
) -> None:
    node = make_node(ALICE, BOB)
    sent: list[tuple[str, bytes]] = []
    node.history.private_send = lambda peer, chat: sent.append((peer, chat)) or True
    me = Sender(store.path.parent, ME, "me")
    room = node.book.join_dm(ALICE.peer_id)
    msg = me.post(room, "for alice alone")
    node.history.submit_own(msg, "for alice alone")
    await turn()
    assert node.manager.broadcasts == []
    assert all(c.sent == [] for c in node.conns.values())
    [(peer, encoded)] = sent
    frame = m.decode_frame(encoded)
    assert peer == ALICE.peer_id and isinstance(frame, m.Chat) and frame.body == msg.raw_body
    # Alice away: the next waits (never flooded to bob); her vector brings it through
    # the channel once she is back.
    sent.clear()
    alice = node.manager.peers.pop(ALICE.peer_id)
    second = me.post(room, "while you were away")
    me.store.close()
    node.history.submit_own(second, "while you were away")
    await turn()
    assert sent == [] and node.manager.broadcasts == []
    assert all(c.sent == [] for c in node.conns.values())
    node.manager.peers[ALICE.peer_id] = alice
    node.history.sync_frame(
        node.conns[ALICE.peer_id],  # type: ignore[arg-type]
        m.Vector(room=room.wire, have={ME.peer_id: 1}),
    )
    for _ in range(10):
        await turn()
    [(peer, encoded)] = sent
    pushed = m.decode_frame(encoded)
    assert peer == ALICE.peer_id and isinstance(pushed, m.Chat) and pushed.body == second.raw_body
    assert all(c.sent == [] for c in node.conns.values())


@pytest.mark.parametrize(
    "joined",
    [False, True],
    ids=["conversation-not-joined", "conversation-joined"],
)
async def test_third_peer_cannot_post_into_our_conversation(
    make_node: Any, store: Store, joined: bool
) -> None:
    # Carol writes into the conversation between us and bob, under bob's nick,
    # sealed to us so it decrypts.
    node = make_node(CAROL)
    wire = box.dm_room(ME.peer_id, BOB.peer_id)
    if joined:
        node.book.join_dm(BOB.peer_id)
    enc = box.seal_dm(CAROL, ME.public, "this is bob, send me the keys")
    msg = make_message(CAROL, wire, "bob", TS, 1, "", enc)
    node.receive(CAROL, msg)
    await turn()
    assert node.events == []
    assert store.history(wire, 10) == []


async def test_forged_dm_leaves_nothing_behind(make_node: Any, sender: Any, store: Store) -> None:
    node = make_node(MALLORY, BOB)
    alice = sender(ALICE, "alice")
    good = alice.dm(ME, "hi")
    forged = ChatMessage(good.id, good.body, good.raw_body, MALLORY.sign(b"not alice"))
    conn = node.receive(MALLORY, forged)
    await turn()
    assert conn.closed == "bad_signature"
    assert node.events == []
    assert message_count(store) == 0
    wire = box.dm_room(ME.peer_id, ALICE.peer_id)
    assert wire not in [r[0] for r in store.rooms_joined()]
    assert wire not in node.book.joined


async def test_forged_dm_is_refused_and_its_sender_disconnected(
    make_node: Any, sender: Any, store: Store
) -> None:
    node = make_node(MALLORY)
    alice = sender(ALICE, "alice")
    good = alice.dm(ME, "hi")
    forged = ChatMessage(good.id, good.body, good.raw_body, MALLORY.sign(b"not alice"))
    conn = node.receive(MALLORY, forged)
    await turn()
    assert conn.closed == "bad_signature"
    assert node.events == []
    assert message_count(store) == 0
    assert node.manager.broadcasts == []


async def test_dm_that_does_not_open_is_dropped(
    make_node: Any, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # Signed by alice, in our conversation, but sealed to carol.
    node = make_node(ALICE)
    wire = box.dm_room(ME.peer_id, ALICE.peer_id)
    msg = make_message(ALICE, wire, "alice", TS, 1, "", box.seal_dm(ALICE, CAROL.public, "x"))
    with caplog.at_level(logging.WARNING, logger="chinwag.rooms"):
        conn = node.receive(ALICE, msg)
        await turn()
    assert conn.closed is None
    assert node.events == []
    assert message_count(store) == 0
    assert "does not decrypt" in caplog.text


# --- History: private rooms -----------------------------------------------------------


async def test_private_room_message_with_the_right_key_is_shown_by_name(
    make_node: Any, sender: Any, store: Store
) -> None:
    node = make_node(ALICE)
    node.book.join_private("secret", KEY)
    alice = sender(ALICE, "alice")
    text = "members only"
    msg = alice.post(alice.book.join_private("secret", KEY), text)
    wire = box.private_room_id("secret")
    assert msg.body.room == wire and msg.body.text == ""
    assert give_keys(ALICE, node.book) == 1  # alice's Megolm session key, before the message
    node.receive(ALICE, msg)
    await turn()
    [event] = node.events
    assert isinstance(event, ev.Message)
    assert (event.room, event.text, event.peer_id, event.own) == (
        "secret",
        text,
        ALICE.peer_id,
        False,
    )
    [row] = store.history(wire, 10)
    assert row.text == text
    assert node.history.history(wire, 10).room == "secret"


async def test_private_room_message_that_does_not_decrypt_is_dropped_and_logged_once(
    make_node: Any, sender: Any, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    node = make_node(ALICE)
    node.book.join_private("secret", KEY)
    alice = sender(ALICE, "alice")
    room = alice.book.join_private("secret", KEY)
    alice.post(room, "first")
    give_keys(ALICE, node.book)
    wire = room.wire
    with caplog.at_level(logging.WARNING):
        conns = []
        for i in range(3):
            good = alice.post(room, f"attempt {i}")
            enc = bytearray(good.body.enc)
            enc[-10] ^= 1  # tampered (and signed so by alice: she is the one misbehaving)
            bad = make_message(ALICE, wire, "alice", TS + 10 + i, good.body.seq, "", bytes(enc))
            conns.append(node.receive(ALICE, bad))
        # A message of another room's ciphertext moved in here (its seq does not match).
        moved = alice.post(room, "moved")
        replay = make_message(ALICE, wire, "alice", TS + 20, moved.body.seq + 1, "", moved.body.enc)
        conns.append(node.receive(ALICE, replay))
        await turn()
    assert all(c.closed is None for c in conns)
    assert node.events == []
    assert message_count(store) == 0
    warnings = [r for r in caplog.records if "does not decrypt" in r.getMessage()]
    assert len(warnings) == 1
    assert "secret" in warnings[0].getMessage()


async def test_private_room_message_of_an_unknown_session_is_kept_until_its_key_comes(
    make_node: Any, sender: Any, store: Store
) -> None:
    """Not dropped for good: kept, its key asked for (once), shown when the key arrives."""
    node = make_node(ALICE)
    secret = node.book.join_private("secret", KEY)
    assert admit(node.book, ALICE, secret.wire, KEY)  # a member (a stranger's is refused)
    alice = sender(ALICE, "alice")
    room = alice.book.join_private("secret", KEY)
    first = alice.post(room, "before you had my key")
    second = alice.post(room, "and again")
    node.receive(ALICE, first)
    node.receive(ALICE, second)
    node.receive(ALICE, first)  # sync brings it again
    await turn()
    assert node.events == [] and message_count(store) == 0
    asked = KEYS_SENT[ME.peer_id]
    assert [to for to, _ in asked] == [ALICE.peer_id]  # one request, to its author
    assert give_keys(ALICE, node.book) == 1
    await turn()
    await turn()
    shown = [e.text for e in node.events if isinstance(e, ev.Message)]
    assert sorted(shown) == ["and again", "before you had my key"]
    assert message_count(store) == 2


async def test_private_room_history_and_search_outlive_the_deleted_room_keys(
    make_node: Any, sender: Any, store: Store
) -> None:
    """Inbound Megolm sessions are deleted after a window (forward secrecy): history and
    search read the plaintext stored at receipt, also after a restart."""
    node = make_node(ALICE)
    node.book.join_private("secret", KEY)
    alice = sender(ALICE, "alice")
    text = "remember the alamo"
    msg = alice.post(alice.book.join_private("secret", KEY), text)
    give_keys(ALICE, node.book)
    node.receive(ALICE, msg)
    await turn()
    assert node.book.group is not None
    assert node.book.group._keys.expire_inbound(float("inf")) >= 1  # every key gone
    assert node.book.group._keys.inbound_count() == 0
    wire = box.private_room_id("secret")
    assert [e.text for e in node.history.history(wire, 10).messages] == [text]
    assert [e.text for e in node.history.search("alamo", 10).messages] == [text]
    store, _book = reload(store)
    try:
        assert [r.text for r in store.history(wire, 10)] == [text]
        assert [r.text for r in store.search("alamo", 10)] == [text]
    finally:
        store.close()


async def test_a_message_whose_key_never_comes_is_stored_unread_then_read_when_it_does(
    make_node: Any, sender: Any, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sync brings history nobody holds keys for again and again: once its key was asked
    for in vain for MEGOLM_GIVE_UP_S it is stored with a placeholder (so sync stops); its
    text is filled in if the key comes after all."""
    monkeypatch.setattr(limits, "MEGOLM_GIVE_UP_S", 0.0)
    node = make_node(ALICE)
    secret = node.book.join_private("secret", KEY)
    assert admit(node.book, ALICE, secret.wire, KEY)
    alice = sender(ALICE, "alice")
    msg = alice.post(alice.book.join_private("secret", KEY), "lost in time")
    node.receive(ALICE, msg, hist=True)
    await turn()
    assert message_count(store) == 0  # kept, its key asked for
    node.receive(ALICE, msg, hist=True)  # sync brings it again: the wait is over
    await turn()
    wire = box.private_room_id("secret")
    [row] = store.history(wire, 10)
    assert row.text == UNREADABLE
    assert node.history.sync.holds(wire, ALICE.peer_id, 1)  # sync stops bringing it
    give_keys(ALICE, node.book)
    await turn()
    [row] = store.history(wire, 10)
    assert row.text == "lost in time"
    assert [e.text for e in node.history.search("lost in", 10).messages] == ["lost in time"]


async def test_a_key_given_up_on_is_asked_again_of_a_new_member_who_may_forward_it(
    make_node: Any, sender: Any, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 1: giving up is not for good. A message stored unread has its key asked for
    again of each member admitted later; that member's forward of the author's key is taken
    (it reads the stored message) and the text is filled in."""
    monkeypatch.setattr(limits, "MEGOLM_GIVE_UP_S", 0.0)
    node = make_node(ALICE, CAROL)
    secret = node.book.join_private("secret", KEY)
    assert admit(node.book, ALICE, secret.wire, KEY)
    alice = sender(ALICE, "alice")
    msg = alice.post(alice.book.join_private("secret", KEY), "late but read")
    node.receive(ALICE, msg, hist=True)
    await turn()
    node.receive(ALICE, msg, hist=True)
    await turn()
    [row] = store.history(secret.wire, 10)
    assert row.text == UNREADABLE
    node = make_node(ALICE, CAROL)  # a restart: nothing kept in memory
    mine = KEYS_SENT[ME.peer_id]
    mine.clear()
    assert node.book.group is not None
    node.book.group.on_admitted(secret.wire, CAROL.peer_id)  # carol is admitted later
    asked = [gk.decode(inner) for to, inner in mine if to == CAROL.peer_id]
    assert [type(f) for f in asked] == [gk.RoomKeyRequest]
    # carol forwards alice's key (here: the one alice gave us, passed on by carol).
    alices = [inner for to, inner in KEYS_SENT[ALICE.peer_id] if to == ME.peer_id]
    assert alices
    for inner in alices:
        node.book.group.received(CAROL.peer_id, inner)
    [row] = store.history(secret.wire, 10)
    assert row.text == "late but read"


async def test_a_private_room_takes_messages_from_members_only(
    make_node: Any, sender: Any, store: Store
) -> None:
    """docs/protocol.md 27.4: a message of a private room is taken if it came from an
    admitted peer (a member vouches for what it stores) or its author is a member we know
    (admitted, or it gave us a key); a stranger's is neither kept, asked about nor stored."""
    node = make_node(ALICE, BOB, CAROL)
    secret = node.book.join_private("secret", KEY)
    bob, mallory = sender(BOB, "bob"), sender(MALLORY, "mallory")
    from_bob = bob.post(bob.book.join_private("secret", KEY), "bob writes")
    junk = mallory.post(mallory.book.join_private("secret", KEY), "mallory writes")
    for sent in KEYS_SENT.values():
        sent.clear()
    # Nobody admitted yet: mallory's own message, and bob's through carol, are refused.
    node.receive(MALLORY, junk)
    node.receive(CAROL, from_bob)
    await turn()
    assert node.book.group is not None and node.book.group._held_count == 0
    assert KEYS_SENT.get(ME.peer_id, []) == []  # no key asked of anyone
    # alice is admitted: her copies of anyone's messages are kept, their keys asked for.
    assert admit(node.book, ALICE, secret.wire, KEY)
    node.receive(ALICE, from_bob)
    node.receive(ALICE, junk)  # (a member may pass on what it stored)
    await turn()
    assert node.book.group._held_count == 2
    # bob gave us a key: his messages are taken from anyone now (they are signed).
    assert bob.book.group is not None
    bob.book.group.on_admitted(secret.wire, ME.peer_id)
    assert give_keys(BOB, node.book) == 1
    node.receive(CAROL, bob.post(bob.book.joined[secret.wire], "bob via carol"))
    await turn()
    await turn()
    shown = [e.text for e in node.events if isinstance(e, ev.Message)]
    assert sorted(shown) == ["bob via carol", "bob writes"]


# --- History: blocked authors ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["public", "dm"])
async def test_blocked_author_is_neither_stored_nor_shown(
    make_node: Any, sender: Any, store: Store, kind: str
) -> None:
    node = make_node(ALICE, BOB)
    node.book.set_blocked(ALICE.peer_id, True)
    alice = sender(ALICE, "alice")
    general = alice.book.joined[DEFAULT_ROOM]
    msg = alice.post(general, "let me in") if kind == "public" else alice.dm(ME, "let me in")
    conn = node.receive(ALICE, msg)
    # Relayed by someone else: dropped too.
    relayed = alice.post(general, "via bob") if kind == "public" else alice.dm(ME, "via bob")
    node.receive(BOB, relayed)
    await turn()
    assert conn.closed is None
    assert node.events == []
    assert message_count(store) == 0
    assert node.manager.broadcasts == []  # not relayed by us either
    # Unblocked, the next message is shown.
    node.book.set_blocked(ALICE.peer_id, False)
    later = alice.post(general, "sorry") if kind == "public" else alice.dm(ME, "sorry")
    node.receive(ALICE, later)
    await turn()
    shown = [e for e in node.events if isinstance(e, ev.Message | ev.DirectMessage)]
    assert [e.text for e in shown] == ["sorry"]


# --- regressions found in review --------------------------------------------


async def test_a_relayed_message_is_relayed_once_whoever_brings_it_again(
    make_node: Any, sender: Any
) -> None:
    # In a mesh every copy comes back from another peer; relaying each copy
    # again is an endless storm.
    node = make_node(ALICE, BOB, CAROL)
    alice = sender(ALICE, "alice")
    msg = alice.post(alice.book.join_public("dev"), "in dev")
    for via in (ALICE, BOB, CAROL, BOB):
        node.receive(via, msg)
    await turn()
    assert len(node.manager.chats()) == 1


async def test_conversation_frames_go_only_to_the_other_party(make_node: Any, sender: Any) -> None:
    node = make_node(ALICE, BOB)
    alice = sender(ALICE, "alice")
    node.receive(ALICE, alice.dm(ME, "hi"))
    await turn()
    wire = box.dm_room(ME.peer_id, ALICE.peer_id)
    node.history.room_changed(wire)
    assert not any(getattr(f, "room", None) == wire for f in node.manager.frames)
    assert any(getattr(f, "room", None) == wire for f in node.conns[ALICE.peer_id].sent)
    assert not any(getattr(f, "room", None) == wire for f in node.conns[BOB.peer_id].sent)


async def test_a_private_rooms_sync_goes_only_to_admitted_peers(
    make_node: Any, sender: Any, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-member that announces the wire name gets no vector, no push, no message."""
    node = make_node(ALICE, BOB)
    secret = node.book.join_private("secret", KEY)
    alice = sender(ALICE, "alice")
    node.receive(ALICE, alice.post(alice.book.join_private("secret", KEY), "hush"))
    await turn()
    for who in (ALICE, BOB):
        node.book.set_announced(who.peer_id, m.Rooms(joined=[m.RoomAnnounce(secret.wire)]))
    assert admit(node.book, ALICE, secret.wire, KEY)
    node.history.peer_admitted(ALICE.peer_id, secret.wire)
    node.history.room_changed(secret.wire)
    bob = node.conns[BOB.peer_id]
    bob_conn: Any = bob
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # BOB asks for the room's history as a member would
            node.history.sync_frame(
                bob_conn, m.Want(room=secret.wire, author=ALICE.peer_id, lo=1, hi=1)
            )
            node.history.sync_frame(bob_conn, m.Vector(room=secret.wire, have={}))
        await turn()
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert not any(getattr(f, "room", None) == secret.wire for f in node.manager.frames)
    assert not any(getattr(f, "room", None) == secret.wire for f in bob.sent)
    assert not any(isinstance(f, m.Chat) for f in bob.sent)
    refusals = [r for r in caplog.records if "not admitted" in r.getMessage()]
    assert len(refusals) == 1  # logged once
    # The admitted member gets the room's vector.
    sent = node.conns[ALICE.peer_id].sent
    assert any(isinstance(f, m.Vector) and f.room == secret.wire for f in sent)


def test_private_room_may_not_share_a_public_rooms_name(store: Store) -> None:
    # Otherwise text meant for the private room could go out in the public one.
    book = load_book(store)
    book.join_public("foo")
    with pytest.raises(UsageError, match="public room"):
        book.join_private("foo", KEY)


async def test_a_failed_commit_gives_its_seq_back(
    make_node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = make_node(ALICE)
    room = node.book.joined[DEFAULT_ROOM]
    first = node.history.next_seq(room.wire)
    ok = make_message(ME, room.wire, "me", TS, first, "one")
    await node.history.submit_own(ok, "one")

    def disk_full(*args: Any) -> Any:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(node.history.store, "insert_messages", disk_full)
        seq = node.history.next_seq(room.wire)
        lost = node.history.submit_own(make_message(ME, room.wire, "me", TS, seq, "two"), "two")
        with pytest.raises(OSError):
            await lost
    again = node.history.next_seq(room.wire)
    assert again == seq  # no hole: the next message takes the failed one's number


# --- RoomBook: the conversation limit (hardening) -----------------------------------------


def stranger_dm(book: RoomBook, who: Identity) -> Room:
    """The unsaved conversation a first message from who opens (as history.py gets it)."""
    room = book.holds(box.dm_room(ME.peer_id, who.peer_id), who.peer_id)
    assert room is not None and room.wire not in book.joined
    return room


def dm_count(book: RoomBook) -> int:
    return sum(1 for r in book.joined.values() if r.kind == DM)


def test_throwaway_keys_cannot_fill_the_conversation_limit_for_good(store: Store) -> None:
    book = load_book(store)
    throwaways = [Identity.generate() for _ in range(limits.MAX_CONVERSATIONS)]
    for t in throwaways:
        assert book.remember(stranger_dm(book, t)) is True
    assert dm_count(book) == limits.MAX_CONVERSATIONS
    # A real person still gets through: the least recently active stranger's one goes.
    assert book.remember(stranger_dm(book, ALICE)) is True
    assert dm_count(book) == limits.MAX_CONVERSATIONS
    assert box.dm_room(ME.peer_id, ALICE.peer_id) in book.joined
    assert box.dm_room(ME.peer_id, throwaways[0].peer_id) not in book.joined


def test_conversations_we_wrote_in_or_with_verified_peers_are_never_replaced(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_CONVERSATIONS", 3)
    book = load_book(store)
    ours = book.join_dm(BOB.peer_id)
    book.wrote_in(ours)
    book.set_verified(CAROL.peer_id, "carol")
    assert book.remember(stranger_dm(book, CAROL))
    assert book.remember(stranger_dm(book, ALICE))
    # ALICE's is the only stranger's; active again, it is still the one replaced.
    assert book.remember(book.holds(box.dm_room(ME.peer_id, ALICE.peer_id), ALICE.peer_id))  # type: ignore[arg-type]
    newcomers = [Identity.generate() for _ in range(5)]
    for n in newcomers:
        assert book.remember(stranger_dm(book, n)) is True
        assert {r.peer for r in book.joined.values() if r.kind == DM} == {
            BOB.peer_id,
            CAROL.peer_id,
            n.peer_id,
        }
    # Only ours and verified ones kept: a new stranger is refused.
    book.wrote_in(book.joined[box.dm_room(ME.peer_id, newcomers[-1].peer_id)])
    assert book.remember(stranger_dm(book, MALLORY)) is False


def test_a_conversation_we_wrote_in_stays_ours_after_a_restart(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chinwag.store.db import NewMessage

    monkeypatch.setattr(limits, "MAX_CONVERSATIONS", 1)
    book = load_book(store)
    room = book.join_dm(BOB.peer_id)
    msg = make_message(ME, room.wire, "me", TS, 1, "", b"x")
    store.insert_messages(
        [
            NewMessage(
                msg.id, room.wire, ME.peer_id, 1, TS, "me", "hi", msg.raw_body, msg.sig, False, True
            )
        ]
    )
    store, book = reload(store)
    try:
        assert book.remember(stranger_dm(book, MALLORY)) is False
        assert room.wire in book.joined
    finally:
        store.close()


def test_undecryptable_messages_from_many_throwaway_keys_keep_bounded_state(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # Any key can open a conversation: one undecryptable message each must not grow
    # what the book remembers about them without bound (review of the hardening).
    book = load_book(store)
    caplog.set_level(logging.DEBUG, logger="chinwag.rooms")
    for i in range(limits.MAX_WARNED_KEYS + 50):
        stranger = Identity.from_seed(i.to_bytes(32, "big"))
        room = book.holds(box.dm_room(ME.peer_id, stranger.peer_id), stranger.peer_id)
        assert room is not None
        garbled = make_message(stranger, room.wire, "x", TS, 1, "", enc=b"x" * 40)
        assert book.plaintext(room, garbled) is None
    assert len(book._undecryptable_logged) <= limits.MAX_WARNED_KEYS
    # A room is still reported once at warning level, its repeats at debug level.
    again = make_message(stranger, room.wire, "x", TS, 2, "", enc=b"y" * 40)
    assert book.plaintext(room, again) is None
    about = [r for r in caplog.records if r.args and r.args[0] == room.name]
    assert [r.levelno for r in about] == [logging.WARNING, logging.DEBUG]


# --- the admission adapter (admission.py) ------------------------------------------------


@dataclass
class _AdmitLink:
    """A link between two Admissions adapters; frames cross on the next loop turn."""

    peer_id: str
    to: list[Any]
    back: list[Any]
    drop: bool = False
    closed: str | None = None

    @property
    def is_open(self) -> bool:
        return self.closed is None

    def send_frame(self, frame: m.Frame) -> None:
        if not self.drop:
            assert isinstance(frame, m.Admit)
            asyncio.get_running_loop().call_soon(self.to[0].frame, self.back[0], frame)

    def close(self, reason: str, linger: bool = False) -> None:
        self.closed = reason


async def test_admission_recovers_by_itself_after_unanswered_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs lost (a peer that did not answer in time) are started again by the sweep."""
    monkeypatch.setattr(limits, "ADMIT_TIMEOUT_S", 0.05)
    monkeypatch.setattr(limits, "ADMIT_RETRY_S", 0.1)
    stores = [Store(tmp_path / "x.db"), Store(tmp_path / "y.db")]
    books = [load_book(stores[0], ALICE), load_book(stores[1], BOB)]
    for book in books:
        book.join_private("secret", KEY)
    wire = box.private_room_id("secret")
    books[0].set_announced(BOB.peer_id, m.Rooms(joined=[m.RoomAnnounce(wire)]))
    books[1].set_announced(ALICE.peer_id, m.Rooms(joined=[m.RoomAnnounce(wire)]))
    link_ab = _AdmitLink(BOB.peer_id, [], [], drop=True)  # A's link to B
    link_ba = _AdmitLink(ALICE.peer_id, [], [], drop=True)
    admitted = asyncio.Event()
    seen: list[tuple[str, str]] = []

    def note(w: str, p: str) -> None:
        seen.append((w, p))
        if len(seen) == 2:
            admitted.set()

    a = Admissions(
        books[0], lambda: {BOB.peer_id: link_ab}, lambda p: b"h" * 32, note, lambda e: None
    )
    b = Admissions(
        books[1], lambda: {ALICE.peer_id: link_ba}, lambda p: b"h" * 32, note, lambda e: None
    )
    # `to`: the adapter that receives; `back`: the link it answers on.
    link_ab.to, link_ab.back = [b], [link_ba]
    link_ba.to, link_ba.back = [a], [link_ab]
    a.announced(BOB.peer_id)
    b.announced(ALICE.peer_id)
    async with asyncio.timeout(5):  # the runs time out unanswered
        while a.machine.running(BOB.peer_id, wire) or b.machine.running(ALICE.peer_id, wire):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert books[0].admitted(wire) == frozenset()
    link_ab.drop = link_ba.drop = False
    await asyncio.wait_for(admitted.wait(), 5)
    assert books[0].admitted(wire) == frozenset({BOB.peer_id})
    assert books[1].admitted(wire) == frozenset({ALICE.peer_id})
    for adapter in (a, b):
        adapter.close()
    for s in stores:
        s.close()

"""Hostile inputs that once got through, as byte literals at the sans-IO level.

Each literal is the plaintext of one transport frame exactly as a hostile peer
would encrypt it; the codec must refuse it (RemoteProtocolError with a Reason), and a
session fed it must close with that reason and never raise.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from unit_support import FakeConn, FakeManager, byte_by_byte, make_info, pair, whole

from chinwag import events as ev
from chinwag.crypto.identity import Identity
from chinwag.errors import RemoteProtocolError
from chinwag.history import History
from chinwag.protocol import messages as m
from chinwag.protocol.chat import ChatMessage, make_message
from chinwag.protocol.reasons import Reason
from chinwag.rooms import RoomBook
from chinwag.store.db import Store, StoreError

ALICE = Identity.from_seed(b"a" * 32)
ME = Identity.from_seed(b"z" * 32)
ROOM = "general"

#: ALICE's peer id, for reading the literals below.
ALICE_ID = "v4dkhyzjc4koj42wygojwfondfi6y3tgmkvhppqhkr7sre4dgqoq"

# Peer ids that have the right length but are not canonical: history.py used to find
# them itself (an `except Exception` that also turned store failures into
# `malformed_frame`); now the codec refuses them.
VEC_KEY_ENDS_IN_B = (
    b"\x83\xa1t\xa3vec\xa4room\xa7general\xa4have\x81\xd94"
    b"v4dkhyzjc4koj42wygojwfondfi6y3tgmkvhppqhkr7sre4dgqob\x01"
)
WANT_AUTHOR_UPPERCASE = (
    b"\x85\xa1t\xa4want\xa4room\xa7general\xa6author\xd94"
    b"V4DKHYZJC4KOJ42WYGOJWFONDFI6Y3TGMKVHPPQHKR7SRE4DGQOQ\xa2lo\x01\xa2hi\x02"
)
FLOOR_AUTHOR_ENDS_IN_NEWLINE = (
    b"\x84\xa1t\xa5floor\xa4room\xa7general\xa6author\xd94"
    b"v4dkhyzjc4koj42wygojwfondfi6y3tgmkvhppqhkr7sre4dgqo\n\xa3seq\x01"
)
FLOOR_OK = (
    b"\x84\xa1t\xa5floor\xa4room\xa7general\xa6author\xd94"
    b"v4dkhyzjc4koj42wygojwfondfi6y3tgmkvhppqhkr7sre4dgqoq\xa3seq\x01"
)

HOSTILE = {
    "vec key ends in b": VEC_KEY_ENDS_IN_B,
    "want author uppercase": WANT_AUTHOR_UPPERCASE,
    "floor author ends in newline": FLOOR_AUTHOR_ENDS_IN_NEWLINE,
}


def test_the_literals_say_what_they_claim() -> None:
    assert ALICE.peer_id == ALICE_ID
    assert m.decode_frame(FLOOR_OK) == m.Floor(room=ROOM, author=ALICE_ID, seq=1)


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_codec_refuses_a_non_canonical_peer_id(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        m.decode_frame(data)
    assert info.value.code == Reason.MALFORMED_FRAME


@pytest.mark.parametrize("chunker", [whole, byte_by_byte], ids=["whole", "byte_by_byte"])
@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_session_fed_a_non_canonical_peer_id_closes_with_malformed_frame(
    data: bytes, chunker: Any
) -> None:
    p = pair(make_info("alice"), make_info("bob"))
    p.take()
    p.a.send_encoded(data)
    p.shuttle(1.0, chunker)
    ours, theirs = p.take()
    assert theirs == [("closed", Reason.MALFORMED_FRAME, False)]
    assert ours == [("closed", Reason.MALFORMED_FRAME, True)]


#: Frames that once needed a fix or a bound (see test_session.py for the full
#: hostile catalogue built with encode_raw), pinned here as the bytes a peer sends.
MALFORMED = {
    "chat body not bytes": b"\x82\xa1t\xa4chat\xa4body\x05",
    "ping n negative": b"\x82\xa1t\xa4ping\xa1n\xff",
    "bye reason 65 chars": b"\x82\xa1t\xa3bye\xa6reason\xd9A" + b"x" * 65,
    "nick with NUL": b"\x82\xa1t\xa4nick\xa4nick\xa2x\x00",
    "rooms kcv 17 bytes": b"\x82\xa1t\xa5rooms\xa6joined\x91\x92\xa3dev\xc4\x11" + b"x" * 17,
    "tag not a string": b"\x81\xa1t\x05",
    "not msgpack": b"\xc1",
    "chat relays past a byte": b"\x84\xa1t\xa4chat\xa4body\xc4\x01x\xa3sig\xc4\x40"
    + b"s" * 64
    + b"\xa6relays\xcd\x01\x00",
}


@pytest.mark.parametrize("chunker", [whole, byte_by_byte], ids=["whole", "byte_by_byte"])
@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_frame_closes_with_malformed_frame(data: bytes, chunker: Any) -> None:
    p = pair(make_info("alice"), make_info("bob"))
    p.take()
    p.a.send_encoded(data)
    p.shuttle(1.0, chunker)
    assert p.take() == (
        [("closed", Reason.MALFORMED_FRAME, True)],
        [("closed", Reason.MALFORMED_FRAME, False)],
    )


def test_an_unknown_40_character_tag_is_ignored_and_cut() -> None:
    p = pair(make_info("alice"), make_info("bob"))
    p.take()
    p.a.send_encoded(b"\x81\xa1t\xd9(" + b"z" * 40)
    p.shuttle(1.0)
    assert p.take() == ([], [("unknown", "z" * 32)])
    assert not p.b.closed


def test_an_empty_noise_message_is_decrypt_failed() -> None:
    p = pair(make_info("alice"), make_info("bob"))
    p.take()
    p.b.receive_data(b"\x00\x00", 1.0)
    p.shuttle(1.0)
    assert p.take()[1] == [("closed", Reason.DECRYPT_FAILED, False)]


#: ALICE's chat body dated 10**15 ms (year 33658): outside the fixed range on every peer.
BODY_FAR_FUTURE = (
    b"\x97\xa7general\xc4 \xaf\x06\xa3\xe3)\x17\x14\xe4\xf3V\xc1\x9c\x9b\x15\xcd\x19Q"
    b"\xecnfb\xaaw\xbe\x07T\x7f(\x93\x834\x1d\xa5alice\xcf\x00\x03\x8d~\xa4\xc6\x80\x00"
    b"\x01\xa2hi\xc4\x00"
)


def test_a_chat_dated_outside_the_fixed_range_is_bad_timestamp() -> None:
    body = m.decode_body(BODY_FAR_FUTURE)
    assert (body.author, body.ts, body.text) == (ALICE.public, 10**15, "hi")
    assert m.ts_verdict(body.ts, 1_700_000_000_000) == Reason.BAD_TIMESTAMP


def chat_frame(who: Identity, seq: int) -> m.Chat:
    msg: ChatMessage = make_message(who, ROOM, "someone", 1_700_000_000_000, seq, "late")
    return m.Chat(body=msg.raw_body, sig=msg.sig, hist=True)


class Node:
    """A loaded History of ME over a real store, with fake peers (net/link.py fakes)."""

    def __init__(self, store: Store) -> None:
        self.events: list[ev.NodeEvent] = []
        self.manager = FakeManager()
        self.book = RoomBook(store, ME)
        self.book.load()
        self.history = History(store, ME, self.manager, self.events.append, self.book)  # type: ignore[arg-type]
        self.history.load()
        self.store = store

    def peer(self, who: Identity) -> FakeConn:
        conn = FakeConn(who.peer_id)
        self.manager.peers[who.peer_id] = conn
        self.book.set_announced(who.peer_id, m.Rooms(joined=[m.RoomAnnounce(room=ROOM)]))
        return conn


@pytest.fixture
async def node(store: Store) -> Any:
    n = Node(store)
    yield n
    await n.history.close()


async def test_a_store_failure_on_a_floor_is_not_the_peers_fault(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A floor that cannot be saved is our store's error: the honest peer stays connected."""
    bob = node.peer(ALICE)  # alice serves her own history: an honest, backed floor
    node.history.sync_frame(bob, m.Vector(room=ROOM, have={ALICE_ID: 9}))
    for seq in (8, 9):
        node.history.chat_received(bob, chat_frame(ALICE, seq))
    for _ in range(3):  # History's group commit runs from call_soon
        await asyncio.sleep(0)
    assert node.history.sync.vector(ROOM) == {}  # 8..9 held, 1..7 missing

    def broken(*_args: object) -> None:
        raise StoreError("cannot write the message store: disk I/O error")

    monkeypatch.setattr(node.store, "set_floor", broken)
    floor = m.decode_frame(FLOOR_OK.replace(b"\xa3seq\x01", b"\xa3seq\x08"))
    assert isinstance(floor, m.Floor)
    node.history.sync_frame(bob, floor)
    assert bob.closed is None

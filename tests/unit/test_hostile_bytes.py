"""Hostile inputs that once got through, as byte literals at the sans-IO level.

Each literal is the plaintext of one transport frame exactly as a hostile peer
would encrypt it; the codec must refuse it (RemoteProtocolError with a Reason), and a
session fed it must close with that reason and never raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
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

#: ALICE's peer id (Identity.from_seed(b"a" * 32)), for reading the literals below.
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


ALICE = Identity.from_seed(b"a" * 32)
ME = Identity.from_seed(b"z" * 32)
ROOM = "general"


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
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "chinwag.db")
    yield s
    s.close()


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

"""roomkeys.py: sharing, rotation, requests and expiry of Megolm room keys (docs/protocol.md 27).

Real stores in tmp_path; the pairwise channel is a list each member's frames go to, delivered
by hand; the clock is a variable. No sockets.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from chinwag import limits
from chinwag.crypto import box, group
from chinwag.crypto.identity import Identity
from chinwag.errors import RemoteProtocolError
from chinwag.protocol import groupkeys as gk
from chinwag.protocol import messages as m
from chinwag.protocol.chat import ChatMessage, make_message
from chinwag.roomkeys import RoomKeys
from chinwag.store.db import Store

WIRE = box.private_room_id("secret")
ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)
MALLORY = Identity.from_seed(b"m" * 32)
#: The room's passphrase key (Argon2id in real life): room keys travel sealed under it.
PASSKEY = bytes(range(32))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Member:
    """One node's RoomKeys over a real store; what it sends is kept in `out`."""

    def __init__(self, tmp: Path, identity: Identity, clock: Clock) -> None:
        self.identity = identity
        self.id = identity.peer_id
        self.clock = clock
        self.store = Store(tmp / f"{identity.peer_id[:8]}.db")
        self.admitted: set[str] = set()
        self.out: list[tuple[str, bytes]] = []
        self.seq = 0
        self.retried: list[object] = []
        self.passkey = PASSKEY
        self.keys = self._keys()

    def _keys(self) -> RoomKeys:
        def send(peer: str, kind: str, inner: bytes) -> bool:
            assert kind == gk.decode(inner).__struct_config__.tag
            self.out.append((peer, inner))
            return True

        keys = RoomKeys(
            self.store,
            self.identity,
            send,
            lambda w: set(self.admitted),
            lambda w: self.passkey if w == WIRE else None,
            self.clock,
        )
        keys.retry = lambda conn, frame: self.retried.append(frame)
        return keys

    def restart(self) -> None:
        self.store.close()
        self.store = Store(self.store.path)
        self.keys = self._keys()

    def write(self, text: str) -> tuple[int, bytes]:
        self.seq += 1
        return self.seq, self.keys.seal(WIRE, self.seq, text)

    def frames_to(self, other: Member) -> list[bytes]:
        mine = [inner for to, inner in self.out if to == other.id]
        self.out = [(to, inner) for to, inner in self.out if to != other.id]
        return mine

    def deliver(self, other: Member) -> int:
        """Hand other every frame we sent it; return how many."""
        frames = self.frames_to(other)
        for inner in frames:
            other.keys.received(self.id, inner)
        return len(frames)

    def read(self, author: Member, seq: int, enc: bytes) -> str:
        return self.keys.open(WIRE, author.id, seq, enc)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def members(tmp_path: Path, clock: Clock) -> Iterator[dict[str, Member]]:
    made = {n: Member(tmp_path, i, clock) for n, i in (("a", ALICE), ("b", BOB), ("c", CAROL))}
    for one in made.values():
        one.admitted = {o.id for o in made.values() if o is not one}
    yield made
    for one in made.values():
        one.store.close()


def sid_of(enc: bytes) -> str:
    return group.envelope(enc)[0]


def test_the_first_message_shares_the_key_with_every_admitted_member(
    members: dict[str, Member],
) -> None:
    a, b, c = members["a"], members["b"], members["c"]
    seq, enc = b.write("hello")
    assert b.read(b, seq, enc) == "hello"  # our own copy
    assert {to for to, _ in b.out} == {a.id, c.id}
    for other in (a, c):
        assert b.deliver(other) == 1
        assert other.read(b, seq, enc) == "hello"
    seq2, enc2 = b.write("again")
    assert sid_of(enc2) == sid_of(enc) and b.out == []  # same session, nothing new to share
    assert a.read(b, seq2, enc2) == "again"


def test_after_a_member_leaves_new_messages_do_not_open_with_anything_it_holds(
    members: dict[str, Member],
) -> None:
    a, b, c = members["a"], members["b"], members["c"]
    seq, enc = b.write("before")
    b.deliver(a)
    b.deliver(c)
    assert a.read(b, seq, enc) == "before"
    # a leaves: its rooms frame drops the room, so b's node stops admitting it.
    b.admitted.discard(a.id)
    b.keys.member_left(WIRE, a.id)
    seq2, enc2 = b.write("after a left")
    assert sid_of(enc2) != sid_of(enc)  # rotated
    assert b.frames_to(a) == []  # the new key goes to c only
    b.deliver(c)
    assert c.read(b, seq2, enc2) == "after a left"
    with pytest.raises(group.UnknownSession):
        a.read(b, seq2, enc2)
    # Asking b for it does not help: a is no member of b's any more.
    a.keys.hold(_Conn(), _chat(b, seq2, enc2), _msg(b, seq2, enc2))
    assert [gk.decode(f) for f in a.frames_to(b)] == [
        gk.RoomKeyRequest(room=WIRE, author=b.id, sid=sid_of(enc2))
    ]
    b.keys.received(a.id, gk.encode(gk.RoomKeyRequest(room=WIRE, author=b.id, sid=sid_of(enc2))))
    assert b.frames_to(a) == []
    # Nor does c, who has it, give it to a once c knows a left too.
    c.admitted.discard(a.id)
    c.keys.received(a.id, gk.encode(gk.RoomKeyRequest(room=WIRE, author=b.id, sid=sid_of(enc2))))
    assert c.frames_to(a) == []


def test_blocking_rotates_too_and_persists_across_a_restart(members: dict[str, Member]) -> None:
    b = members["b"]
    _seq, enc = b.write("x")
    b.keys.member_left(WIRE, members["a"].id)
    b.restart()
    _seq2, enc2 = b.write("y")
    assert sid_of(enc2) != sid_of(enc)


def test_rotation_after_n_messages_and_after_a_week(
    members: dict[str, Member], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MEGOLM_ROTATE_MSGS", 3)
    b = members["b"]
    sids = [sid_of(b.write(f"m{i}")[1]) for i in range(7)]
    assert sids[0] == sids[1] == sids[2] != sids[3] == sids[4] == sids[5] != sids[6]
    clock.now += limits.MEGOLM_ROTATE_S
    assert sid_of(b.write("a week later")[1]) != sids[6]


def test_the_outbound_session_survives_a_restart_without_reusing_an_index(
    members: dict[str, Member],
) -> None:
    a, b = members["a"], members["b"]
    seq, enc = b.write("one")
    b.deliver(a)
    b.restart()
    seq2, enc2 = b.write("two")
    assert sid_of(enc2) == sid_of(enc)
    raw1, raw2 = group.envelope(enc)[1], group.envelope(enc2)[1]
    assert raw1 != raw2
    assert a.read(b, seq2, enc2) == "two"
    assert b.read(b, seq, enc) == "one"


def test_the_store_alone_does_not_open_the_sessions(
    members: dict[str, Member], tmp_path: Path, clock: Clock
) -> None:
    b = members["b"]
    seq, enc = b.write("one")
    b.store.close()
    thief = Member.__new__(Member)
    thief.identity, thief.id, thief.clock = MALLORY, b.id, clock
    thief.store = Store(b.store.path)
    thief.admitted, thief.out, thief.retried, thief.passkey = set(), [], [], PASSKEY
    thief.keys = thief._keys()  # another identity's pickle key
    try:
        with pytest.raises(group.UnknownSession):
            thief.keys.open(WIRE, b.id, seq, enc)
    finally:
        thief.store.close()
        b.store = Store(b.store.path)


def test_a_key_from_a_non_member_is_refused_and_logged_once(
    members: dict[str, Member], tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    a = members["a"]
    mallory = Member(tmp_path, MALLORY, clock)
    mallory.admitted = {a.id}
    seq, enc = mallory.write("let me in")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            for inner in mallory.out:
                a.keys.received(mallory.id, inner[1])
    mallory.store.close()
    with pytest.raises(group.UnknownSession):
        a.read(mallory, seq, enc)
    refusals = [r for r in caplog.records if "not an admitted member" in r.getMessage()]
    assert len(refusals) == 1


def test_a_key_sealed_under_another_passphrase_is_refused(
    members: dict[str, Member], caplog: pytest.LogCaptureFixture
) -> None:
    """A member admitted without the passphrase (a replayed announcement, today) gets keys it
    cannot open; one it sends sealed under another passphrase is refused."""
    a, b = members["a"], members["b"]
    b.passkey = bytes(32)  # b joined with another passphrase
    seq, enc = b.write("x")
    [frame] = b.frames_to(a)
    rk = gk.decode(frame)
    assert isinstance(rk, gk.RoomKey)
    with pytest.raises(group.GroupError):
        group.open_key(PASSKEY, rk.key)
    with caplog.at_level(logging.WARNING):
        a.keys.received(b.id, frame)
    with pytest.raises(group.UnknownSession):
        a.read(b, seq, enc)
    assert any("another passphrase" in r.getMessage() for r in caplog.records)


def test_a_malformed_key_frame_is_a_protocol_error(members: dict[str, Member]) -> None:
    a, b = members["a"], members["b"]
    truncated = gk.encode(gk.RoomKeyRequest(room=WIRE, author=b.id, sid="s"))[:-1]
    for junk in (b"", b"\x81\xa1t\xa2rk", truncated):
        with pytest.raises(RemoteProtocolError):
            a.keys.received(b.id, junk)
    # A well-formed frame with a key that is no key: refused, no exception.
    a.keys.received(b.id, gk.encode(gk.RoomKey(room=WIRE, author=b.id, key=b"AAAA")))


def test_an_offline_member_catches_up_through_another_member(members: dict[str, Member]) -> None:
    """c was away while b wrote; b is away now: a forwards b's key to c, who keeps b's
    messages (brought by sync) until then; the key is taken because it reads them."""
    a, b, c = members["a"], members["b"], members["c"]
    b.admitted.discard(c.id)
    seq, enc = b.write("while c was away")
    b.deliver(a)
    b.frames_to(c)
    c.admitted.discard(b.id)  # b is gone when c comes back
    c.keys.hold(_Conn(), _chat(b, seq, enc), _msg(b, seq, enc))
    [request] = c.frames_to(a)  # b not connected: asked of a member
    c.keys.hold(_Conn(), _chat(b, seq, enc), _msg(b, seq, enc))  # pushed again: no new request
    assert c.frames_to(a) == []
    a.keys.received(c.id, request)
    assert a.deliver(c) == 1
    assert len(c.retried) == 1  # the kept message goes through history again
    assert c.read(b, seq, enc) == "while c was away"


def poisoned(exported: str) -> str:
    """The export of the same session (same id: its signing key) with a damaged ratchet."""
    raw = bytearray(base64.b64decode(exported + "=" * (-len(exported) % 4)))
    raw[10] ^= 1  # inside the ratchet, after the version byte and the index
    return base64.b64encode(bytes(raw)).decode().rstrip("=")


def test_a_forwarded_key_that_reads_nothing_we_keep_is_refused(
    members: dict[str, Member],
) -> None:
    """A member passing off a damaged copy of b's session (same session id) would make c
    drop b's messages as forged: a forwarded key must read a message c keeps."""
    a, b, c = members["a"], members["b"], members["c"]
    seq, enc = b.write("real")
    b.deliver(a)
    b.frames_to(c)
    a.keys.received(c.id, gk.encode(gk.RoomKeyRequest(room=WIRE, author=b.id, sid=sid_of(enc))))
    [answer] = a.frames_to(c)
    exported = gk.decode(answer)
    assert isinstance(exported, gk.RoomKey)
    damaged = poisoned(group.open_key(PASSKEY, exported.key))
    bad = gk.encode(gk.RoomKey(room=WIRE, author=b.id, key=group.seal_key(PASSKEY, damaged)))
    # Unasked: refused.
    c.keys.received(a.id, bad)
    # Asked (c keeps b's message), but it reads nothing: refused as well.
    c.keys.hold(_Conn(), _chat(b, seq, enc), _msg(b, seq, enc))
    c.keys.received(a.id, bad)
    assert c.retried == []
    with pytest.raises(group.UnknownSession):
        c.read(b, seq, enc)
    # The genuine forward is taken and c reads the message.
    c.keys.received(a.id, answer)
    assert len(c.retried) == 1
    assert c.read(b, seq, enc) == "real"


def test_key_requests_are_answered_within_a_bound(members: dict[str, Member], clock: Clock) -> None:
    a, b = members["a"], members["b"]
    _seq, enc = b.write("x")
    b.out.clear()
    request = gk.encode(gk.RoomKeyRequest(room=WIRE, author=b.id, sid=sid_of(enc)))
    for _ in range(limits.MEGOLM_RKQ_PER_WINDOW * 3):
        b.keys.received(a.id, request)
    assert len(b.frames_to(a)) == limits.MEGOLM_RKQ_PER_WINDOW
    clock.now += limits.MEGOLM_RKQ_WINDOW_S
    b.keys.received(a.id, request)
    assert len(b.frames_to(a)) == 1


def test_inbound_sessions_older_than_the_window_are_deleted(
    members: dict[str, Member], clock: Clock
) -> None:
    a, b = members["a"], members["b"]
    seq, enc = b.write("old")
    b.deliver(a)
    assert a.read(b, seq, enc) == "old"
    clock.now += limits.MEGOLM_KEEP_INBOUND_S + 1
    a.keys.expire()
    with pytest.raises(group.UnknownSession):
        a.read(b, seq, enc)


def test_kept_messages_are_bounded(members: dict[str, Member]) -> None:
    a, b = members["a"], members["b"]
    for i in range(limits.MEGOLM_MAX_PENDING_MSGS + 10):
        seq, enc = b.write(f"m{i}")
        a.keys.hold(_Conn(), _chat(b, seq, enc), _msg(b, seq, enc))
    assert a.keys._held_count == limits.MEGOLM_MAX_PENDING_MSGS
    b.deliver(a)
    assert len(a.retried) == limits.MEGOLM_MAX_PENDING_MSGS


# --- helpers: a signed chat as history hands it over ------------------------------------


class _Conn:
    peer_id = ALICE.peer_id


def _msg(author: Member, seq: int, enc: bytes) -> ChatMessage:
    return make_message(author.identity, WIRE, "nick", 1_700_000_000_000 + seq, seq, "", enc)


def _chat(author: Member, seq: int, enc: bytes) -> m.Chat:
    msg = _msg(author, seq, enc)
    return m.Chat(body=msg.raw_body, sig=msg.sig)


def test_a_presence_record_that_drops_the_room_counts_as_leaving(
    members: dict[str, Member],
) -> None:
    """A member we have no connection to leaves: its record (passed on by others) drops
    the room; the next message rotates. A record that never named the room changes nothing."""
    a, b = members["a"], members["b"]
    _seq, enc = b.write("x")
    b.keys.presence(WIRE, MALLORY.peer_id, False)  # never a member: no rotation
    b.keys.presence(WIRE, a.id, True)
    assert sid_of(b.write("y")[1]) == sid_of(enc)
    b.keys.presence(WIRE, a.id, False)
    assert sid_of(b.write("z")[1]) != sid_of(enc)


def _junk(author: Member, seq: int) -> tuple[m.Chat, ChatMessage]:
    """author's signed message under a made-up session id (nobody holds its key)."""
    enc = msgspec.msgpack.encode([group.Outbound.create().session_id, b"\x03junk" * 5])
    return _chat(author, seq, enc), _msg(author, seq, enc)


def test_our_key_requests_are_bounded_per_member_and_in_all(
    members: dict[str, Member], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 1: junk session ids must not make us spend a member's answer budget (then our
    genuine requests are ignored) nor make us an amplifier; a message whose request was not
    sent has not started its give-up time."""
    a, b = members["a"], members["b"]
    a.out.clear()
    assert limits.MEGOLM_RKQ_OUT_PER_PEER < limits.MEGOLM_RKQ_PER_WINDOW
    for seq in range(1, limits.MEGOLM_RKQ_OUT_PER_PEER + 6):
        assert a.keys.hold(_Conn(), *_junk(b, seq))
    assert len(a.frames_to(b)) == limits.MEGOLM_RKQ_OUT_PER_PEER
    # The last ones were not asked for: their wait has not begun, they are not given up.
    monkeypatch.setattr(limits, "MEGOLM_GIVE_UP_S", 0.0)
    last = limits.MEGOLM_RKQ_OUT_PER_PEER + 5
    chat, msg = _junk(b, last)
    key = (WIRE, b.id, group.envelope(msg.body.enc)[0])
    assert a.keys.hold(_Conn(), chat, msg)
    assert key not in a.keys._first_asked
    clock.now += limits.MEGOLM_RKQ_WINDOW_S
    a.keys.hold(_Conn(), *_junk(b, 99))
    assert len(a.frames_to(b)) >= 1  # a new window: asking again
    # In all: at most MEGOLM_RKQ_OUT_PER_WINDOW per window, whoever is asked.
    clock.now += limits.MEGOLM_RKQ_WINDOW_S
    monkeypatch.setattr(limits, "MEGOLM_RKQ_OUT_PER_WINDOW", 3)
    for seq in range(200, 210):
        a.keys.hold(_Conn(), *_junk(members["c"] if seq % 2 else b, seq))
    assert len([to for to, _ in a.out]) == 3

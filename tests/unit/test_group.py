"""crypto/group.py: the Megolm wrapper, the private-room message format and the rotation rules."""

from __future__ import annotations

import msgspec
import pytest
import vodozemac

from chinwag import limits
from chinwag.crypto import group
from chinwag.crypto.box import BadCiphertext

ROOM = "p." + "a" * 24
ALICE = "A" * 52
BOB = "B" * 52
PKEY = group.pickle_key(b"s" * 32)


def test_pickle_key_is_derived_from_the_seed_and_differs_per_seed() -> None:
    assert len(PKEY) == 32
    assert group.pickle_key(b"s" * 32) == PKEY
    assert group.pickle_key(b"t" * 32) != PKEY
    assert PKEY != b"s" * 32


def test_a_member_reads_what_the_author_seals() -> None:
    out = group.Outbound.create()
    inbound = group.Inbound.from_key(out.session_key)
    enc = out.seal(ROOM, ALICE, 1, "hello")
    sid, _msg = group.envelope(enc)
    assert sid == out.session_id == inbound.session_id
    assert inbound.open(enc, ROOM, ALICE, 1) == ("hello", 0)
    # A second read of the same message (history sync pushes it again) still works.
    assert inbound.open(enc, ROOM, ALICE, 1) == ("hello", 0)
    assert out.message_index == 1


def test_a_message_moved_to_another_seq_author_or_room_is_refused() -> None:
    out = group.Outbound.create()
    inbound = group.Inbound.from_key(out.session_key)
    enc = out.seal(ROOM, ALICE, 1, "hello")
    for room, author, seq in ((ROOM, ALICE, 2), (ROOM, BOB, 1), ("p." + "b" * 24, ALICE, 1)):
        with pytest.raises(group.BadGroupMessage):
            inbound.open(enc, room, author, seq)


def test_a_tampered_or_foreign_message_is_refused() -> None:
    out = group.Outbound.create()
    inbound = group.Inbound.from_key(out.session_key)
    enc = bytearray(out.seal(ROOM, ALICE, 1, "hello"))
    enc[-3] ^= 1  # inside the Megolm signature
    with pytest.raises(BadCiphertext):
        inbound.open(bytes(enc), ROOM, ALICE, 1)
    other = group.Outbound.create()
    with pytest.raises(group.UnknownSession):
        inbound.open(other.seal(ROOM, ALICE, 1, "x"), ROOM, ALICE, 1)
    for junk in (b"", b"\x92\xa1x\xc4\x00", b"\xff" * 40):
        with pytest.raises(BadCiphertext):
            inbound.open(junk, ROOM, ALICE, 1)


def test_a_key_shared_later_does_not_read_earlier_messages_but_an_export_does() -> None:
    out = group.Outbound.create()
    early = out.seal(ROOM, ALICE, 1, "early")
    late_key = out.session_key  # at index 1 now
    late = out.seal(ROOM, ALICE, 2, "late")
    inbound = group.Inbound.from_key(late_key)
    assert inbound.first_known_index == 1
    assert inbound.open(late, ROOM, ALICE, 2) == ("late", 1)
    with pytest.raises(group.UnknownIndex):
        inbound.open(early, ROOM, ALICE, 1)
    # An export from a session that knows index 0 reads everything.
    full = group.Inbound.from_key(late_key)
    assert full.export() is not None
    exported = group.Inbound.from_export(full.export())
    assert exported.session_id == out.session_id
    assert exported.open(late, ROOM, ALICE, 2) == ("late", 1)


def test_the_key_of_a_new_session_opens_nothing_of_the_old_one() -> None:
    """Rotation: a member who left holds the old session; the new one's messages stay closed."""
    old = group.Outbound.create()
    left_member = group.Inbound.from_key(old.session_key)
    new = group.Outbound.create()
    enc = new.seal(ROOM, ALICE, 5, "after the leave")
    with pytest.raises(group.UnknownSession):
        left_member.open(enc, ROOM, ALICE, 5)
    # Even forcing the session id of the old one does not help: the ratchet differs.
    _sid, raw = group.envelope(enc)
    forged = msgspec.msgpack.encode([old.session_id, raw])
    with pytest.raises(BadCiphertext):
        left_member.open(forged, ROOM, ALICE, 5)


def test_pickles_round_trip_and_need_the_key() -> None:
    out = group.Outbound.create()
    inbound = group.Inbound.from_key(out.session_key)
    enc = out.seal(ROOM, ALICE, 1, "hi")
    out2 = group.Outbound.from_pickle(out.pickle(PKEY), PKEY)
    assert out2.session_id == out.session_id and out2.message_index == 1
    in2 = group.Inbound.from_pickle(inbound.pickle(PKEY), PKEY)
    assert in2.open(enc, ROOM, ALICE, 1) == ("hi", 0)
    with pytest.raises(group.GroupError):
        group.Inbound.from_pickle(inbound.pickle(PKEY), group.pickle_key(b"x" * 32))
    with pytest.raises(group.GroupError):
        group.Outbound.from_pickle("garbage", PKEY)


def test_bad_keys_are_refused() -> None:
    for bad in ("", "not base64!", "AAAA"):
        with pytest.raises(group.GroupError):
            group.Inbound.from_key(bad)
        with pytest.raises(group.GroupError):
            group.Inbound.from_export(bad)


def test_the_session_key_is_vodozemacs() -> None:
    """Checked against the library itself: its own inbound session reads our seal."""
    out = group.Outbound.create()
    theirs = vodozemac.InboundGroupSession(vodozemac.SessionKey(out.session_key))
    _sid, raw = group.envelope(out.seal(ROOM, ALICE, 1, "x"))
    plain = theirs.decrypt(vodozemac.MegolmMessage.from_bytes(raw)).plaintext
    assert msgspec.msgpack.decode(plain) == [ROOM, ALICE, 1, "x"]


def test_a_sealed_room_key_opens_only_with_the_same_passphrase_key() -> None:
    exported = group.Inbound.from_key(group.Outbound.create().session_key).export()
    sealed = group.seal_key(PKEY, exported)
    assert exported.encode() not in sealed
    assert group.open_key(PKEY, sealed) == exported
    with pytest.raises(group.GroupError):
        group.open_key(bytes(32), sealed)
    with pytest.raises(group.GroupError):
        group.open_key(PKEY, sealed[:-1])


# --- rotation rules -------------------------------------------------------------------


def test_rotation_is_due_after_n_messages_after_some_time_and_after_a_leave() -> None:
    state = group.Rotation(created=1000.0, sent=0)
    assert group.rotation_due(state, 1000.0, left=False) is None
    full = group.Rotation(1000.0, limits.MEGOLM_ROTATE_MSGS)
    assert group.rotation_due(full, 1000.0, left=False) == "count"
    assert group.rotation_due(state, 1000.0 + limits.MEGOLM_ROTATE_S, left=False) == "age"
    assert group.rotation_due(state, 1001.0, left=True) == "left"
    # A clock that jumped back does not keep a session for ever either.
    assert group.rotation_due(state, 1000.0 - limits.MEGOLM_ROTATE_S - 1, left=False) == "age"


def test_inbound_sessions_expire_after_the_window() -> None:
    assert not group.inbound_expired(1000.0, 1000.0 + limits.MEGOLM_KEEP_INBOUND_S - 1)
    assert group.inbound_expired(1000.0, 1000.0 + limits.MEGOLM_KEEP_INBOUND_S)


def test_the_longest_text_fits_the_chat_bodys_enc_bound() -> None:
    out = group.Outbound.create()
    author = "a" * 51 + "q"
    text = "é" * (limits.MAX_TEXT_BYTES // 2)  # MAX_TEXT_BYTES of UTF-8
    enc = out.seal("p." + "f" * 24, author, 2**63 - 1, text)
    assert len(enc) <= limits.MAX_ENC_BYTES

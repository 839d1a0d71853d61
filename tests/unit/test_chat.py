"""protocol/chat.py and protocol/names.py: signed messages, ids, dedup, and name rules."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.errors import ChinwagError, RemoteProtocolError, UsageError
from chinwag.protocol import messages as m
from chinwag.protocol.chat import SeenSet, make_message, message_id, open_message
from chinwag.protocol.names import (
    DEFAULT_ROOM,
    is_valid_name,
    validate_nick,
    validate_room,
    validate_text,
)

ALICE = Identity.from_seed(b"a" * 32)
MALLORY = Identity.from_seed(b"m" * 32)
TS = 1_700_000_000_000


def body_bytes(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "room": "general",
        "author": ALICE.public,
        "nick": "alice",
        "ts": TS,
        "seq": 1,
        "text": "hello",
        "enc": b"",
    }
    fields.update(changes)
    return msgspec.msgpack.encode(list(fields.values()))


# --- messages -----------------------------------------------------------------


def test_make_and_open_round_trip() -> None:
    msg = make_message(ALICE, "general", "alice", TS, 7, "hello world")
    opened = open_message(msg.raw_body, msg.sig, check_signature=True)
    assert opened == msg
    assert opened.body == m.ChatBody("general", ALICE.public, "alice", TS, 7, "hello world")
    assert opened.author_id == ALICE.peer_id


def test_body_is_the_documented_array() -> None:
    msg = make_message(ALICE, "general", "alice", TS, 1, "hello")
    assert msg.raw_body == body_bytes()


def test_id_is_derived_from_the_signed_body_and_stable() -> None:
    one = make_message(ALICE, "general", "alice", TS, 1, "hello")
    two = make_message(ALICE, "general", "alice", TS, 1, "hello")
    assert one.id == two.id == message_id(one.raw_body)
    assert one.id == hashlib.sha256(one.raw_body).hexdigest()[:32]
    assert len(one.id) == 32
    assert one.sig == two.sig  # Ed25519 signatures are deterministic
    assert open_message(one.raw_body, one.sig, check_signature=True).id == one.id


@pytest.mark.parametrize(
    "args",
    [
        ("general", "alice", TS, 1, "hello!"),
        ("general", "alice", TS, 2, "hello"),
        ("general", "alice", TS + 1, 1, "hello"),
        ("other", "alice", TS, 1, "hello"),
        ("general", "alicia", TS, 1, "hello"),
    ],
)
def test_any_change_changes_the_id(args: tuple[str, str, int, int, str]) -> None:
    base = make_message(ALICE, "general", "alice", TS, 1, "hello")
    assert make_message(ALICE, *args).id != base.id
    assert make_message(MALLORY, "general", "alice", TS, 1, "hello").id != base.id


def test_signature_by_someone_else_is_bad_signature() -> None:
    msg = make_message(ALICE, "general", "alice", TS, 1, "hello")
    forged_sig = MALLORY.sign(m.CHAT_CONTEXT + msg.raw_body)
    with pytest.raises(RemoteProtocolError) as info:
        open_message(msg.raw_body, forged_sig, check_signature=True)
    assert info.value.code == "bad_signature"
    # A direct message from its author is authenticated by the channel instead.
    assert open_message(msg.raw_body, forged_sig, check_signature=False).id == msg.id


def test_altered_text_fails_the_signature() -> None:
    msg = make_message(ALICE, "general", "alice", TS, 1, "pay bob 10")
    altered = body_bytes(text="pay bob 1000")
    with pytest.raises(RemoteProtocolError) as info:
        open_message(altered, msg.sig, check_signature=True)
    assert info.value.code == "bad_signature"


def test_signature_without_the_chat_context_does_not_verify() -> None:
    raw = body_bytes()
    with pytest.raises(RemoteProtocolError, match="signature"):
        open_message(raw, ALICE.sign(raw), check_signature=True)


def test_zeroed_signature_is_bad_signature() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        open_message(body_bytes(), bytes(64), check_signature=True)
    assert info.value.code == "bad_signature"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "malformed_frame"),
        (b"\xc1", "malformed_frame"),
        (msgspec.msgpack.encode({"room": "general"}), "malformed_frame"),
        (body_bytes(nick="bad nick"), "malformed_frame"),
        (body_bytes(nick=""), "malformed_frame"),
        (body_bytes(room="General"), "malformed_frame"),  # not canonical
        (body_bytes(room="#general"), "malformed_frame"),
        (body_bytes(text=""), "malformed_frame"),
        (body_bytes(author=b"x" * 31), "malformed_frame"),
        (body_bytes(seq=-1), "malformed_frame"),
        (body_bytes(text="é" * 2049), "too_large"),  # 2049 chars, 4098 bytes
        (body_bytes(text="x" * (limits.MAX_TEXT_BYTES + 1)), "malformed_frame"),
        (body_bytes() + b"\x00", "malformed_frame"),  # trailing garbage
        (body_bytes(text="", enc=b"x" * (limits.MAX_ENC_BYTES + 1)), "malformed_frame"),
    ],
)
def test_malformed_bodies_are_refused_with_a_code(raw: bytes, code: str) -> None:
    for check in (True, False):
        with pytest.raises(RemoteProtocolError) as info:
            open_message(raw, bytes(64), check_signature=check)
        assert info.value.code == code


def test_every_truncation_of_a_body_is_refused() -> None:
    msg = make_message(ALICE, "general", "alice", TS, 1, "hello")
    for i in range(len(msg.raw_body)):
        with pytest.raises(RemoteProtocolError):
            open_message(msg.raw_body[:i], msg.sig, check_signature=False)


def test_ciphertext_of_exactly_the_limit_is_accepted() -> None:
    raw = body_bytes(text="", enc=b"x" * limits.MAX_ENC_BYTES)
    assert open_message(raw, bytes(64), check_signature=False).body.enc == b"x" * (
        limits.MAX_ENC_BYTES
    )


def test_text_of_exactly_the_limit_is_accepted() -> None:
    text = "é" * (limits.MAX_TEXT_BYTES // 2)
    msg = make_message(ALICE, "general", "alice", TS, 1, text)
    assert open_message(msg.raw_body, msg.sig, check_signature=True).body.text == text


# --- timestamps (hardening) ------------------------------------------------------


@pytest.mark.parametrize(
    "ts",
    [0, limits.MIN_TS_MS - 1, limits.MAX_TS_MS, 253_402_300_800_000, 2**63 - 1],
    ids=["epoch", "just-before-2000", "2100", "year-10000", "u64-max"],
)
def test_impossible_timestamps_are_refused_on_receipt(ts: int) -> None:
    # Byte level: a body whose ts is past year 9999 made every date rendering raise.
    body = m.decode_body(body_bytes(ts=ts))
    assert m.ts_verdict(body.ts, now_ms=TS) == m.BAD_TIMESTAMP
    # Whatever the receiver's clock says.
    assert m.ts_verdict(body.ts, now_ms=ts) == m.BAD_TIMESTAMP


@pytest.mark.parametrize("ts", [limits.MIN_TS_MS, limits.MAX_TS_MS - 1])
def test_timestamps_at_the_edges_of_the_range_are_accepted(ts: int) -> None:
    assert m.ts_verdict(m.decode_body(body_bytes(ts=ts)).ts, now_ms=ts) is None


def test_a_timestamp_more_than_a_day_ahead_is_not_accepted_yet() -> None:
    assert m.ts_verdict(TS + limits.MAX_TS_AHEAD_MS, TS) is None
    assert m.ts_verdict(TS + limits.MAX_TS_AHEAD_MS + 1, TS) == m.TS_AHEAD
    assert m.ts_verdict(TS - 10**9, TS) is None  # the past is fine


@pytest.mark.parametrize("ts", [0, 2**62, TS, 10**15])
def test_clamped_times_are_in_range_and_renderable(ts: int) -> None:
    import datetime as dt

    clamped = m.clamp_ts_s(ts / 1000)
    assert limits.MIN_TS_MS / 1000 <= clamped <= limits.MAX_TS_MS / 1000
    dt.datetime.fromtimestamp(clamped)  # does not raise


# --- dedup ----------------------------------------------------------------------


def test_seen_set_reports_new_ids_once() -> None:
    seen = SeenSet(capacity=10)
    assert seen.add("a") is True
    assert seen.add("a") is False
    assert "a" in seen and "b" not in seen
    assert len(seen) == 1


def test_seen_set_bound_evicts_oldest_first() -> None:
    seen = SeenSet(capacity=3)
    for x in "abcd":
        assert seen.add(x)
    assert len(seen) == 3
    assert "a" not in seen
    assert all(x in seen for x in "bcd")
    assert seen.add("a") is True  # forgotten, so new again; now "b" goes
    assert "b" not in seen and len(seen) == 3


def test_seen_set_default_capacity_is_the_named_limit() -> None:
    seen = SeenSet()
    for i in range(limits.SEEN_IDS + 5):
        seen.add(str(i))
    assert len(seen) == limits.SEEN_IDS
    assert "4" not in seen and "5" in seen


# --- names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "nick", ["alice", "a", "x" * limits.MAX_NICK_CHARS, "zoë", "a.b-c_d", "42"]
)
def test_valid_nicks(nick: str) -> None:
    assert validate_nick(nick) == nick


@pytest.mark.parametrize(
    "nick",
    [
        "",
        "x" * (limits.MAX_NICK_CHARS + 1),
        "a b",
        "a\x00",
        "a\n",
        "\tb",
        "a\x1b[31m",  # terminal escape
        "evil\u202e",  # right-to-left override
        "a\u200bb",  # zero-width space
        "a\x7f",
        "<b>",
        "a/b",
    ],
)
def test_invalid_nicks_are_refused(nick: str) -> None:
    with pytest.raises(UsageError):
        validate_nick(nick)


def test_usage_error_is_a_chinwag_error() -> None:
    assert issubclass(UsageError, ChinwagError)


@pytest.mark.parametrize(
    ("room", "canonical"),
    [
        ("general", "general"),
        ("General", "general"),
        ("ROOM-1.x_y", "room-1.x_y"),
        ("r" * limits.MAX_ROOM_CHARS, "r" * limits.MAX_ROOM_CHARS),
    ],
)
def test_valid_rooms_are_lowercased(room: str, canonical: str) -> None:
    assert validate_room(room) == canonical


@pytest.mark.parametrize(
    "room", ["", "r" * (limits.MAX_ROOM_CHARS + 1), "#general", "a room", "a\x00", "a\nb"]
)
def test_invalid_rooms_are_refused(room: str) -> None:
    with pytest.raises(UsageError):
        validate_room(room)


def test_default_room_is_valid_and_canonical() -> None:
    assert validate_room(DEFAULT_ROOM) == DEFAULT_ROOM


@pytest.mark.parametrize("room", ["İ" * limits.MAX_ROOM_CHARS, "İstanbul", "ǅ", "K"])
def test_a_validated_room_is_one_peers_accept(room: str) -> None:
    """Lowercasing can change length and characters ('İ' -> 'i' + U+0307): check after it."""
    try:
        canonical = validate_room(room)
    except UsageError:
        return  # refusing is fine; returning a name peers refuse is not
    assert len(canonical) <= limits.MAX_ROOM_CHARS
    assert is_valid_name(canonical)
    msg = make_message(ALICE, canonical, "alice", TS, 1, "hello")
    open_message(msg.raw_body, msg.sig, check_signature=True)


@pytest.mark.parametrize("text", ["hi", " padded ", "multi\nline", "x" * limits.MAX_TEXT_BYTES])
def test_valid_texts(text: str) -> None:
    assert validate_text(text) == text


def test_text_limit_counts_utf8_bytes() -> None:
    fits = "é" * (limits.MAX_TEXT_BYTES // 2)
    assert validate_text(fits) == fits
    with pytest.raises(UsageError, match="too long"):
        validate_text(fits + "x")
    with pytest.raises(UsageError, match="too long"):
        validate_text("x" * (limits.MAX_TEXT_BYTES + 1))


@pytest.mark.parametrize("text", ["", " ", "\n\t "])
def test_empty_texts_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="empty"):
        validate_text(text)


def test_text_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(UsageError, match="Unicode"):
        validate_text("bad \ud800 text")


def test_validated_inputs_make_messages_peers_accept() -> None:
    msg = make_message(
        ALICE,
        validate_room("Lobby"),
        validate_nick("alice"),
        TS,
        1,
        validate_text("é" * (limits.MAX_TEXT_BYTES // 2)),
    )
    assert open_message(msg.raw_body, msg.sig, check_signature=True).body.room == "lobby"

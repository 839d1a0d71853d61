"""protocol/session.py: two sessions back to back in memory, exact event sequences.

No sockets, no sleeps: bytes are moved by `Pair.shuttle()` and time is a float.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator

import nacl.bindings
import pytest
from unit_support import (
    Chunker,
    Pair,
    byte_by_byte,
    chat_frame,
    complete,
    deliver,
    drain,
    encode_raw,
    frame,
    make_info,
    pair,
    summary,
    whole,
)

from chinwag import limits
from chinwag.crypto.noise import NoiseFailure, NoiseXX, generate_static_private
from chinwag.errors import LocalProtocolError
from chinwag.protocol import messages as m
from chinwag.protocol.session import LocalInfo, Session, State

ALICE = make_info("alice", 4001, ("chat", "files"))
BOB = make_info("bob", 4002)
CAROL = make_info("carol", 4003)


@pytest.fixture(autouse=True)
def _quiet_fixed_ephemeral_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One of ephemeral keypairs is already set")
        yield


def opened(now: float = 0.0) -> Pair:
    p = pair(ALICE, BOB, now)
    assert p.take() == ([complete(BOB)], [complete(ALICE)])
    return p


def closed(code: str, by_peer: bool) -> tuple[object, ...]:
    return ("closed", code, by_peer)


# --- handshake ----------------------------------------------------------------


def test_handshake_completes_on_both_sides() -> None:
    p = pair(ALICE, BOB)
    a, b = p.take()
    assert a == [("complete", BOB.identity.peer_id, "bob", 4002, ())]
    assert b == [("complete", ALICE.identity.peer_id, "alice", 4001, ("chat", "files"))]
    assert p.a.state is State.OPEN and p.b.state is State.OPEN
    assert p.a.peer_id == BOB.identity.peer_id and p.b.peer_id == ALICE.identity.peer_id
    assert p.a.peer_nick == "bob" and p.b.peer_port == 4001


def test_handshake_is_three_messages() -> None:
    a = Session(ALICE, initiator=True, now=0.0)
    b = Session(BOB, initiator=False, now=0.0)
    assert b.data_to_send() == b""  # the responder waits
    msg1 = a.data_to_send()
    assert a.data_to_send() == b""  # taken once
    b.receive_data(msg1, 0.0)
    assert drain(b) == [] and b.state is State.HANDSHAKE
    msg2 = b.data_to_send()
    a.receive_data(msg2, 0.0)
    assert summary(drain(a)) == [complete(BOB)]  # the initiator opens after message 3...
    msg3 = a.data_to_send()
    assert drain(b) == [] and b.state is State.HANDSHAKE
    b.receive_data(msg3, 0.0)
    assert summary(drain(b)) == [complete(ALICE)]  # ...the responder on receiving it
    for wire in (msg1, msg2, msg3):
        assert int.from_bytes(wire[:2], "big") == len(wire) - 2  # one frame each


def test_handshake_hash_is_shared_and_unique_per_connection() -> None:
    a = Session(ALICE, initiator=True, now=0.0)
    assert a.handshake_hash == b""  # not before the handshake
    p, q = pair(ALICE, BOB), pair(ALICE, BOB)
    assert len(p.a.handshake_hash) == 32
    assert p.a.handshake_hash == p.b.handshake_hash
    assert q.a.handshake_hash == q.b.handshake_hash != p.a.handshake_hash


def test_expected_peer_id_that_matches_completes() -> None:
    p = pair(ALICE, BOB, expected_peer_id=BOB.identity.peer_id)
    assert p.take() == ([complete(BOB)], [complete(ALICE)])


def test_expected_peer_id_mismatch_is_unexpected_peer() -> None:
    p = pair(ALICE, BOB, expected_peer_id=CAROL.identity.peer_id)
    a, b = p.take()
    assert a == [closed("unexpected_peer", False)]
    assert b == []  # message 3 was never sent
    assert p.b.state is State.HANDSHAKE


def test_connecting_to_oneself_is_refused() -> None:
    twin = make_info("alice", 4001, identity=ALICE.identity)  # same identity, other channel key
    p = pair(ALICE, twin)
    a, b = p.take()
    assert a == [closed("self", False)]
    assert b == []


@pytest.mark.parametrize("responder_lies", [True, False])
def test_binding_signature_from_another_identity_is_bad_identity(responder_lies: bool) -> None:
    # The liar announces its own identity with a signature made by someone else.
    liar = dataclasses.replace(BOB, binding_sig=CAROL.binding_sig)
    p = pair(ALICE, liar) if responder_lies else pair(liar, ALICE)
    a, b = p.take()
    checker, liar_events = (a, b) if responder_lies else (b, a)
    assert checker == [closed("bad_identity", False)]
    assert not any(e[0] == "complete" for e in checker)
    if responder_lies:
        assert liar_events == []


@pytest.mark.parametrize("responder_lies", [True, False])
def test_replayed_binding_with_another_channel_key_is_bad_identity(responder_lies: bool) -> None:
    # The liar claims BOB's identity and replays BOB's binding signature over
    # its own Noise static key: it does not hold BOB's key, so it must fail.
    liar = LocalInfo(
        identity=BOB.identity,  # only its public half goes on the wire
        noise_static=generate_static_private(),
        nick="bob",
        listen_port=4002,
        binding_sig=BOB.binding_sig,
    )
    p = pair(ALICE, liar) if responder_lies else pair(liar, ALICE)
    a, b = p.take()
    checker = a if responder_lies else b
    assert checker == [closed("bad_identity", False)]


def test_claiming_another_identity_with_own_signature_is_bad_identity() -> None:
    liar = dataclasses.replace(BOB, identity=CAROL.identity)  # says "I am carol", signed by bob
    p = pair(ALICE, liar)
    assert p.take()[0] == [closed("bad_identity", False)]


class _CustomHello(LocalInfo):
    """A LocalInfo whose hello payload the test chooses."""

    payload: bytes = b""

    def hello(self) -> bytes:
        return self.payload


def custom_hello(base: LocalInfo, payload: bytes) -> LocalInfo:
    info = _CustomHello(
        base.identity,
        base.noise_static,
        base.nick,
        base.listen_port,
        base.caps,
        base.binding_sig,
    )
    object.__setattr__(info, "payload", payload)
    return info


def hello_bytes(base: LocalInfo, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "identity": base.identity.public,
        "sig": base.binding_sig,
        "nick": base.nick,
        "port": base.listen_port,
        "v": m.PROTOCOL_VERSION,
        "caps": list(base.caps),
    }
    fields.update(changes)
    return encode_raw(fields)


@pytest.mark.parametrize(
    ("payload_changes", "code"),
    [
        ({"v": 2}, "version_mismatch"),
        ({"nick": "bad nick"}, "malformed_handshake"),
        ({"nick": "x" * 33}, "malformed_handshake"),
        ({"caps": ["c"] * 17}, "malformed_handshake"),
        ({"port": 70000}, "malformed_handshake"),
        ({"sig": b"\x00" * 63}, "malformed_handshake"),
        ({"identity": "not bytes"}, "malformed_handshake"),
    ],
)
@pytest.mark.parametrize("in_message", [2, 3])
def test_bad_hello_fields_close_the_handshake(
    payload_changes: dict[str, object], code: str, in_message: int
) -> None:
    bad = custom_hello(BOB, hello_bytes(BOB, **payload_changes))
    if in_message == 2:
        p = pair(ALICE, bad)
        checker = p.take()[0]
    else:
        p = pair(bad, ALICE)
        checker = p.take()[1]
    assert checker == [closed(code, False)]


@pytest.mark.parametrize(
    "payload", [b"", b"\xc1", encode_raw([1, 2, 3]), encode_raw({"identity": 1})]
)
def test_malformed_hello_is_malformed_handshake(payload: bytes) -> None:
    p = pair(ALICE, custom_hello(BOB, payload))
    assert p.take()[0] == [closed("malformed_handshake", False)]


def test_oversized_hello_is_refused() -> None:
    big = hello_bytes(BOB, caps=[], pad="x" * limits.MAX_HANDSHAKE_PAYLOAD)
    p = pair(ALICE, custom_hello(BOB, big))
    assert p.take()[0] == [closed("malformed_handshake", False)]


def first_message(prelude: bytes, prologue: bytes = m.PROLOGUE) -> tuple[NoiseXX, bytes]:
    """Message 1 written by hand (so its prelude can be anything)."""
    noise = NoiseXX(True, generate_static_private(), prologue)
    return noise, frame(noise.write_handshake(prelude))


@pytest.mark.parametrize(
    ("prelude", "code"),
    [
        (encode_raw({"proto": "chinwag", "v": 2}), "version_mismatch"),
        (encode_raw({"proto": "chinwag", "v": 0}), "version_mismatch"),
        (encode_raw({"proto": "other", "v": 1}), "not_chinwag"),
        (encode_raw({"proto": "chinwag"}), "malformed_handshake"),
        (encode_raw({"proto": 1, "v": 1}), "malformed_handshake"),
        (encode_raw([1]), "malformed_handshake"),
        (b"", "malformed_handshake"),
        (b"\xc1", "malformed_handshake"),
        (b"x" * (limits.MAX_HANDSHAKE_PAYLOAD + 1), "malformed_handshake"),
    ],
)
def test_bad_prelude_is_refused_before_the_responder_says_anything(
    prelude: bytes, code: str
) -> None:
    b = Session(BOB, initiator=False, now=0.0)
    _, wire = first_message(prelude)
    b.receive_data(wire, 0.0)
    assert summary(drain(b)) == [closed(code, False)]
    assert b.data_to_send() == b""  # no hello (and so no identity) given away


def test_prelude_with_extra_fields_is_accepted() -> None:
    b = Session(BOB, initiator=False, now=0.0)
    _, wire = first_message(encode_raw({"proto": "chinwag", "v": 1, "future": True}))
    b.receive_data(wire, 0.0)
    assert drain(b) == []
    assert b.data_to_send() != b""


def test_peer_with_another_prologue_cannot_complete() -> None:
    """A version-2 peer that says v=1 in clear still fails: the prologue is in the hash."""
    b = Session(BOB, initiator=False, now=0.0)
    noise, wire = first_message(encode_raw({"proto": "chinwag", "v": 1}), b"chinwag/2")
    b.receive_data(wire, 0.0)
    msg2 = b.data_to_send()
    with pytest.raises(NoiseFailure):
        noise.read_handshake(msg2[2:])


def test_handshake_timeout() -> None:
    a = Session(ALICE, initiator=True, now=100.0)
    assert a.get_timer() == 100.0 + limits.HANDSHAKE_TIMEOUT_S
    a.handle_timer(100.0 + limits.HANDSHAKE_TIMEOUT_S - 0.001)
    assert drain(a) == []
    a.handle_timer(100.0 + limits.HANDSHAKE_TIMEOUT_S)
    assert summary(drain(a)) == [closed("handshake_timeout", True)]
    assert a.state is State.CLOSED
    assert a.get_timer() is None


def test_responder_handshake_timeout_after_message_1() -> None:
    a = Session(ALICE, initiator=True, now=0.0)
    b = Session(BOB, initiator=False, now=0.0)
    b.receive_data(a.data_to_send(), 1.0)
    b.handle_timer(limits.HANDSHAKE_TIMEOUT_S)  # measured from the connection's start
    assert summary(drain(b)) == [closed("handshake_timeout", True)]


def test_eof_during_handshake() -> None:
    b = Session(BOB, initiator=False, now=0.0)
    b.receive_data(b"", 0.0)
    assert summary(drain(b)) == [closed("eof", True)]


# --- open session ---------------------------------------------------------------


def test_chat_frame_arrives_as_frame_received() -> None:
    p = opened()
    chat = chat_frame(ALICE.identity, "hello bob")
    p.a.send_frame(chat)
    p.shuttle(1.0)
    assert p.take() == ([], [("frame", chat)])


_PEER = ALICE.identity.peer_id
_FID = bytes(range(16))


@pytest.mark.parametrize(
    "frame",
    [
        m.Vector(room="general", have={_PEER: 3}),
        m.Want(room="general", author=_PEER, lo=41, hi=43),
        m.Floor(room="general", author=_PEER, seq=9),
        m.Rooms(joined=[m.RoomAnnounce("general"), m.RoomAnnounce("p.x", b"12345678")]),
        m.FileWho(fid=_FID),
        m.FileHave(fid=_FID),
        m.FileHashesReq(fid=_FID, lo=0),
        m.FileHashes(fid=_FID, lo=0, hashes=bytes(64)),
        m.FileGet(fid=_FID, idx=1),
        m.FileNak(fid=_FID, idx=1, reason="busy"),
        m.FileEnd(fid=_FID, reason="done"),
    ],
    ids=lambda f: type(f).__name__,
)
def test_sync_rooms_and_file_frames_arrive_as_frame_received(frame: m.Frame) -> None:
    p = opened()
    p.a.send_frame(frame)
    p.shuttle(1.0)
    assert p.take() == ([], [("frame", frame)])


def test_file_data_arrives_as_frame_received() -> None:
    # Its data is a view into the decrypted frame: compare the fields.
    p = opened()
    p.a.send_frame(m.FileData(fid=_FID, idx=2, off=64, data=memoryview(b"piece")))
    p.shuttle(1.0)
    [(kind, got)] = p.take()[1]
    assert kind == "frame" and isinstance(got, m.FileData)
    assert (got.fid, got.idx, got.off, bytes(got.data)) == (_FID, 2, 64, b"piece")


def test_frames_both_ways_in_order() -> None:
    p = opened()
    sent_a = [chat_frame(ALICE.identity, f"a{i}", i + 1) for i in range(5)]
    sent_b = [chat_frame(BOB.identity, f"b{i}", i + 1) for i in range(5)]
    for fa, fb in zip(sent_a, sent_b, strict=True):
        p.a.send_frame(fa)
        p.b.send_frame(fb)
    p.shuttle(1.0)
    a, b = p.take()
    assert a == [("frame", f) for f in sent_b]
    assert b == [("frame", f) for f in sent_a]


def test_frame_fields_may_come_in_any_order() -> None:
    """Another implementation may put the tag last; the map is still the same frame."""
    p = opened()
    chat = chat_frame(ALICE.identity)
    p.a.send_encoded(encode_raw({"sig": chat.sig, "body": chat.body, "t": "chat"}))
    p.shuttle(1.0)
    assert p.take() == ([], [("frame", chat)])


def test_nick_change_updates_the_peer_nick() -> None:
    p = opened()
    p.a.send_frame(m.NickChange(nick="alicia"))
    p.shuttle(1.0)
    assert p.take() == ([], [("frame", m.NickChange(nick="alicia"))])
    assert p.b.peer_nick == "alicia"


@pytest.mark.parametrize("nick", ["bad nick", "x\x00", "", "x" * 33])
def test_invalid_nick_change_is_malformed(nick: str) -> None:
    p = opened()
    p.a.send_encoded(encode_raw({"t": "nick", "nick": nick}))
    p.shuttle(1.0)
    assert p.take() == ([closed("malformed_frame", True)], [closed("malformed_frame", False)])


def test_keepalive_ping_pong_sets_rtt() -> None:
    p = opened(now=0.0)
    assert p.a.get_timer() == limits.KEEPALIVE_INTERVAL_S
    p.a.handle_timer(limits.KEEPALIVE_INTERVAL_S)
    ping = p.a.data_to_send()
    assert ping  # one encrypted Ping
    p.b.receive_data(ping, 3.25)
    pong = p.b.data_to_send()
    assert pong
    p.a.receive_data(pong, 3.5)
    assert p.a.rtt == pytest.approx(0.5)
    assert p.take() == ([], [])  # keepalive is invisible to the layer above


def test_a_pong_that_answers_no_outstanding_ping_sets_no_rtt() -> None:
    p = opened(now=0.0)
    p.a.handle_timer(limits.KEEPALIVE_INTERVAL_S)  # ping 1 goes out, unanswered so far
    p.a.data_to_send()
    # A stale (or invented) pong: another n than the ping in flight.
    p.b.send_frame(m.Pong(n=7))
    p.a.receive_data(p.b.data_to_send(), 3.5)
    assert p.a.rtt is None
    p.b.send_frame(m.Pong(n=1))
    p.a.receive_data(p.b.data_to_send(), 3.75)
    assert p.a.rtt == pytest.approx(0.75)
    # Answered once: a repeat of the same pong measures nothing more.
    p.b.send_frame(m.Pong(n=1))
    p.a.receive_data(p.b.data_to_send(), 9.0)
    assert p.a.rtt == pytest.approx(0.75)


def test_no_ping_while_the_peer_is_talking() -> None:
    p = opened(now=0.0)
    p.b.send_frame(chat_frame(BOB.identity))
    p.a.receive_data(p.b.data_to_send(), 2.0)
    p.a.handle_timer(limits.KEEPALIVE_INTERVAL_S)  # only 1 s of silence
    assert p.a.data_to_send() == b""
    assert p.a.get_timer() == 2.0 + limits.KEEPALIVE_INTERVAL_S


def test_keepalive_keeps_an_idle_connection_open() -> None:
    p = opened(now=0.0)
    now = 0.0
    while now < 120.0:
        timers = [t for t in (p.a.get_timer(), p.b.get_timer()) if t is not None]
        now = min(timers)
        for s in (p.a, p.b):
            if (t := s.get_timer()) is not None and t <= now:
                s.handle_timer(now)
        p.shuttle(now)
    assert p.take() == ([], [])
    assert p.a.state is State.OPEN and p.b.state is State.OPEN
    assert p.a.rtt == 0.0  # delivered in the same instant


def test_get_timer_is_never_later_than_the_dead_peer_deadline() -> None:
    p = opened(now=0.0)
    p.a.handle_timer(limits.KEEPALIVE_INTERVAL_S)  # ping, never answered
    p.a.data_to_send()
    timer = p.a.get_timer()
    assert timer is not None and timer <= limits.DEAD_PEER_TIMEOUT_S


def test_dead_peer_timeout() -> None:
    p = opened(now=0.0)
    now = 0.0
    # b never answers: drive a's timer only; a's pings go nowhere.
    for _ in range(100):  # a bounded loop: a missing timeout fails, it does not hang
        if p.a.state is not State.OPEN:
            break
        timer = p.a.get_timer()
        assert timer is not None
        now = timer
        p.a.handle_timer(now)
        p.a.data_to_send()
    assert now == limits.DEAD_PEER_TIMEOUT_S
    assert summary(drain(p.a)) == [closed("timeout", True)]


def test_input_postpones_the_dead_peer_timeout() -> None:
    p = opened(now=0.0)
    p.b.send_frame(chat_frame(BOB.identity))
    p.a.receive_data(p.b.data_to_send(), 8.0)
    p.a.handle_timer(limits.DEAD_PEER_TIMEOUT_S)
    assert p.a.state is State.OPEN
    p.a.handle_timer(8.0 + limits.DEAD_PEER_TIMEOUT_S)
    assert summary(drain(p.a))[-1] == closed("timeout", True)


def test_close_says_goodbye() -> None:
    p = opened()
    p.a.close()
    assert summary(drain(p.a)) == [closed("quit", False)]
    p.shuttle(1.0)
    assert p.take() == ([], [closed("quit", True)])
    assert p.a.closed and p.b.closed


def test_close_reason_reaches_the_peer() -> None:
    p = opened()
    p.b.close("duplicate")
    p.shuttle(1.0)
    assert p.take() == ([closed("duplicate", True)], [closed("duplicate", False)])


@pytest.mark.parametrize("reason", ["", "two words", "\x1b[31mred", "quit\n"])
def test_goodbye_reason_that_is_not_a_plain_code_is_bye(reason: str) -> None:
    p = opened()
    p.a.send_frame(m.Bye(reason=reason))
    p.shuttle(1.0)
    assert p.take()[1] == [closed("bye", True)]


def test_a_long_close_reason_is_cut_so_the_peer_still_accepts_the_goodbye() -> None:
    p = opened()
    p.a.close("x" * 100)
    p.shuttle(1.0)
    # Bye.reason is at most 64 characters on the wire: 100 would be a malformed frame.
    assert p.take() == ([closed("x" * 64, False)], [closed("x" * 64, True)])


def test_close_during_handshake_sends_nothing() -> None:
    a = Session(ALICE, initiator=True, now=0.0)
    a.data_to_send()
    a.close()
    assert summary(drain(a)) == [closed("quit", False)]
    assert a.data_to_send() == b""


def test_eof_in_open_session() -> None:
    p = opened()
    p.a.receive_data(b"", 1.0)
    assert summary(drain(p.a)) == [closed("eof", True)]


def test_closed_session_ignores_everything() -> None:
    p = opened()
    p.a.close()
    p.shuttle(1.0)
    p.take()
    p.b.receive_data(b"\x00\x05hello", 2.0)
    p.b.receive_data(b"", 2.0)
    p.b.handle_timer(1000.0)
    p.b.close()
    assert drain(p.b) == []
    assert p.b.get_timer() is None
    with pytest.raises(LocalProtocolError):
        p.b.send_frame(m.Ping(n=1))
    with pytest.raises(LocalProtocolError):
        p.b.send_encoded(b"x")


def test_a_frame_too_large_for_the_length_prefix_is_a_local_error() -> None:
    p = opened()
    # The body fits MAX_FRAME, the encoded frame around it does not.
    too_big = m.Chat(body=b"x" * limits.MAX_FRAME, sig=bytes(64))
    with pytest.raises(LocalProtocolError):
        p.a.send_frame(too_big)
    assert p.a.data_to_send() == b""


def test_a_refused_oversized_frame_leaves_the_session_usable() -> None:
    p = opened()
    with pytest.raises(LocalProtocolError):
        p.a.send_frame(m.Chat(body=b"x" * limits.MAX_FRAME, sig=bytes(64)))
    p.a.send_frame(m.NickChange(nick="alice2"))
    p.shuttle(1.0)
    assert p.take()[1] == [("frame", m.NickChange(nick="alice2"))]


def test_sending_before_the_handshake_is_a_local_error() -> None:
    a = Session(ALICE, initiator=True, now=0.0)
    with pytest.raises(LocalProtocolError):
        a.send_frame(m.Ping(n=1))
    with pytest.raises(LocalProtocolError):
        a.send_encoded(b"x")


def test_linger_accepts_frames_until_the_deadline() -> None:
    p = opened()
    p.a.close("duplicate", linger_until=5.0)
    assert p.a.state is State.LINGER
    assert drain(p.a) == []
    late = chat_frame(BOB.identity, "sent before bob heard the goodbye")
    p.b.send_frame(late)  # in flight while a's goodbye travels
    p.shuttle(1.0)
    assert p.take() == ([("frame", late)], [closed("duplicate", True)])
    assert p.a.get_timer() == 5.0
    p.a.handle_timer(5.0)
    assert summary(drain(p.a)) == [closed("duplicate", False)]


def test_linger_does_not_answer_pings() -> None:
    p = opened()
    p.b.send_frame(m.Ping(n=7))
    ping = p.b.data_to_send()
    p.a.close("duplicate", linger_until=5.0)
    p.a.data_to_send()
    p.a.receive_data(ping, 1.0)
    assert p.a.data_to_send() == b""


def test_linger_ends_at_eof() -> None:
    p = opened()
    p.a.close("duplicate", linger_until=5.0)
    p.a.receive_data(b"", 1.0)
    assert summary(drain(p.a)) == [closed("eof", True)]


# --- hostile input in an open session -----------------------------------------


def test_tampered_ciphertext_is_decrypt_failed() -> None:
    p = opened()
    p.a.send_frame(chat_frame(ALICE.identity))
    wire = bytearray(p.a.data_to_send())
    wire[10] ^= 0x01  # inside the ciphertext, not the length prefix
    p.b.receive_data(bytes(wire), 1.0)
    p.b_events += drain(p.b)
    p.shuttle(1.0)  # b's goodbye (with the error code) reaches a
    assert p.take() == ([closed("decrypt_failed", True)], [closed("decrypt_failed", False)])


def test_replayed_frame_is_decrypt_failed() -> None:
    p = opened()
    chat = chat_frame(ALICE.identity)
    p.a.send_frame(chat)
    wire = p.a.data_to_send()
    p.b.receive_data(wire, 1.0)
    p.b.receive_data(wire, 1.0)
    assert summary(drain(p.b)) == [("frame", chat), closed("decrypt_failed", False)]


def test_unknown_frame_type_is_ignored_and_the_session_stays_open() -> None:
    p = opened()
    p.a.send_encoded(encode_raw({"t": "future", "x": 1}))
    chat = chat_frame(ALICE.identity)
    p.a.send_frame(chat)
    p.shuttle(1.0)
    assert p.take() == ([], [("unknown", "future"), ("frame", chat)])
    assert p.b.state is State.OPEN


def test_an_admit_frame_goes_up_and_both_sides_share_the_channel_binding() -> None:
    """`admit` (docs/protocol.md section 28) is handed up, and the handshake hash it binds
    to is the same on both ends of one connection."""
    p = opened()
    frame = m.Admit(room="p.abc", step=1, data=b"S" + bytes(32))
    p.a.send_frame(frame)
    p.shuttle(1.0)
    assert p.take() == ([], [("frame", frame)])
    assert p.a.handshake_hash == p.b.handshake_hash and len(p.a.handshake_hash) >= 32
    assert opened().a.handshake_hash != p.a.handshake_hash


def test_an_unknown_tag_is_reported_cut_to_32_characters() -> None:
    p = opened()
    p.a.send_encoded(encode_raw({"t": "y" * 1000}))
    p.shuttle(1.0)
    assert p.take() == ([], [("unknown", "y" * 32)])


def test_unknown_fields_of_a_known_frame_are_ignored() -> None:
    """How fields are added compatibly (docs/protocol.md, section 3)."""
    p = opened()
    chat = chat_frame(ALICE.identity)
    p.a.send_encoded(encode_raw({"t": "chat", "body": chat.body, "sig": chat.sig, "new": [1]}))
    p.a.send_encoded(encode_raw({"t": "nick", "nick": "al", "colour": "red"}))
    p.shuttle(1.0)
    assert p.take() == ([], [("frame", chat), ("frame", m.NickChange(nick="al"))])


@pytest.mark.parametrize(
    "plaintext",
    [
        encode_raw({"t": "chat", "body": 5}),
        encode_raw({"t": "chat", "body": b"x"}),  # no sig
        encode_raw({"t": "ping", "n": -1}),
        encode_raw({"t": "pong", "n": 2**64 - 1}),
        encode_raw({"t": "bye", "reason": "x" * 65}),
        encode_raw({"t": 5}),
        encode_raw({"x": 1}),
        encode_raw([1, 2]),
        encode_raw(7),
        b"",
        b"\xc1",
        encode_raw({"t": "chat", "body": b"x", "sig": bytes(64)}) + b"trailing",
        # Known types are checked, also the newer ones (`rooms`): never ignored as unknown.
        encode_raw({"t": "rooms", "joined": 5}),
        encode_raw({"t": "rooms", "joined": [["dev", b"x" * 17]]}),  # kcv over 16 bytes
        encode_raw({"t": "rooms", "joined": [["r", b""]] * (limits.MAX_ROOMS + 1)}),
        # `admit` (section 28): step 1 or 2 only, data bounded, room a valid name.
        encode_raw({"t": "admit", "room": "p.x", "step": 3, "data": b"x"}),
        encode_raw({"t": "admit", "room": "p.x", "step": 0, "data": b"x"}),
        encode_raw(
            {
                "t": "admit",
                "room": "p.x",
                "step": 1,
                "data": b"x" * (limits.ADMIT_MAX_DATA_BYTES + 1),
            }
        ),
        encode_raw({"t": "admit", "room": "", "step": 1, "data": b"x"}),
        encode_raw({"t": "admit", "room": "p.x", "step": 1}),
    ],
)
def test_malformed_frame_closes_with_malformed_frame(plaintext: bytes) -> None:
    p = opened()
    p.a.send_encoded(plaintext)
    p.shuttle(1.0)
    assert p.take() == ([closed("malformed_frame", True)], [closed("malformed_frame", False)])


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00",  # an empty Noise message
        b"\x00\x03abc",  # too short for a tag
        frame(bytes(64)),  # the right shape, but not ours
    ],
)
def test_garbage_frame_in_an_open_session_is_decrypt_failed(garbage: bytes) -> None:
    p = opened()
    p.b.receive_data(garbage, 1.0)
    assert summary(drain(p.b)) == [closed("decrypt_failed", False)]


def test_incomplete_frame_is_buffered_not_an_error() -> None:
    p = opened()
    p.b.receive_data(b"\xff", 1.0)  # half a length prefix
    p.b.receive_data(b"\xff" + b"x" * 1000, 1.0)  # a long frame, not all here yet
    assert drain(p.b) == []
    assert p.b.state is State.OPEN


# --- every parser three ways: whole, byte by byte, trailing garbage ---------------


def scripted_conversation(
    chunker: Chunker,
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Handshake, frames both ways and a goodbye, delivered in chunker's pieces."""
    p = pair(ALICE, BOB, chunker=chunker)
    for i in range(3):
        p.a.send_frame(chat_frame(ALICE.identity, f"from a {i}", i + 1))
    p.a.send_encoded(encode_raw({"t": "future"}))
    p.a.send_frame(m.NickChange(nick="alicia"))
    p.shuttle(1.0, chunker)
    p.b.send_frame(chat_frame(BOB.identity, "from b", 1))
    p.b.close()
    p.shuttle(2.0, chunker)
    return summary(p.a_events), summary(p.b_events)


def test_byte_by_byte_delivery_gives_identical_events() -> None:
    a_whole, b_whole = scripted_conversation(whole)
    assert a_whole[0] == complete(BOB) and a_whole[-1] == closed("quit", True)
    assert b_whole[0] == complete(ALICE) and b_whole[-1] == closed("quit", False)
    assert scripted_conversation(byte_by_byte) == (a_whole, b_whole)

    def odd_chunks(data: bytes) -> list[bytes]:
        sizes = [1, 2, 3, 5, 7, 11, 13]
        out, i, k = [], 0, 0
        while i < len(data):
            out.append(data[i : i + sizes[k % len(sizes)]])
            i += sizes[k % len(sizes)]
            k += 1
        return out

    assert scripted_conversation(odd_chunks) == (a_whole, b_whole)


def test_whole_handshake_and_frames_in_one_read() -> None:
    """Message 3 and the first frames can arrive in one read; all are processed."""
    a = Session(ALICE, initiator=True, now=0.0)
    b = Session(BOB, initiator=False, now=0.0)
    b.receive_data(a.data_to_send(), 0.0)
    a.receive_data(b.data_to_send(), 0.0)
    chat = chat_frame(ALICE.identity)
    a.send_frame(chat)
    a.send_frame(m.Bye(reason="quit"))
    b.receive_data(a.data_to_send(), 0.0)  # message 3 + chat + bye at once
    assert summary(drain(b)) == [complete(ALICE), ("frame", chat), closed("quit", True)]


@pytest.mark.parametrize("chunker", [whole, byte_by_byte], ids=["whole", "byte_by_byte"])
def test_trailing_garbage_after_a_valid_frame_closes_with_a_code(chunker: Chunker) -> None:
    p = opened()
    chat = chat_frame(ALICE.identity)
    p.a.send_frame(chat)
    deliver(p.b, p.a.data_to_send() + b"\x00\x04junk", 1.0, chunker)
    assert summary(drain(p.b)) == [("frame", chat), closed("decrypt_failed", False)]


@pytest.mark.parametrize("chunker", [whole, byte_by_byte], ids=["whole", "byte_by_byte"])
def test_trailing_garbage_after_message_1_fails_the_handshake(chunker: Chunker) -> None:
    a = Session(ALICE, initiator=True, now=0.0)
    b = Session(BOB, initiator=False, now=0.0)
    deliver(b, a.data_to_send() + b"\x00\x04junk", 0.0, chunker)
    assert summary(drain(b)) == [closed("handshake_failed", False)]


@pytest.mark.parametrize("chunker", [whole, byte_by_byte], ids=["whole", "byte_by_byte"])
def test_trailing_garbage_after_message_2_fails_at_the_initiator(chunker: Chunker) -> None:
    a = Session(ALICE, initiator=True, now=0.0)
    b = Session(BOB, initiator=False, now=0.0)
    b.receive_data(a.data_to_send(), 0.0)
    deliver(a, b.data_to_send() + b"\x00\x04junk", 0.0, chunker)
    # Message 2 opens the session; the garbage is then a bad transport message.
    assert summary(drain(a)) == [complete(BOB), closed("decrypt_failed", False)]


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x00", b"\x00\x01x", b"\x00\x20" + bytes(32), frame(bytes(200))],
)
def test_garbage_instead_of_message_1_fails_the_handshake(garbage: bytes) -> None:
    b = Session(BOB, initiator=False, now=0.0)
    b.receive_data(garbage, 0.0)
    events = summary(drain(b))
    assert len(events) == 1 and events[0][0] == "closed" and events[0][2] is False
    assert events[0][1] in {"handshake_failed", "malformed_handshake"}


def test_low_order_ephemeral_key_is_a_handshake_failure_not_an_exception() -> None:
    """An all-zero X25519 ephemeral key in message 1 makes the responder's DH fail.

    The contract: anything the peer sends yields events or a Closed, never an exception.
    """
    b = Session(BOB, initiator=False, now=0.0)
    msg1 = bytes(32) + encode_raw({"proto": "chinwag", "v": 1})
    b.receive_data(frame(msg1), 0.0)
    assert summary(drain(b)) == [closed("handshake_failed", False)]


def test_closed_event_is_always_last_and_single() -> None:
    p = opened()
    p.a.send_encoded(encode_raw({"t": "chat", "body": 5}))
    p.a.send_frame(chat_frame(ALICE.identity))  # after the bad frame: never delivered
    p.shuttle(1.0)
    _, b = p.take()
    assert b == [closed("malformed_frame", False)]  # one Closed, nothing after it


# --- simultaneous open -----------------------------------------------------------


def _shuttle_until_quiet(a: Session, b: Session) -> None:
    """Move bytes both ways until neither side has anything more to say."""
    for _ in range(10):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            return
        if out_a:
            b.receive_data(out_a, 0.0)
        if out_b:
            a.receive_data(out_b, 0.0)


@pytest.mark.parametrize("b_first", [False, True])
def test_simultaneous_open_completes_with_one_initiator(b_first: bool) -> None:
    """Both ends dialled (one TCP connection from two dials): both sent message 1,
    and the handshake still completes, with exactly one side left as initiator."""
    a = Session(ALICE, initiator=True, now=0.0)
    b = Session(BOB, initiator=True, now=0.0)
    msg1_a, msg1_b = a.data_to_send(), b.data_to_send()
    if b_first:
        a.receive_data(msg1_b, 0.0)
        b.receive_data(msg1_a, 0.0)
    else:
        b.receive_data(msg1_a, 0.0)
        a.receive_data(msg1_b, 0.0)
    _shuttle_until_quiet(a, b)
    assert summary(drain(a)) == [complete(BOB)]
    assert summary(drain(b)) == [complete(ALICE)]
    assert a.state is State.OPEN and b.state is State.OPEN
    assert a.initiator != b.initiator
    assert a.dialled and b.dialled
    assert a.handshake_hash == b.handshake_hash
    chat = chat_frame(ALICE.identity, "after a simultaneous open")
    a.send_frame(chat)
    b.receive_data(a.data_to_send(), 0.0)
    assert summary(drain(b)) == [("frame", chat)]


def test_a_message_1_echoed_back_is_refused() -> None:
    a = Session(ALICE, initiator=True, now=0.0)
    a.receive_data(a.data_to_send(), 0.0)
    assert summary(drain(a)) == [closed("handshake_failed", False)]


def test_a_peer_we_dialled_cannot_make_our_connection_a_circuit_by_switching_roles() -> None:
    """The circuit flag is learnt only by a side that was dialled, also after a role switch."""
    relay_like = dataclasses.replace(BOB, caps=(m.CIRCUIT_CAP,))
    # The peer's ephemeral key is the lower one, so it is we who switch to responder.
    low, high = sorted((bytes([k]) * 32 for k in (1, 2)), key=nacl.bindings.crypto_scalarmult_base)
    a = Session(ALICE, initiator=True, now=0.0, ephemeral_private=high)
    b = Session(relay_like, initiator=True, now=0.0, ephemeral_private=low)
    msg1_a, msg1_b = a.data_to_send(), b.data_to_send()
    a.receive_data(msg1_b, 0.0)
    b.receive_data(msg1_a, 0.0)
    _shuttle_until_quiet(a, b)
    assert a.state is State.OPEN
    assert not a.initiator and a.dialled
    assert not a.circuit

"""Hypothesis properties: hostile input yields events or a protocol error, never another exception.

Model: h11's fuzz invariant "parse or RemoteProtocolError, nothing else".
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from unit_support import FUZZ, chat_frame, drain, encode_raw, make_info, pair

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.errors import ChinwagError, RemoteProtocolError
from chinwag.protocol import messages as m
from chinwag.protocol.discovery import MAGIC, Beacon, encode_beacon, parse_beacon
from chinwag.protocol.session import (
    Closed,
    Event,
    FrameReceived,
    HandshakeComplete,
    Session,
    State,
    UnknownFrameIgnored,
)
from chinwag.ui.jsonl import NickCmd, PeersCmd, Quit, Send, parse_command

ALICE = make_info("alice", 4001)
BOB = make_info("bob", 4002)
LEN = struct.Struct(">H")


@pytest.fixture(autouse=True)
def _no_warnings_as_errors() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_events(events: list[Event], session: Session) -> None:
    """Every event is a known type; at most one Closed, and it is last and matches the state."""
    known = (HandshakeComplete, FrameReceived, UnknownFrameIgnored, Closed)
    assert all(isinstance(e, known) for e in events)
    closes = [i for i, e in enumerate(events) if isinstance(e, Closed)]
    assert len(closes) <= 1
    if closes:
        assert closes[0] == len(events) - 1
        assert session.state is State.CLOSED
    completes = [e for e in events if isinstance(e, HandshakeComplete)]
    assert len(completes) <= 1


def framed(messages: list[bytes]) -> bytes:
    return b"".join(LEN.pack(len(x)) + x for x in messages)


chunks = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6)
framed_messages = st.lists(st.binary(max_size=300), min_size=1, max_size=4).map(framed)
prelude = st.one_of(
    st.just(encode_raw({"proto": "chinwag", "v": 1})),
    st.builds(
        lambda proto, v: encode_raw({"proto": proto, "v": v}),
        st.sampled_from(["chinwag", "other", ""]),
        st.integers(-(2**63), 2**64 - 1),
    ),
    st.binary(max_size=64),
)
# Message 1 with a random ephemeral key and a (mostly) plausible prelude, then anything.
plausible_start = st.builds(
    lambda e, p, rest: framed([e + p]) + rest,
    st.binary(min_size=32, max_size=32),
    prelude,
    st.binary(max_size=200),
)


@FUZZ
@given(st.one_of(chunks, framed_messages.map(lambda d: [d]), plausible_start.map(lambda d: [d])))
def test_random_bytes_into_a_fresh_responder(data: list[bytes]) -> None:
    b = Session(BOB, initiator=False, now=0.0)
    events: list[Event] = []
    for chunk in data:
        b.receive_data(chunk, 1.0)
        events += drain(b)
    b.data_to_send()
    b.handle_timer(100.0)
    events += drain(b)
    check_events(events, b)
    assert not any(isinstance(e, HandshakeComplete) for e in events)
    assert b.state is State.CLOSED  # by error or, at the latest, by handshake timeout


@FUZZ
@given(st.one_of(chunks, framed_messages.map(lambda d: [d])))
def test_random_bytes_into_a_fresh_initiator(data: list[bytes]) -> None:
    a = Session(ALICE, initiator=True, now=0.0)
    a.data_to_send()
    events: list[Event] = []
    for chunk in data:
        a.receive_data(chunk, 1.0)
        events += drain(a)
    check_events(events, a)
    assert not any(isinstance(e, HandshakeComplete) for e in events)


@FUZZ
@given(st.one_of(chunks, framed_messages.map(lambda d: [d])))
def test_random_bytes_into_an_open_session(data: list[bytes]) -> None:
    p = pair(ALICE, BOB)
    p.take()
    for chunk in data:
        p.b.receive_data(chunk, 1.0)
    events = drain(p.b)
    check_events(events, p.b)
    assert not any(isinstance(e, FrameReceived) for e in events)  # nothing forged gets in


_field_names = st.sampled_from(
    [
        *("t", "n", "nick", "body", "sig", "reason", "x"),
        *("room", "have", "author", "lo", "hi", "seq", "joined", "fid", "idx", "off", "data"),
    ]
)
_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=True),
        st.text(max_size=40),
        st.binary(max_size=80),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
_FID = bytes(range(16))
#: One well-formed frame of every known type (random maps rarely hit a valid one).
VALID_FRAMES: list[m.Frame] = [
    m.Ping(n=0),
    m.Pong(n=2**63 - 1),
    m.Bye(reason="quit"),
    m.NickChange(nick="bob"),
    m.Vector(room="general", have={Identity.from_seed(b"v" * 32).peer_id: 3}),
    m.Want(room="general", author=Identity.from_seed(b"v" * 32).peer_id, lo=1, hi=2),
    m.Floor(room="general", author=Identity.from_seed(b"v" * 32).peer_id, seq=4),
    m.Rooms(joined=[m.RoomAnnounce("general"), m.RoomAnnounce("p.x", b"12345678")]),
    m.FileWho(fid=_FID),
    m.FileHave(fid=_FID),
    m.FileHashesReq(fid=_FID, lo=0),
    m.FileHashes(fid=_FID, lo=0, hashes=bytes(32)),
    m.FileGet(fid=_FID, idx=0),
    m.FileData(fid=_FID, idx=0, off=0, data=memoryview(b"data")),
    m.FileNak(fid=_FID, idx=0, reason="busy"),
    m.FileEnd(fid=_FID, reason="done"),
    m.Graft(room="general"),
    m.Prune(room="general", px=[Identity.from_seed(b"v" * 32).peer_id], backoff_s=60),
    m.IHave(room="general", ids=[(Identity.from_seed(b"v" * 32).peer_id, 7)]),
    m.IWant(room="general", ids=[(Identity.from_seed(b"v" * 32).peer_id, 7)]),
    m.IDontWant(room="general", ids=[(Identity.from_seed(b"v" * 32).peer_id, 7)]),
    m.Choke(room="general"),
    m.Unchoke(room="general"),
    m.MailPut(items=[m.MailItem(bytes(32), 1, b"box")]),
    m.MailOk(ids=[_FID]),
    m.MailNo(ids=[_FID], reason="full"),
    m.MailDeliver(items=[m.MailItem(bytes(32), 1, b"box")]),
    m.MailAck(ids=[_FID]),
]
frame_like = st.one_of(
    st.sampled_from(VALID_FRAMES).map(m.encode),
    st.builds(
        lambda t, rest: encode_raw({"t": t, **rest}),
        st.sampled_from([*sorted(m.KNOWN_TAGS), "future", ""]),
        st.dictionaries(_field_names, _values, max_size=4),
    ),
    _values.map(encode_raw),
    st.binary(max_size=200),
)


@FUZZ
@given(st.lists(frame_like, min_size=1, max_size=5))
def test_random_authenticated_frames_into_an_open_session(plaintexts: list[bytes]) -> None:
    """The peer is authenticated but hostile: whatever it encrypts, no exception."""
    p = pair(ALICE, BOB)
    p.take()
    for plain in plaintexts:
        p.a.send_encoded(plain)
    p.b.receive_data(p.a.data_to_send(), 1.0)
    events = drain(p.b)
    check_events(events, p.b)
    if p.b.state is State.OPEN:
        p.b.data_to_send()  # pongs
        p.b.send_frame(chat_frame(BOB.identity))  # still usable


@FUZZ
@given(st.one_of(st.binary(max_size=300), frame_like))
def test_decode_frame_returns_a_frame_or_raises_remote_protocol_error(data: bytes) -> None:
    try:
        result = m.decode_frame(data)
    except RemoteProtocolError as exc:
        assert exc.code == "malformed_frame"
    else:
        assert isinstance(result, m.Frame | m.UnknownFrame)
        if isinstance(result, m.UnknownFrame):
            assert result.tag not in m.KNOWN_TAGS
            assert len(result.tag) <= 32


@FUZZ
@given(st.sampled_from(VALID_FRAMES))
def test_decode_frame_round_trip(frame: m.Frame) -> None:
    assert m.decode_frame(m.encode(frame)) == frame


_ID = Identity.from_seed(bytes(range(32))).peer_id
beacon_like = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=200).map(lambda d: MAGIC + d),
    st.builds(
        lambda v, pid, port, nick: MAGIC + encode_raw([v, pid, port, nick]),
        st.one_of(st.just(1), st.integers(-(2**63), 2**64 - 1)),
        st.one_of(st.just(_ID), st.text(min_size=52, max_size=52), st.binary(max_size=52)),
        st.one_of(st.integers(-10, 70000), st.text(max_size=5)),
        st.one_of(st.text(max_size=40), st.just("bob")),
    ),
    _values.map(lambda v: MAGIC + encode_raw(v)),
)


@FUZZ
@given(beacon_like)
def test_parse_beacon_returns_none_or_a_beacon(data: bytes) -> None:
    result = parse_beacon(data)
    assert result is None or isinstance(result, Beacon)
    if result is not None:
        assert parse_beacon(encode_beacon(result.peer_id, result.port, result.nick)) == result


def test_a_beacon_with_extra_elements_is_accepted_within_the_size_bound() -> None:
    """Later versions may append beacon elements; the datagram size bound still holds."""
    pid = Identity.from_seed(b"a" * 32).peer_id
    small = MAGIC + encode_raw([1, pid, 47475, "alice", "x"])
    assert parse_beacon(small) == Beacon(1, pid, 47475, "alice")
    big = MAGIC + encode_raw([1, pid, 47475, "alice", "x" * limits.MAX_BEACON_BYTES])
    assert len(big) > limits.MAX_BEACON_BYTES
    assert parse_beacon(big) is None


json_command_like = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
    st.builds(
        lambda cmd, rest: msgspec.json.encode({"cmd": cmd, **rest}),
        st.one_of(
            st.sampled_from(["send", "peers", "nick", "quit", "Send", ""]),
            st.text(max_size=10),
            st.integers(),
            st.none(),
            st.booleans(),
            st.lists(st.text(max_size=5), max_size=2),
            st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
        ),
        st.dictionaries(
            st.sampled_from(["text", "room", "nick", "x"]),
            st.one_of(st.none(), st.text(max_size=20), st.integers(), st.lists(st.integers())),
            max_size=3,
        ),
    ),
    st.recursive(
        st.one_of(st.none(), st.integers(), st.text(max_size=10)),
        lambda inner: st.lists(inner, max_size=3),
        max_leaves=5,
    ).map(msgspec.json.encode),
)


@FUZZ
@given(json_command_like)
def test_parse_command_returns_a_command_or_raises_chinwag_error(line: bytes) -> None:
    try:
        cmd = parse_command(line)
    except ChinwagError as exc:
        assert str(exc)
    else:
        assert isinstance(cmd, Send | PeersCmd | NickCmd | Quit)

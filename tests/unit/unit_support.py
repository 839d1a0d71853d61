"""Helpers for the unit tests: sessions wired back to back in memory, no sockets, no clocks.

Model: aioquic's `client_and_server()` / `roundtrip()`. Time is a plain float
passed in by the test; bytes are moved by `shuttle()` until both sides are quiet.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec
from hypothesis import HealthCheck, settings

from chinwag.crypto.identity import Identity
from chinwag.crypto.noise import generate_static_private
from chinwag.protocol import messages as m
from chinwag.protocol.chat import ChatMessage, make_message
from chinwag.protocol.session import (
    Closed,
    Event,
    FrameReceived,
    HandshakeComplete,
    LocalInfo,
    Session,
    UnknownFrameIgnored,
)
from chinwag.store.db import NewMessage

#: Hypothesis settings for every property here: modest, deterministic, no example database.
FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

LEN = struct.Struct(">H")


def frame(noise_message: bytes) -> bytes:
    """Return one wire frame: the 2-byte length prefix, then the Noise message."""
    return LEN.pack(len(noise_message)) + noise_message


def make_info(
    nick: str = "alice",
    port: int = 4000,
    caps: tuple[str, ...] = (),
    identity: Identity | None = None,
) -> LocalInfo:
    """A LocalInfo with a fresh Noise static key (and a fresh identity unless given)."""
    return LocalInfo.create(
        identity or Identity.generate(), generate_static_private(), nick, port, caps
    )


def drain(session: Session) -> list[Event]:
    """Return every pending event of session."""
    out: list[Event] = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


def summary(events: Iterable[Event]) -> list[tuple[object, ...]]:
    """Events as comparable tuples (Closed without its human-readable reason)."""
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, HandshakeComplete):
            out.append(("complete", e.peer_id, e.nick, e.listen_port, e.caps))
        elif isinstance(e, FrameReceived):
            out.append(("frame", e.frame))
        elif isinstance(e, UnknownFrameIgnored):
            out.append(("unknown", e.tag))
        elif isinstance(e, Closed):
            out.append(("closed", e.code, e.by_peer))
        else:  # pragma: no cover - a new event type must be added here
            raise AssertionError(f"unexpected event {e!r}")
    return out


def whole(data: bytes) -> list[bytes]:
    return [data]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


Chunker = Callable[[bytes], list[bytes]]


def deliver(session: Session, data: bytes, now: float, chunker: Chunker = whole) -> None:
    """Feed data to session in the chunks chunker makes; never feeds b"" (that means EOF)."""
    for chunk in chunker(data):
        assert chunk, "an empty chunk would mean end of stream"
        session.receive_data(chunk, now)


@dataclass
class Pair:
    """Two sessions back to back, with every event each has produced so far."""

    a: Session
    b: Session
    a_events: list[Event]
    b_events: list[Event]

    def shuttle(self, now: float, chunker: Chunker = whole, max_rounds: int = 100) -> None:
        """Move bytes both ways until neither side has anything to send."""
        for _ in range(max_rounds):
            moved = False
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                data = src.data_to_send()
                if data:
                    moved = True
                    deliver(dst, data, now, chunker)
            self.a_events += drain(self.a)
            self.b_events += drain(self.b)
            if not moved:
                return
        raise AssertionError("sessions never went quiet")

    def take(self) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        """Return and forget the events collected so far, as summaries."""
        out = summary(self.a_events), summary(self.b_events)
        self.a_events.clear()
        self.b_events.clear()
        return out


def pair(
    a_info: LocalInfo,
    b_info: LocalInfo,
    now: float = 0.0,
    expected_peer_id: str | None = None,
    chunker: Chunker = whole,
    handshake: bool = True,
) -> Pair:
    """Initiator a and responder b; with handshake=True, shuttle until quiet."""
    p = Pair(
        Session(a_info, initiator=True, now=now, expected_peer_id=expected_peer_id),
        Session(b_info, initiator=False, now=now),
        [],
        [],
    )
    if handshake:
        p.shuttle(now, chunker)
    return p


def complete(info: LocalInfo) -> tuple[object, ...]:
    """The summary of the HandshakeComplete that announces info."""
    return ("complete", info.identity.peer_id, info.nick, info.listen_port, info.caps)


def encode_raw(obj: object) -> bytes:
    """MessagePack of any plain value (for frames this version would never send)."""
    return msgspec.msgpack.encode(obj)


def chat_frame(identity: Identity, text: str = "hello", seq: int = 1) -> m.Chat:
    """A signed chat frame by identity in room general."""
    msg = make_message(identity, "general", "alice", 1_700_000_000_000, seq, text)
    return m.Chat(body=msg.raw_body, sig=msg.sig)


# --- fakes for driving History without sockets -------------------------------


@dataclass
class FakeSession:
    peer_id: str


@dataclass
class FakeConn:
    """A net/link.py Link that records what is sent (History's view of a connection)."""

    peer_id: str
    sent: list[object] = field(default_factory=list)
    closed: str | None = None

    @property
    def session(self) -> FakeSession:
        return FakeSession(self.peer_id)

    @property
    def is_open(self) -> bool:
        return self.closed is None

    def send_frame(self, frame: m.Frame) -> None:
        self.sent.append(frame)

    def send_encoded(self, plaintext: bytes) -> None:
        self.sent.append(plaintext)

    def close(self, reason: str, linger: bool = False) -> None:
        self.closed = reason

    async def wait_drained(self, limit_s: float) -> bool:
        return True


@dataclass
class FakeManager:
    """A net/link.py Links (History's view of the manager); records every broadcast."""

    peers: dict[str, FakeConn] = field(default_factory=dict)
    broadcasts: list[tuple[bytes, frozenset[str]]] = field(default_factory=list)
    frames: list[m.Frame] = field(default_factory=list)
    wanted: list[str] = field(default_factory=list)

    def want(self, peer_id: str) -> None:
        self.wanted.append(peer_id)

    def broadcast(self, plaintext: bytes, exclude: frozenset[str] = frozenset()) -> None:
        self.broadcasts.append((plaintext, exclude))

    def broadcast_frame(self, frame: m.Frame) -> None:
        self.frames.append(frame)

    def chats(self) -> list[tuple[m.Chat, frozenset[str]]]:
        out = []
        for plaintext, exclude in self.broadcasts:
            frame = m.decode_frame(plaintext)
            assert isinstance(frame, m.Chat)
            out.append((frame, exclude))
        return out


# --- signed messages and store rows (test_store.py, test_history_hostile.py) ---------

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)
ME = Identity.from_seed(b"z" * 32)
MALLORY = Identity.from_seed(b"m" * 32)
TS = 1_700_000_000_000
ROOM = "general"


def chat(
    who: Identity, seq: int, text: str = "hello", room: str = ROOM, ts: int = TS
) -> ChatMessage:
    """A message signed by who, nick "nick"."""
    return make_message(who, room, "nick", ts, seq, text)


def new(
    who: Identity,
    seq: int,
    text: str = "hello",
    room: str = ROOM,
    ts: int = TS,
    late: bool = False,
    verified: bool = True,
) -> NewMessage:
    """The store row of chat(who, seq, text, room, ts)."""
    msg = chat(who, seq, text, room, ts)
    return NewMessage(
        id=msg.id,
        room=room,
        author=who.peer_id,
        seq=seq,
        ts=ts,
        nick=msg.body.nick,
        text=text,
        body=msg.raw_body,
        sig=msg.sig,
        late=late,
        verified=verified,
    )

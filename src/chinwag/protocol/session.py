"""One peer connection: Noise XX handshake, then authenticated frames and keepalive.

Theory of operation
-------------------
Bytes on the wire are frames: a 2-byte big-endian length, then that many bytes
of one Noise message. The first three frames are the Noise XX handshake:

    1. initiator -> responder: e, payload Prelude{proto, v}   (clear, but hashed)
    2. responder -> initiator: e, ee, s, es, payload Hello     (encrypted)
    3. initiator -> responder: s, se, payload Hello            (encrypted)

A Hello carries the sender's Ed25519 identity and a signature by it over the
sender's Noise static key; a side accepts the other only if that signature
verifies, so nobody can claim a peer id without its private key. After message
3 every frame is one Noise transport message holding one MessagePack frame
(see messages.py).

Simultaneous open: when both sides dial each other from their listening ports
at the same moment, TCP can join the two dials into one connection on which
both sides sent message 1. An initiator that receives a message 1 in place of
message 2 compares the two ephemeral keys: the side with the lower key stays
initiator and ignores the other's message 1, the other restarts as responder
and answers it, so the handshake completes once instead of failing on both.

States: HANDSHAKE -> OPEN -> (LINGER ->) CLOSED. LINGER is a graceful close:
we have said goodbye and send nothing more, but still accept the peer's frames
until its own goodbye or end of stream, so nothing it sent before it heard us
is lost (used when a duplicate connection is retired). Any protocol violation
by the peer moves to CLOSED with a reason code (a Bye is sent if the channel is already secure)
and yields one `Closed` event; the caller never sees the exception. Time only
enters through `now` arguments; the session asks to be woken via get_timer().
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass, field

from chinwag import limits
from chinwag.crypto.identity import Identity, peer_id_from_public, verify
from chinwag.crypto.noise import NoiseFailure, NoiseXX, static_public
from chinwag.errors import LocalProtocolError, RemoteProtocolError
from chinwag.protocol import messages as m
from chinwag.protocol.names import is_valid_name
from chinwag.protocol.reasons import Reason

_LEN = struct.Struct(">H")
#: Bytes the transport cipher (AES-GCM) adds to each frame: its authentication tag.
_AEAD_TAG = 16
#: Bytes of an X25519 public key, the first thing in Noise message 1.
_DH_LEN = 32


# --- events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The peer proved its identity; the connection is open for frames."""

    peer_id: str
    nick: str
    listen_port: int
    caps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """The peer sent a frame for the layer above (chat, nick change, sync, files)."""

    frame: m.PeerFrame | m.ReachFrame | m.RelayFrame


@dataclass(frozen=True, slots=True)
class UnknownFrameIgnored:
    """The peer sent a frame type this version does not know; it was ignored."""

    tag: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is finished; send what is pending, then close the socket.

    `by_peer` is True when the peer ended it (goodbye, end of stream, silence);
    then `code` is the peer's goodbye reason (e.g. `quit`, `duplicate`) or
    `eof` / `timeout`. Otherwise `code` is our own reason or an error code.
    """

    reason: str
    code: str
    by_peer: bool


Event = HandshakeComplete | FrameReceived | UnknownFrameIgnored | Closed


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    LINGER = "linger"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class LocalInfo:
    """What this node proves and announces in every handshake."""

    identity: Identity
    noise_static: bytes
    nick: str
    listen_port: int
    caps: tuple[str, ...] = ()
    binding_sig: bytes = field(default=b"")

    @classmethod
    def create(
        cls,
        identity: Identity,
        noise_static: bytes,
        nick: str,
        listen_port: int,
        caps: tuple[str, ...] = (),
    ) -> LocalInfo:
        """Build the info, signing the binding of noise_static to identity once."""
        sig = identity.sign(m.STATIC_KEY_CONTEXT + static_public(noise_static))
        return cls(identity, noise_static, nick, listen_port, caps, sig)

    def hello(self) -> bytes:
        return m.encode(
            m.Hello(
                identity=self.identity.public,
                sig=self.binding_sig,
                nick=self.nick,
                port=self.listen_port,
                v=m.PROTOCOL_VERSION,
                caps=list(self.caps),
            )
        )


class Session:
    """The sans-IO state machine of one connection."""

    def __init__(
        self,
        local: LocalInfo,
        initiator: bool,
        now: float,
        expected_peer_id: str | None = None,
        ephemeral_private: bytes | None = None,
    ) -> None:
        self.local = local
        #: Our Noise role; it can change once, from initiator to responder, on a simultaneous open.
        self.initiator = initiator
        #: Whether we opened this connection (never changes, unlike `initiator`).
        self.dialled = initiator
        self.expected_peer_id = expected_peer_id
        self.state = State.HANDSHAKE
        self.peer_id: str | None = None
        self.peer_nick: str | None = None
        self.peer_port: int | None = None
        self.rtt: float | None = None
        #: Once closed: whether the peer ended the connection (goodbye, end of stream, silence).
        self.ended_by_peer = False
        self._noise = NoiseXX(initiator, local.noise_static, m.PROLOGUE, ephemeral_private)
        self._inbuf = bytearray()
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._handshake_deadline = now + limits.HANDSHAKE_TIMEOUT_S
        self._last_received = now
        self._ping_n = 0
        self._ping_sent_at: float | None = None
        self._ping_due = now + limits.KEEPALIVE_INTERVAL_S
        self._caps: tuple[str, ...] = ()
        self._linger_deadline = 0.0
        #: Identical on both sides once OPEN; used to break ties between duplicate connections.
        self.handshake_hash = b""
        self._linger_reason = ""
        #: A circuit connection (our hello, or as responder the peer's, has CIRCUIT_CAP): no
        #: keepalives; it stops reading after its handoff frame (messages.HANDOFF_FRAMES).
        self.circuit = m.CIRCUIT_CAP in local.caps
        #: Set after a handoff frame: frames are no longer parsed; take_unread() has the rest.
        self.halted = False
        #: Our ephemeral public key as sent in message 1 (to settle a simultaneous open).
        self._our_e = b""
        if initiator:
            prelude = m.encode(m.Prelude(proto=m.PROTOCOL_NAME, v=m.PROTOCOL_VERSION))
            first = self._noise.write_handshake(prelude)
            self._our_e = first[:_DH_LEN]
            self._write_frame(first)

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    # --- inputs ---------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the socket; b"" means the peer closed its side."""
        if self.state is State.CLOSED:
            return
        if not data:
            self._finish("connection closed by peer", Reason.EOF, by_peer=True)
            return
        self._last_received = now
        self._inbuf += data
        if self.halted:
            return
        # Frames are cut by position and the buffer shortened once: deleting each
        # frame from the front would move the rest of the buffer every time.
        # Messages are handed on as views (decryption copies them anyway); the view
        # is released before the buffer is resized.
        pos = 0
        inbuf = self._inbuf
        end = len(inbuf)
        try:
            with memoryview(inbuf) as view:
                while not self.closed and not self.halted:
                    if end - pos < 2:
                        break
                    (size,) = _LEN.unpack_from(inbuf, pos)
                    if end - pos < 2 + size:
                        break
                    with view[pos + 2 : pos + 2 + size] as frame:
                        pos += 2 + size
                        self._handle_noise_message(frame)
        except RemoteProtocolError as exc:
            self._fail(str(exc), exc.code)
        finally:
            del inbuf[:pos]

    def take_unread(self) -> bytes:
        """Return (and forget) the bytes received after a handoff frame, not parsed."""
        rest = bytes(self._inbuf)
        self._inbuf.clear()
        return rest

    def handle_timer(self, now: float) -> None:
        """Run time-based duties: handshake timeout, keepalive pings, dead-peer detection."""
        if self.state is State.OPEN and self.circuit:
            return  # the circuit adapter bounds its setup time; a ping would cross the splice
        if self.state is State.HANDSHAKE and now >= self._handshake_deadline:
            self._finish("handshake timed out", Reason.HANDSHAKE_TIMEOUT, by_peer=True)
        elif self.state is State.LINGER:
            if now >= self._linger_deadline:
                self._finish(f"closed locally: {self._linger_reason}", self._linger_reason, False)
        elif self.state is State.OPEN:
            if now - self._last_received >= limits.DEAD_PEER_TIMEOUT_S:
                self._finish("no sign of life from peer", Reason.TIMEOUT, by_peer=True)
            elif now >= max(self._ping_due, self._last_received + limits.KEEPALIVE_INTERVAL_S):
                self._ping_n += 1
                self._ping_sent_at = now
                self._ping_due = now + limits.KEEPALIVE_INTERVAL_S
                self._send_frame(m.Ping(n=self._ping_n))

    # --- commands -------------------------------------------------------

    def send_frame(self, frame: m.Frame) -> None:
        """Queue one frame; only legal while OPEN."""
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot send in state {self.state.value}")
        self._send_frame(frame)

    def send_encoded(self, plaintext: bytes) -> None:
        """Queue an already encoded frame (lets a relay encode once for many peers)."""
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot send in state {self.state.value}")
        self._encrypt_and_write(plaintext)

    def close(self, reason: str = Reason.QUIT, linger_until: float | None = None) -> None:
        """Say goodbye (if the channel is open) and finish.

        With linger_until, keep accepting the peer's frames until it closes its
        side or that time passes (state LINGER); otherwise finish at once.
        """
        reason = reason[:64]
        if self.state is State.OPEN:
            self._send_frame(m.Bye(reason=reason))
            if linger_until is not None:
                self.state = State.LINGER
                self._linger_deadline = linger_until
                self._linger_reason = reason
                return
        self._finish(f"closed locally: {reason}", reason, by_peer=False)

    # --- outputs --------------------------------------------------------

    def has_events(self) -> bool:
        return bool(self._events)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def get_timer(self) -> float | None:
        """Return when handle_timer should next run, or None."""
        if self.state is State.HANDSHAKE:
            return self._handshake_deadline
        if self.state is State.LINGER:
            return self._linger_deadline
        if self.state is State.OPEN and not self.circuit:
            dead_at = self._last_received + limits.DEAD_PEER_TIMEOUT_S
            ping_at = max(self._ping_due, self._last_received + limits.KEEPALIVE_INTERVAL_S)
            return min(dead_at, ping_at)
        return None

    # --- internals ------------------------------------------------------

    def _handle_noise_message(self, data: memoryview) -> None:
        if self.state is State.OPEN or self.state is State.LINGER:
            try:
                plain = self._noise.decrypt(data)
            except NoiseFailure as exc:
                raise RemoteProtocolError(str(exc), Reason.DECRYPT_FAILED) from None
            self._handle_frame(m.decode_frame(plain))
            return
        if self.initiator and self._is_message_1(data):
            # Simultaneous open (see the module docstring): the lower ephemeral key keeps
            # the initiator's role; the other side answers the message 1 it was sent.
            their_e = bytes(data[:_DH_LEN])
            if their_e == self._our_e:
                raise RemoteProtocolError("peer echoed our handshake", Reason.HANDSHAKE_FAILED)
            if self._our_e < their_e:
                return
            self.initiator = False
            self._noise = NoiseXX(False, self.local.noise_static, m.PROLOGUE)
        try:
            payload = self._noise.read_handshake(bytes(data))
        except NoiseFailure as exc:
            raise RemoteProtocolError(str(exc), Reason.HANDSHAKE_FAILED) from None
        if len(payload) > limits.MAX_HANDSHAKE_PAYLOAD:
            raise RemoteProtocolError("handshake payload too large", Reason.MALFORMED_HANDSHAKE)
        if self.initiator:
            # Message 2 carries the responder's Hello; answer with message 3 and open.
            self._accept_hello(payload)
            self._write_handshake(self.local.hello())
            self._open()
        elif self._noise.finished:
            self._accept_hello(payload)
            self._open()
        else:
            prelude = m.decode_prelude(payload)
            if prelude.proto != m.PROTOCOL_NAME:
                raise RemoteProtocolError(f"peer speaks {prelude.proto[:32]!r}", Reason.NOT_CHINWAG)
            if prelude.v != m.PROTOCOL_VERSION:
                raise RemoteProtocolError(
                    f"peer speaks protocol version {prelude.v}, we speak {m.PROTOCOL_VERSION}",
                    Reason.VERSION_MISMATCH,
                )
            self._write_handshake(self.local.hello())

    @staticmethod
    def _is_message_1(data: memoryview) -> bool:
        """Return whether data is a Noise message 1 of ours (an ephemeral key, then a clear
        Prelude naming our protocol) rather than a message 2, whose payload is ciphertext."""
        if len(data) <= _DH_LEN or len(data) > _DH_LEN + limits.MAX_HANDSHAKE_PAYLOAD:
            return False
        try:
            prelude = m.decode_prelude(bytes(data[_DH_LEN:]))
        except RemoteProtocolError:
            return False
        return prelude.proto == m.PROTOCOL_NAME

    def _write_handshake(self, payload: bytes) -> None:
        # Writing can fail on the peer's input too (a low-order ephemeral key
        # makes the DH fail), so it is the peer's error, not ours.
        try:
            self._write_frame(self._noise.write_handshake(payload))
        except NoiseFailure as exc:
            raise RemoteProtocolError(str(exc), Reason.HANDSHAKE_FAILED) from None

    def _accept_hello(self, payload: bytes) -> None:
        hello = m.decode_hello(payload)
        remote_static = self._noise.remote_static
        if remote_static is None:  # cannot happen in XX after message 2
            raise RemoteProtocolError("no static key in handshake", Reason.HANDSHAKE_FAILED)
        if hello.v != m.PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"peer speaks protocol version {hello.v}, we speak {m.PROTOCOL_VERSION}",
                Reason.VERSION_MISMATCH,
            )
        if not verify(hello.identity, m.STATIC_KEY_CONTEXT + remote_static, hello.sig):
            raise RemoteProtocolError(
                "peer's identity signature does not match its channel key", Reason.BAD_IDENTITY
            )
        peer_id = peer_id_from_public(hello.identity)
        if peer_id == self.local.identity.peer_id:
            raise RemoteProtocolError("connected to ourselves", Reason.SELF)
        if self.expected_peer_id is not None and peer_id != self.expected_peer_id:
            raise RemoteProtocolError(
                f"expected peer {self.expected_peer_id[:8]}, got {peer_id[:8]}",
                Reason.UNEXPECTED_PEER,
            )
        if not is_valid_name(hello.nick):
            raise RemoteProtocolError("invalid nick in hello", Reason.MALFORMED_HANDSHAKE)
        self.peer_id = peer_id
        self.peer_nick = hello.nick
        self.peer_port = hello.port
        self._caps = tuple(hello.caps)
        if m.CIRCUIT_CAP in self._caps and not self.dialled:
            # Only the relay learns it from the hello: a peer we dialled must not turn our
            # ordinary connection into one without keepalive that its `cok` can halt.
            self.circuit = True

    def _open(self) -> None:
        assert self.peer_id is not None and self.peer_nick is not None
        self.state = State.OPEN
        self.handshake_hash = self._noise.handshake_hash
        self._events.append(
            HandshakeComplete(self.peer_id, self.peer_nick, self.peer_port or 0, self._caps)
        )

    def _handle_frame(self, frame: m.Frame | m.UnknownFrame) -> None:
        if isinstance(
            frame,
            m.Chat
            | m.Vector
            | m.Want
            | m.Floor
            | m.Rooms
            | m.MeshFrame
            | m.FileFrame
            | m.Presence
            | m.ReachFrame
            | m.MailFrame,
        ):
            self._events.append(FrameReceived(frame))
        elif isinstance(frame, m.OlmKeyRequest | m.OlmKeys | m.PrivateMessage | m.Admit):
            # Not in the union above: building that union costs every chat frame (per member).
            self._events.append(FrameReceived(frame))
        elif isinstance(frame, m.Ping):
            if self.state is State.OPEN:
                self._send_frame(m.Pong(n=frame.n))
        elif isinstance(frame, m.Pong):
            if frame.n == self._ping_n and self._ping_sent_at is not None:
                self.rtt = self._last_received - self._ping_sent_at
                self._ping_sent_at = None
        elif isinstance(frame, m.NickChange):
            if not is_valid_name(frame.nick):
                raise RemoteProtocolError("invalid nick", Reason.MALFORMED_FRAME)
            self.peer_nick = frame.nick
            self._events.append(FrameReceived(frame))
        elif isinstance(frame, m.HANDOFF_FRAMES):
            if not self.circuit:
                raise RemoteProtocolError(
                    f"{frame.__struct_config__.tag!r} outside a circuit connection",
                    Reason.MALFORMED_FRAME,
                )
            # What follows on the stream belongs to the next layer (the splice, or the
            # end-to-end session through it): stop here and keep it unread.
            self.halted = True
            self._events.append(FrameReceived(frame))
        elif isinstance(frame, m.Reserve | m.ReserveOk | m.ReserveNo | m.Incoming):
            self._events.append(FrameReceived(frame))
        elif isinstance(frame, m.Bye):
            # The reason is the peer's text: keep it only if it is a plain code.
            reason = frame.reason if is_valid_name(frame.reason) else Reason.BYE
            self._finish(f"peer said goodbye ({reason})", reason, by_peer=True)
        else:
            self._events.append(UnknownFrameIgnored(frame.tag))

    def _send_frame(self, frame: m.Frame) -> None:
        self._encrypt_and_write(m.encode(frame))

    def _encrypt_and_write(self, plaintext: bytes) -> None:
        # Checked before encrypting: a refused frame must not spend a nonce, or the
        # peer could not decrypt the next one.
        if len(plaintext) + _AEAD_TAG > limits.MAX_NOISE_MESSAGE:
            raise LocalProtocolError(f"frame of {len(plaintext)} bytes exceeds the maximum")
        self._write_frame(self._noise.encrypt(plaintext))

    def _write_frame(self, data: bytes) -> None:
        if len(data) > limits.MAX_NOISE_MESSAGE:
            raise LocalProtocolError(f"frame of {len(data)} bytes exceeds the maximum")
        self._out.append(_LEN.pack(len(data)))
        self._out.append(data)

    def _fail(self, reason: str, code: str) -> None:
        if self.state is State.OPEN:
            self._send_frame(m.Bye(reason=code))
        self._finish(reason, code, by_peer=False)

    def _finish(self, reason: str, code: str, by_peer: bool) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.ended_by_peer = by_peer
        self._events.append(Closed(reason, code, by_peer))

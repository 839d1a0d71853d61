"""Private rooms with a group ratchet: a typed wrapper over vodozemac's Megolm (protocol.md 27).

Each member of a private room encrypts its messages with an outbound Megolm session of its own
and gives the session key to the other members over the pairwise channel (`rk` frames). A
member reads an author's messages with an inbound session made from that key; a key shared at
index i opens messages i, i+1, ... and never earlier ones. A new outbound session (rotation)
is made when a member leaves, after MEGOLM_ROTATE_MSGS messages or MEGOLM_ROTATE_S seconds,
so a member who left cannot read what is written after it left.

A message's `enc` is msgpack [session id, Megolm message]; the Megolm plaintext is msgpack
[room, author, seq, text], so a member cannot move another's ciphertext into a message of its
own (or to another seq): the signed chat body says which room, author and seq it is, and the
plaintext must say the same.

Pure: no I/O, no clock (callers pass `now`). Session pickles are encrypted with a key derived
from the identity seed (pickle_key) before they go to the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec
import vodozemac

from chinwag import limits
from chinwag.crypto import box
from chinwag.crypto.box import BadCiphertext
from chinwag.errors import ChinwagError

_PICKLE_CONTEXT = b"chinwag/1 megolm pickle key\x00"


class GroupError(ChinwagError):
    """A Megolm key or pickle is unusable (malformed, or the wrong pickle key)."""


class BadGroupMessage(BadCiphertext):
    """A private-room message does not decrypt, or says another room, author or seq."""


class UnknownSession(BadCiphertext):
    """A private-room message of a session whose key we do not hold (yet): keep it, ask."""


class UnknownIndex(UnknownSession):
    """A message older than the first index our key of its session opens."""


class _Envelope(msgspec.Struct, array_like=True, frozen=True):
    sid: str
    msg: bytes


class _Plain(msgspec.Struct, array_like=True, frozen=True):
    room: str
    author: str
    seq: int
    text: str


_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)
_plain_decoder = msgspec.msgpack.Decoder(_Plain)


def pickle_key(seed: bytes) -> bytes:
    """Return the 32-byte key that encrypts our Megolm pickles, derived from the identity seed."""
    return hashlib.blake2b(seed, key=_PICKLE_CONTEXT, digest_size=32).digest()


def envelope(enc: bytes) -> tuple[str, bytes]:
    """Return (session id, Megolm message bytes) of a private-room `enc`; BadGroupMessage if not."""
    try:
        env = _envelope_decoder.decode(enc)
    except msgspec.DecodeError as exc:
        raise BadGroupMessage(f"not a private-room message ({exc})") from None
    if not 0 < len(env.sid) <= 64:
        raise BadGroupMessage("bad session id")
    return env.sid, env.msg


class Outbound:
    """Our outbound Megolm session of one private room."""

    def __init__(self, session: vodozemac.GroupSession) -> None:
        self._session = session

    @classmethod
    def create(cls) -> Outbound:
        """Return a new session (its randomness is the library's OS generator)."""
        return cls(vodozemac.GroupSession())

    @classmethod
    def from_pickle(cls, pickle: str, key: bytes) -> Outbound:
        """Restore a pickled session; GroupError if it is damaged or the key is wrong."""
        try:
            return cls(vodozemac.GroupSession.from_pickle(pickle, key))
        except (ValueError, TypeError) as exc:
            raise GroupError(f"outbound session pickle unusable ({type(exc).__name__})") from None

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def message_index(self) -> int:
        """Index of the next message this session encrypts."""
        return self._session.message_index

    @property
    def session_key(self) -> str:
        """The signed session key at the current index (base64), for members' inbound sessions."""
        return self._session.session_key.to_base64()

    def seal(self, room: str, author: str, seq: int, text: str) -> bytes:
        """Encrypt text as message seq of author in room; return the `enc` of the chat body."""
        plain = msgspec.msgpack.encode(_Plain(room, author, seq, text))
        msg = self._session.encrypt(plain)
        return msgspec.msgpack.encode(_Envelope(self.session_id, msg.to_bytes()))

    def pickle(self, key: bytes) -> str:
        return self._session.pickle(key)


class Inbound:
    """An inbound Megolm session: reads one author's session from some index on."""

    def __init__(self, session: vodozemac.InboundGroupSession) -> None:
        self._session = session

    @classmethod
    def from_key(cls, session_key: str) -> Inbound:
        """Make an inbound session from an author's signed session key (base64)."""
        try:
            return cls(vodozemac.InboundGroupSession(vodozemac.SessionKey(session_key)))
        except (ValueError, TypeError) as exc:
            raise GroupError(f"bad session key ({type(exc).__name__})") from None

    @classmethod
    def from_export(cls, exported: str) -> Inbound:
        """Make an inbound session from a key another holder exported (base64, unsigned)."""
        try:
            key = vodozemac.ExportedSessionKey(exported)
            return cls(vodozemac.InboundGroupSession.import_session(key))
        except (ValueError, TypeError) as exc:
            raise GroupError(f"bad exported session key ({type(exc).__name__})") from None

    @classmethod
    def from_pickle(cls, pickle: str, key: bytes) -> Inbound:
        """Restore a pickled session; GroupError if it is damaged or the key is wrong."""
        try:
            return cls(vodozemac.InboundGroupSession.from_pickle(pickle, key))
        except (ValueError, TypeError) as exc:
            raise GroupError(f"inbound session pickle unusable ({type(exc).__name__})") from None

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def first_known_index(self) -> int:
        return self._session.first_known_index

    def export(self) -> str:
        """Return the session exported at its first known index (base64), for another member."""
        exported = self._session.export_at(self._session.first_known_index)
        if exported is None:  # the library keeps the first index: cannot happen
            raise GroupError("session does not export at its first index")
        return exported.to_base64()

    def open(self, enc: bytes, room: str, author: str, seq: int) -> tuple[str, int]:
        """Return (text, message index) of a private-room message of author's seq in room.

        UnknownSession if enc is of another session, UnknownIndex if older than our key,
        BadGroupMessage if forged, tampered, or moved from another room, author or seq.
        """
        sid, raw = envelope(enc)
        if sid != self.session_id:
            raise UnknownSession(f"message of session {sid[:8]}, not {self.session_id[:8]}")
        try:
            message = vodozemac.MegolmMessage.from_bytes(raw)
        except (ValueError, TypeError) as exc:
            raise BadGroupMessage(f"malformed Megolm message ({type(exc).__name__})") from None
        if message.message_index() < self.first_known_index:
            raise UnknownIndex(
                f"message index {message.message_index()} before {self.first_known_index}"
            )
        try:
            decrypted = self._session.decrypt(message)
        except (ValueError, TypeError) as exc:
            why = type(exc).__name__
            raise BadGroupMessage(f"Megolm message does not decrypt ({why})") from None
        try:
            plain = _plain_decoder.decode(decrypted.plaintext)
        except msgspec.DecodeError:
            raise BadGroupMessage("malformed Megolm plaintext") from None
        if (plain.room, plain.author, plain.seq) != (room, author, seq):
            raise BadGroupMessage("the ciphertext belongs to another message (replayed)")
        return plain.text, decrypted.message_index

    def pickle(self, key: bytes) -> str:
        return self._session.pickle(key)


# --- room keys in transit ---------------------------------------------------------------


def seal_key(room_key: bytes, exported: str) -> bytes:
    """Seal an exported session key under the room's passphrase key (secretbox) for an `rk`.

    The pairwise channel already hides it from everyone else; this keeps it from a peer
    that was admitted without knowing the passphrase (a replayed announcement).
    """
    return box.seal_room(room_key, exported)


def open_key(room_key: bytes, sealed: bytes) -> str:
    """Open what seal_key sealed; GroupError if it was sealed under another key."""
    try:
        return box.open_room(room_key, sealed)
    except BadCiphertext:
        raise GroupError("room key sealed under another passphrase") from None


# --- rules -------------------------------------------------------------------------------


@dataclass(slots=True)
class Rotation:
    """What the rotation rule needs of an outbound session: when it was made, messages sent."""

    created: float
    sent: int


def rotation_due(state: Rotation, now: float, left: bool) -> str | None:
    """Return why our outbound session must be replaced before the next message, or None.

    "left": a member left (or was blocked) since it was made; "count": MEGOLM_ROTATE_MSGS
    messages sent; "age": MEGOLM_ROTATE_S seconds old (or the clock went back that far).
    """
    if left:
        return "left"
    if state.sent >= limits.MEGOLM_ROTATE_MSGS:
        return "count"
    if abs(now - state.created) >= limits.MEGOLM_ROTATE_S:
        return "age"
    return None


def inbound_expired(created: float, now: float) -> bool:
    """Return whether an inbound session received at `created` is past the kept window."""
    return now - created >= limits.MEGOLM_KEEP_INBOUND_S

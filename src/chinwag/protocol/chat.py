"""Group chat messages: validation, signing, verification, ids and dedup.

A message's id is the first 16 bytes (hex) of SHA-256 over its encoded,
signed body, so every peer derives the same id and a relay cannot change the
content without changing the id or breaking the signature.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from chinwag import limits
from chinwag.crypto.identity import Identity, peer_id_from_public, verify
from chinwag.errors import RemoteProtocolError
from chinwag.protocol.messages import CHAT_CONTEXT, ChatBody, decode_body, encode
from chinwag.protocol.names import is_valid_name


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A verified (or authenticated) chat message and its wire form."""

    id: str
    body: ChatBody
    raw_body: bytes
    sig: bytes

    @property
    def author_id(self) -> str:
        return peer_id_from_public(self.body.author)


def message_id(raw_body: bytes) -> str:
    """Return the id of an encoded chat body."""
    return hashlib.sha256(raw_body).hexdigest()[:32]


def make_message(
    identity: Identity, room: str, nick: str, ts_ms: int, seq: int, text: str, enc: bytes = b""
) -> ChatMessage:
    """Build and sign a new message by identity (inputs must be valid)."""
    body = ChatBody(
        room=room, author=identity.public, nick=nick, ts=ts_ms, seq=seq, text=text, enc=enc
    )
    raw = encode(body)
    return ChatMessage(message_id(raw), body, raw, identity.sign(CHAT_CONTEXT + raw))


def open_message(raw_body: bytes, sig: bytes, check_signature: bool) -> ChatMessage:
    """Decode a received message, verifying its signature if asked.

    Raises RemoteProtocolError for a malformed body, invalid names or a bad signature.
    """
    body = decode_body(raw_body)
    if not is_valid_name(body.nick) or not is_valid_name(body.room):
        raise RemoteProtocolError("invalid nick or room in chat message", "malformed_frame")
    if body.room != body.room.lower():
        raise RemoteProtocolError("room name not in canonical form", "malformed_frame")
    if check_signature and not verify(body.author, CHAT_CONTEXT + raw_body, sig):
        raise RemoteProtocolError("chat message signature does not verify", "bad_signature")
    return ChatMessage(message_id(raw_body), body, raw_body, sig)


class SeenSet:
    """A bounded set of recently seen message ids (oldest forgotten first)."""

    def __init__(self, capacity: int = limits.SEEN_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, msg_id: str) -> bool:
        """Record msg_id; return True if it was new."""
        if msg_id in self._ids:
            return False
        self._ids[msg_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

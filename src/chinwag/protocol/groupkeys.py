"""Room-key frames of private rooms (docs/protocol.md 27): inner frames of the pairwise channel.

`rk` gives a Megolm session key of one author's session in one private room; `rkq` asks a
member for the key of a session whose messages we hold but cannot read. They travel only
between two peers, end to end encrypted (the pairwise channel: `PrivateChannel.send`, a
`pm` frame inside the pair's Olm ratchet, docs/protocol.md 26), never flooded or relayed.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from chinwag import limits
from chinwag.errors import RemoteProtocolError
from chinwag.protocol.messages import PeerIdStr, Room
from chinwag.protocol.reasons import Reason

SealedKey = Annotated[bytes, msgspec.Meta(min_length=1, max_length=limits.MEGOLM_MAX_KEY_CHARS)]
SessionIdStr = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class RoomKey(msgspec.Struct, frozen=True, tag_field="t", tag="rk"):
    """The key of `author`'s Megolm session in private room `room` (exported, base64),
    sealed under the room's passphrase key (crypto/group.seal_key)."""

    room: Room
    author: PeerIdStr
    key: SealedKey


class RoomKeyRequest(msgspec.Struct, frozen=True, tag_field="t", tag="rkq"):
    """Ask for the key of `author`'s session `sid` in private room `room`."""

    room: Room
    author: PeerIdStr
    sid: SessionIdStr


Inner = RoomKey | RoomKeyRequest
#: The inner frame kinds of this module (PrivateChannel routes `pm` contents by kind).
RK = "rk"
RKQ = "rkq"
KINDS = (RK, RKQ)

_decoder = msgspec.msgpack.Decoder(Inner)
_encoder = msgspec.msgpack.Encoder()


def encode(frame: Inner) -> bytes:
    """Encode a room-key frame to MessagePack."""
    return _encoder.encode(frame)


def decode(data: bytes) -> Inner:
    """Decode a room-key frame; raise RemoteProtocolError if it is malformed."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(
            f"malformed room-key frame: {exc}", Reason.MALFORMED_FRAME
        ) from None

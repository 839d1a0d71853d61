"""Invite codes: one line of text that names a peer and how to reach it, signed by it.

Format (docs/protocol.md, "Invite codes"): `chinwag:` followed by the lowercase,
unpadded base32 of `payload || signature`, where `payload` is the MessagePack map
`{v, id, nick, addrs, relays, expires}` (the `Invite` struct, fields in that order) and
`signature` the 64-byte Ed25519 signature of INVITE_CONTEXT + payload by the key the
peer id `id` names. Anyone holding a code can check it came from that peer unaltered;
nobody can make a code for someone else's id. Pure: `now` comes in as an argument.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Annotated, Final

import msgspec

from chinwag import limits
from chinwag.crypto.identity import SIGNATURE_BYTES, Identity, public_from_peer_id, verify
from chinwag.errors import UsageError
from chinwag.protocol.addr import MAX_ADDR_CHARS, AddrError, normalize_addr
from chinwag.protocol.messages import U64, Nick, PeerIdStr

PREFIX: Final = "chinwag:"
INVITE_VERSION: Final = 1
#: Domain separation: an invite signature cannot be taken for any other signature.
INVITE_CONTEXT: Final = b"chinwag/1 invite\x00"

_DAMAGED: Final = "not an invite code: damaged or cut short (copy the whole line)"

AddrStr = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ADDR_CHARS)]


class InviteError(UsageError):
    """An invite code is malformed, of another version, tampered with or expired."""


class Invite(msgspec.Struct, frozen=True):
    """What an invite says: who (`id`, `nick`), where (`addrs`, `relays`), until when."""

    v: int
    id: PeerIdStr
    nick: Nick
    addrs: Annotated[list[AddrStr], msgspec.Meta(max_length=limits.MAX_INVITE_ADDRS)]
    #: (relay peer id, relay address) pairs where the peer holds a reservation.
    relays: Annotated[
        list[tuple[PeerIdStr, AddrStr]], msgspec.Meta(max_length=limits.MAX_INVITE_RELAYS)
    ]
    #: Unix time (seconds) after which the code is refused.
    expires: U64


class _Versioned(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    v: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Invite)
_version_decoder = msgspec.msgpack.Decoder(_Versioned)


def make_invite(
    identity: Identity,
    nick: str,
    addrs: list[str],
    relays: list[tuple[str, str]],
    expires: int,
) -> str:
    """Return the signed invite code of identity (addresses beyond the bounds are dropped)."""
    invite = Invite(
        v=INVITE_VERSION,
        id=identity.peer_id,
        nick=nick,
        addrs=[normalize_addr(a) for a in addrs][: limits.MAX_INVITE_ADDRS],
        relays=[(r, normalize_addr(a)) for r, a in relays][: limits.MAX_INVITE_RELAYS],
        expires=expires,
    )
    payload = _encoder.encode(invite)
    raw = payload + identity.sign(INVITE_CONTEXT + payload)
    return PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def read_invite(code: str, now: float) -> Invite:
    """Return the invite a code holds if it is well formed, signed by its peer and not expired.

    Case does not matter (a QR code may carry it in capitals); surrounding blanks are
    ignored. Raises InviteError saying what is wrong: not a code, another version,
    malformed, tampered with (the signature does not match), or expired.
    """
    if not isinstance(code, str):
        raise InviteError("an invite code is text starting with 'chinwag:'")
    text = code.strip()
    if len(text) > limits.MAX_INVITE_CHARS:
        raise InviteError(f"that is too long for an invite code ({len(text)} characters)")
    text = text.lower()
    if not text.startswith(PREFIX):
        raise InviteError("not an invite code: it must start with 'chinwag:'")
    body = text[len(PREFIX) :]
    raw = _b32decode(body)
    if raw is None or len(raw) <= SIGNATURE_BYTES:
        raise InviteError(_DAMAGED)
    payload, sig = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    try:
        version = _version_decoder.decode(payload).v
    except msgspec.DecodeError:
        raise InviteError(_DAMAGED) from None
    if version != INVITE_VERSION:
        raise InviteError(
            f"this invite is of version {version}; this chinwag reads version {INVITE_VERSION}"
        )
    try:
        invite = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise InviteError(f"malformed invite code: {exc}") from None
    if not verify(public_from_peer_id(invite.id), INVITE_CONTEXT + payload, sig):
        raise InviteError("this invite code was altered: its signature does not match")
    try:
        for addr in [*invite.addrs, *(a for _r, a in invite.relays)]:
            if normalize_addr(addr) != addr:
                raise AddrError(f"{addr!r} is not in canonical form")
    except AddrError as exc:
        raise InviteError(f"malformed invite code: {exc}") from None
    if invite.expires <= now:
        when = dt.datetime.fromtimestamp(min(invite.expires, 2**35), dt.UTC)
        raise InviteError(
            f"this invite expired on {when:%Y-%m-%d %H:%M} UTC; ask {invite.nick} for a new one"
        )
    return invite


def _b32decode(body: str) -> bytes | None:
    """Return the bytes of unpadded base32 text, or None unless it is their canonical text."""
    if not body or not body.isascii() or not body.isalnum():
        return None
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        return None
    # Unused low bits of the last character must be zero: one code, one text.
    if base64.b32encode(raw).decode("ascii").rstrip("=").lower() != body:
        return None
    return raw

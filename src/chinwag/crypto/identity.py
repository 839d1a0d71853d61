"""Ed25519 identities and the peer ids derived from them.

A peer id is the lowercase, unpadded base32 form of the Ed25519 public key
(52 characters), so anyone holding a peer id can verify that peer's signatures
without a lookup. The short form (first 8 characters) is for display; the
fingerprint (SHA-256 of the key, 32 hex digits in groups of 4) is for people
to compare.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing

from chinwag.errors import ChinwagError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
PEER_ID_CHARS = 52
SHORT_ID_CHARS = 8


class BadIdentity(ChinwagError):
    """A peer id or key is malformed, or a key file is corrupt."""


@functools.lru_cache(maxsize=4096)
def peer_id_from_public(public: bytes) -> str:
    """Return the peer id of a 32-byte Ed25519 public key (cached: it is on the hot path)."""
    if len(public) != PUBLIC_KEY_BYTES:
        raise BadIdentity("an Ed25519 public key has 32 bytes")
    return base64.b32encode(public).decode("ascii").rstrip("=").lower()


def public_from_peer_id(peer_id: str) -> bytes:
    """Return the public key encoded in a peer id; raise BadIdentity if it is not one."""
    if len(peer_id) != PEER_ID_CHARS:
        raise BadIdentity(f"a peer id has {PEER_ID_CHARS} characters")
    try:
        raw = base64.b32decode(peer_id.upper() + "====")
    except (ValueError, TypeError) as exc:
        raise BadIdentity("a peer id is base32") from exc
    if peer_id_from_public(raw) != peer_id:
        raise BadIdentity("peer id is not in canonical form")
    return raw


def key_from_peer_id(peer_id: str) -> bytes:
    """Return the public key of a peer id that is a usable Ed25519 key; raise BadIdentity
    if it is not a peer id, or not a point of the prime-order group (as every real key is).

    For peer ids a user gives (`/add`, `lookup`, a DM to an id): blinding, sealing and
    DH raise on an invalid point, so such an id must stop here, as a usage error.
    """
    raw = public_from_peer_id(peer_id)
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
        raise BadIdentity("that peer id is not a valid Ed25519 key")
    return raw


def short_id(peer_id: str) -> str:
    """Return the display form of a peer id."""
    return peer_id[:SHORT_ID_CHARS]


def fingerprint(peer_id: str) -> str:
    """Return the human-comparable fingerprint of a peer id."""
    digest = hashlib.sha256(public_from_peer_id(peer_id)).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Return whether signature is a valid Ed25519 signature of message by public."""
    if len(public) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(public).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Identity:
    """A node's own signing key."""

    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != 32:
            raise BadIdentity("an Ed25519 seed has 32 bytes")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def public(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def peer_id(self) -> str:
        return peer_id_from_public(self.public)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of message."""
        return self.signing_key.sign(message).signature

"""Ed25519 key blinding for the DHT record (docs/dht.md "Private records").

The private record is published under a *blinded* key A' = h·A, where A is the identity
public key and h = SHA-512(BLIND_CONTEXT ‖ A ‖ period) reduced mod the group order, with
`period` the number of the current time period (one day, DHT_BLIND_PERIOD_S) as 8 bytes
big-endian: the scheme of Tor v3 onion services (rend-spec-v3 A.2). Whoever knows A (the
peer id) computes A' and finds the record; a DHT node that sees only A' cannot tell whose
it is, nor link one day's A' to the next day's. Only the identity's owner knows the
blinded scalar a' = h·a, so only it can sign under A': the BEP 44 signature under A'
proves the record comes from the peer id, and nobody who merely knows the peer id can
overwrite the record (as a key derived from the peer id alone would allow).

The nonce prefix of the blinded key depends on the period too: two periods' keys share the
scalar a up to a known factor, so one message signed under both with one nonce would
reveal a (deterministic nonces are H(prefix ‖ message)).

Primitives are libsodium's (PyNaCl bindings): scalar reduce and multiply mod L, point
times scalar; nothing here is a cipher or a signature written by hand. Pure functions.
"""

from __future__ import annotations

import hashlib
from typing import Final

import nacl.bindings as sodium

from chinwag.crypto.identity import Identity

#: Domain separation of the blinding factor (one per record version).
BLIND_CONTEXT: Final = b"chinwag/1 dht blind\x00"
#: Domain separation of the blinded key's nonce prefix (derived from the identity's).
PREFIX_CONTEXT: Final = b"chinwag/1 dht blind prefix\x00"


def expanded_private(identity: Identity) -> bytes:
    """Return the 64-byte expanded Ed25519 private key libtorrent signs with: the clamped
    scalar a then the nonce prefix, both halves of SHA-512(seed) (RFC 8032 5.1.5)."""
    h = bytearray(hashlib.sha512(bytes(identity.signing_key)).digest())
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return bytes(h)


def _period_bytes(period: int) -> bytes:
    """Return a period number as 8 bytes big-endian (ValueError if out of 0..2^64-1)."""
    if not 0 <= period < 2**64:
        raise ValueError("a period number is 0 .. 2^64 - 1")
    return period.to_bytes(8, "big")


def blind_factor(public: bytes, period: int) -> bytes:
    """Return h (32 bytes, reduced mod L) for the identity public key `public` in `period`."""
    digest = hashlib.sha512(BLIND_CONTEXT + public + _period_bytes(period)).digest()
    return bytes(sodium.crypto_core_ed25519_scalar_reduce(digest))


def blinded_public(public: bytes, period: int) -> bytes:
    """Return A' = h·A, the DHT key of the private record of the identity `public` in
    `period`.

    Raises nacl's RuntimeError/ValueError for a point that is not a valid key (callers
    check the peer id first: every real identity key is valid).
    """
    return bytes(sodium.crypto_scalarmult_ed25519_noclamp(blind_factor(public, period), public))


def blinded_private(identity: Identity, period: int) -> bytes:
    """Return the 64-byte expanded private key (a' = h·a mod L, prefix') under A' of
    `period`."""
    expanded = expanded_private(identity)
    h = blind_factor(identity.public, period)
    scalar = sodium.crypto_core_ed25519_scalar_mul(h, expanded[:32])
    prefix = hashlib.sha512(PREFIX_CONTEXT + expanded[32:] + _period_bytes(period)).digest()[:32]
    return bytes(scalar) + prefix

"""The DHT record: where a peer can be reached, as a BEP 44 mutable item (docs/dht.md,
docs/protocol.md "DHT record").

A record is the MessagePack map `{v, addrs, relays, seq, exp}` (`DhtRecord`, fields in that
order) followed by the 64-byte Ed25519 signature of RECORD_CONTEXT ‖ map by the identity key.
It is stored under the salt SALT (the record version) and one of two keys:

- public mode: the identity key itself; the BEP 44 value is `map ‖ signature`. Anyone who
  knows the peer id reads the addresses; anyone who sees the DHT key knows the peer id.
- private mode (the default): the blinded key A' of the current day (crypto/blind.py,
  `period_of`), which only holders of the peer id can compute; the value is
  `nonce(24) ‖ XChaCha20-Poly1305(map ‖ signature)` under a key HKDF-derived from the full
  public key, with SALT ‖ A' as associated data. A DHT node sees a key that changes every
  day, and a ciphertext.

The BEP 44 value `v` is one bencoded byte string holding those bytes (libtorrent's Python
binding puts and returns the string's content: `raw` here); bencoded, it is at most
MAX_DHT_VALUE_BYTES. `seq` is ours (time-based, monotonic; libtorrent numbers the BEP 44
item itself). Reading checks, in order: size, shape, decryption, the inner signature,
version, expiry, then the sequence against the highest already accepted; each refusal is a
DhtRecordError whose `reason` is counted by the caller. Pure: `now`, nonces and the last
sequence number come in as arguments; nothing else than DhtRecordError comes out of `open_record`.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
import nacl.bindings as sodium
import nacl.exceptions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chinwag import limits
from chinwag.crypto.blind import blinded_private, blinded_public, expanded_private
from chinwag.crypto.identity import SIGNATURE_BYTES, Identity, verify
from chinwag.errors import ChinwagError
from chinwag.protocol.addr import MAX_ADDR_CHARS, AddrError, normalize_addr
from chinwag.protocol.messages import U64, PeerIdStr

RECORD_VERSION: Final = 1
#: The BEP 44 salt: names chinwag's record version (a v2 record lives beside a v1 one).
SALT: Final = b"chinwag/1"
#: Domain separation of the inner signature (no other chinwag signature can pass for it).
RECORD_CONTEXT: Final = b"chinwag/1 dht record\x00"
#: HKDF info of the private record's encryption key.
KEY_INFO: Final = b"chinwag/1 dht record key"
NONCE_BYTES: Final = 24
_TAG_BYTES: Final = 16

# Reasons a record is ignored (counted, logged once each, reported in `lookup` events).
OVERSIZED: Final = "oversized"
MALFORMED: Final = "malformed"
UNDECRYPTABLE: Final = "undecryptable"
BAD_SIGNATURE: Final = "bad_signature"
VERSION: Final = "version"
EXPIRED: Final = "expired"
OLD_SEQ: Final = "old_seq"

AddrStr = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ADDR_CHARS)]


class DhtRecordError(ChinwagError):
    """A record read from the DHT is not acceptable; `reason` is one of the constants above."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class DhtRecord(msgspec.Struct, frozen=True, array_like=False):
    """Where a peer is: direct addresses, relays holding a reservation, seq, expiry (Unix s)."""

    v: int
    addrs: Annotated[list[AddrStr], msgspec.Meta(max_length=limits.MAX_INVITE_ADDRS)]
    relays: Annotated[
        list[tuple[PeerIdStr, AddrStr]], msgspec.Meta(max_length=limits.MAX_INVITE_RELAYS)
    ]
    seq: U64
    exp: U64


class _Versioned(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    v: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(DhtRecord)
_version_decoder = msgspec.msgpack.Decoder(_Versioned)


def record_key(public: bytes) -> bytes:
    """Return the 32-byte XChaCha20-Poly1305 key of a private record of identity `public`."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=KEY_INFO)
    return hkdf.derive(public)


def period_of(now: float) -> int:
    """Return the number of the blinding period (DHT_BLIND_PERIOD_S) Unix time `now` is in."""
    return int(now // limits.DHT_BLIND_PERIOD_S)


def publish_periods(now: float) -> list[int]:
    """Return the periods a private record put at `now` goes under: the current one, and
    the next one too within DHT_BLIND_NEXT_S of its start."""
    current = period_of(now)
    if period_of(now + limits.DHT_BLIND_NEXT_S) > current:
        return [current, current + 1]
    return [current]


def lookup_periods(now: float) -> list[int]:
    """Return the periods a lookup at `now` reads, best first: the current one, then the
    previous one (a publisher that has not put since the period began)."""
    current = period_of(now)
    return [current, current - 1] if current > 0 else [current]


def target(public: bytes, private: bool, period: int) -> bytes:
    """Return the DHT public key a record of identity `public` is stored under in `period`
    (the public mode's key is the identity key: the same in every period)."""
    return blinded_public(public, period) if private else public


def signing_key(identity: Identity, private: bool, period: int) -> bytes:
    """Return the 64-byte expanded private key libtorrent signs our record with."""
    return blinded_private(identity, period) if private else expanded_private(identity)


def bencode_bytes(data: bytes) -> bytes:
    """Return data as a bencoded byte string (`len:data`)."""
    return str(len(data)).encode("ascii") + b":" + data


def seal_record(
    identity: Identity,
    addrs: list[str],
    relays: list[tuple[str, str]],
    seq: int,
    exp: int,
    private: bool,
    nonce: bytes,
    *,
    period: int,
) -> tuple[DhtRecord, bytes]:
    """Return (record, raw value: the content of the BEP 44 `v` string) of our addresses,
    signed (and sealed if private, for the key of `period`).

    Addresses beyond the bounds, or that would make the value exceed MAX_DHT_VALUE_BYTES,
    are dropped from the end (relays last: they reach us behind any NAT).
    """
    if private and len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce has {NONCE_BYTES} bytes")
    addrs = [normalize_addr(a) for a in addrs][: limits.MAX_INVITE_ADDRS]
    relays = [(r, normalize_addr(a)) for r, a in relays][: limits.MAX_INVITE_RELAYS]
    while True:
        record = DhtRecord(RECORD_VERSION, list(addrs), list(relays), seq, exp)
        value = _seal(identity, record, private, nonce, period)
        if len(bencode_bytes(value)) <= limits.MAX_DHT_VALUE_BYTES:
            return record, value
        if addrs:
            addrs.pop()
        elif relays:
            relays.pop()
        else:  # pragma: no cover - an empty record is ~100 bytes
            raise ValueError("an empty record does not fit")


def _seal(identity: Identity, record: DhtRecord, private: bool, nonce: bytes, period: int) -> bytes:
    payload = _encoder.encode(record)
    plain = payload + identity.sign(RECORD_CONTEXT + payload)
    if not private:
        return plain
    aad = SALT + blinded_public(identity.public, period)
    sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, aad, nonce, record_key(identity.public)
    )
    return nonce + sealed


def bep44_signed(salt: bytes, seq: int, value: bytes) -> bytes:
    """Return the bytes a BEP 44 mutable item's signature covers (`value`: the bencoded v)."""
    head = (b"4:salt" + bencode_bytes(salt)) if salt else b""
    return head + b"3:seqi" + str(seq).encode("ascii") + b"e1:v" + value


def open_record(
    public: bytes,
    value: bytes | None,
    private: bool,
    now: float,
    last_seq: int | None = None,
    bep44: tuple[int, bytes] | None = None,
    period: int | None = None,
) -> DhtRecord:
    """Return the record of identity `public` in a raw value (the `v` string's content) read
    under target(public, private, period), if acceptable; else raise DhtRecordError (only
    that). `period` None: the one `now` is in.

    `last_seq`: the highest record seq accepted from this peer before (older: OLD_SEQ).
    `bep44`: (item seq, item signature) to check the DHT's own signature too (libtorrent
    checks it already; a second look costs one verification and does not trust it blindly).
    """
    if not isinstance(value, bytes):
        raise DhtRecordError(MALFORMED, "the value is not a byte string")
    if len(bencode_bytes(value)) > limits.MAX_DHT_VALUE_BYTES:
        raise DhtRecordError(OVERSIZED, f"a value of more than {limits.MAX_DHT_VALUE_BYTES} bytes")
    try:
        key = target(public, private, period_of(now) if period is None else period)
    except (ValueError, RuntimeError, TypeError, nacl.exceptions.CryptoError) as exc:
        raise DhtRecordError(MALFORMED, f"not an identity key: {exc}") from None
    if bep44 is not None:
        item_seq, item_sig = bep44
        if not verify(key, bep44_signed(SALT, item_seq, bencode_bytes(value)), item_sig):
            raise DhtRecordError(BAD_SIGNATURE, "the DHT item's signature does not match")
    plain = value
    if private:
        if len(plain) < NONCE_BYTES + _TAG_BYTES:
            raise DhtRecordError(MALFORMED, "too short for a sealed record")
        try:
            plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                plain[NONCE_BYTES:], SALT + key, plain[:NONCE_BYTES], record_key(public)
            )
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise DhtRecordError(UNDECRYPTABLE, "the sealed record does not open") from None
    if len(plain) <= SIGNATURE_BYTES:
        raise DhtRecordError(MALFORMED, "too short for a signed record")
    payload, sig = plain[:-SIGNATURE_BYTES], plain[-SIGNATURE_BYTES:]
    if not verify(public, RECORD_CONTEXT + payload, sig):
        raise DhtRecordError(BAD_SIGNATURE, "the record's signature does not match")
    try:
        version = _version_decoder.decode(payload).v
    except msgspec.DecodeError:
        raise DhtRecordError(MALFORMED, "not a record") from None
    if version != RECORD_VERSION:
        raise DhtRecordError(VERSION, f"a record of version {version}")
    try:
        record = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise DhtRecordError(MALFORMED, str(exc)) from None
    try:
        for addr in [*record.addrs, *(a for _r, a in record.relays)]:
            if normalize_addr(addr) != addr:
                raise AddrError(f"{addr!r} is not in canonical form")
    except AddrError as exc:
        raise DhtRecordError(MALFORMED, str(exc)) from None
    if record.exp <= now:
        raise DhtRecordError(EXPIRED, f"expired at {record.exp}")
    if record.exp > now + limits.DHT_MAX_RECORD_AHEAD_S:
        raise DhtRecordError(MALFORMED, "valid for implausibly long")
    if last_seq is not None and record.seq < last_seq:
        raise DhtRecordError(OLD_SEQ, f"seq {record.seq} is older than {last_seq}")
    return record

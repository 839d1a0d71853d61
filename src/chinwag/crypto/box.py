"""End-to-end encryption of private messages and private rooms (libsodium via PyNaCl).

- A private message is sealed (crypto_box_seal: X25519 + XSalsa20-Poly1305)
  twice: to the recipient's key and to the author's own, both X25519 keys
  converted from the Ed25519 identities. The message body, ciphertexts
  included, is signed by the author like any chat message, so the recipient
  knows who wrote it and a relay can neither read nor alter it.
- A private room's key is derived from its passphrase with Argon2id (64 MiB,
  libsodium's "interactive" limits), salted by the room name; its messages are
  sealed with crypto_secretbox. A key check value (BLAKE2b keyed by the room
  key) lets members tell a wrong passphrase from an empty room.
- A file offered to a private room has a random key of its own, carried in the
  (room-encrypted) offer; its chunks travel sealed with AES-256-GCM under it
  (via `cryptography`), so a peer that replays a member's room announcement
  gets only ciphertext (docs/files.md).
"""

from __future__ import annotations

import hashlib

import msgspec
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.pwhash
import nacl.secret
import nacl.signing
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chinwag.crypto.identity import Identity
from chinwag.errors import ChinwagError

ROOM_KEY_BYTES = nacl.secret.SecretBox.KEY_SIZE
KCV_BYTES = 8
_ROOM_SALT_CONTEXT = b"chinwag/1 private room salt\x00"
_ROOM_ID_CONTEXT = b"chinwag/1 private room id\x00"
_DM_ROOM_CONTEXT = b"chinwag/1 dm room\x00"


class BadCiphertext(ChinwagError):
    """A ciphertext did not decrypt with our key (wrong key, or tampered)."""


class _DmBoxes(msgspec.Struct, array_like=True, frozen=True):
    to: bytes
    me: bytes


_dm_decoder = msgspec.msgpack.Decoder(_DmBoxes)


def dm_room(peer_a: str, peer_b: str) -> str:
    """Return the wire name of the private conversation between two peer ids."""
    low, high = sorted((peer_a, peer_b))
    digest = hashlib.sha256(_DM_ROOM_CONTEXT + f"{low}|{high}".encode()).hexdigest()
    return "dm." + digest[:24]


def _curve_public(ed_public: bytes) -> nacl.public.PublicKey:
    return nacl.signing.VerifyKey(ed_public).to_curve25519_public_key()


def seal_dm(author: Identity, recipient_public: bytes, text: str) -> bytes:
    """Encrypt text so that only the recipient and the author can read it."""
    data = text.encode()
    to = nacl.public.SealedBox(_curve_public(recipient_public)).encrypt(data)
    me = nacl.public.SealedBox(_curve_public(author.public)).encrypt(data)
    return msgspec.msgpack.encode(_DmBoxes(to=bytes(to), me=bytes(me)))


def open_dm(identity: Identity, enc: bytes, authored_by_me: bool) -> str:
    """Decrypt a private message addressed to (or written by) identity."""
    try:
        boxes = _dm_decoder.decode(enc)
        private = identity.signing_key.to_curve25519_private_key()
        data = nacl.public.SealedBox(private).decrypt(boxes.me if authored_by_me else boxes.to)
        return data.decode()
    except (msgspec.DecodeError, nacl.exceptions.CryptoError, UnicodeDecodeError) as exc:
        raise BadCiphertext(f"private message does not decrypt ({type(exc).__name__})") from None


def private_room_id(name: str) -> str:
    """Return the wire name of a private room: it does not reveal the name."""
    return "p." + hashlib.sha256(_ROOM_ID_CONTEXT + name.encode()).hexdigest()[:24]


def derive_room_key(name: str, passphrase: str) -> bytes:
    """Derive a private room's key from its passphrase with Argon2id (about 0.1 s, 64 MiB)."""
    salt = hashlib.sha256(_ROOM_SALT_CONTEXT + name.encode()).digest()[
        : nacl.pwhash.argon2id.SALTBYTES
    ]
    return nacl.pwhash.argon2id.kdf(
        ROOM_KEY_BYTES,
        passphrase.encode(),
        salt,
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    )


def key_check(key: bytes) -> bytes:
    """Return the key check value of a room key (reveals nothing about the key)."""
    return nacl.hash.blake2b(
        b"kcv", key=key, digest_size=KCV_BYTES, encoder=nacl.encoding.RawEncoder
    )


def seal_room(key: bytes, text: str) -> bytes:
    """Encrypt text with a private room's key (random nonce included)."""
    return bytes(nacl.secret.SecretBox(key).encrypt(text.encode()))


def open_room(key: bytes, enc: bytes) -> str:
    """Decrypt a private room message; raise BadCiphertext with the wrong key."""
    try:
        return nacl.secret.SecretBox(key).decrypt(enc).decode()
    except (nacl.exceptions.CryptoError, UnicodeDecodeError, ValueError) as exc:
        raise BadCiphertext(f"room message does not decrypt ({type(exc).__name__})") from None


def safety_number(peer_a_public: bytes, peer_b_public: bytes) -> str:
    """Return the number two people compare aloud: 60 digits in 12 groups, same on both sides."""
    low, high = sorted((peer_a_public, peer_b_public))
    digest = hashlib.sha512(b"chinwag/1 safety number\x00" + low + high).digest()
    digits = "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 60, 5)
    )
    return " ".join(digits[i : i + 5] for i in range(0, 60, 5))


# --- private-room files ------------------------------------------------------

#: Bytes of a file key (AES-256-GCM), carried only inside a private room's encrypted offer.
FILE_KEY_BYTES = 32
#: Bytes the AEAD adds to each sealed chunk (the GCM tag).
CHUNK_TAG_BYTES = 16
_CHUNK_CONTEXT = b"chinwag/1 file chunk\x00"


def seal_chunk(key: bytes, fid: bytes, idx: int, data: bytes | bytearray | memoryview) -> bytes:
    """Return chunk idx of file fid sealed with AES-256-GCM under the file's key.

    Deterministic: nonce = idx as 12 bytes big-endian, additional data =
    context || fid, so every holder of the file seals a chunk to the same bytes
    (their SHA-256 is in the offer's digest list). A (key, idx) pair must only
    ever seal the one chunk the digest list names: callers check the sealed
    chunk's digest before sending it, so a nonce is never used for two texts.
    """
    return AESGCM(key).encrypt(_chunk_nonce(idx), data, _CHUNK_CONTEXT + fid)


def open_chunk(key: bytes, fid: bytes, idx: int, sealed: bytes | bytearray | memoryview) -> bytes:
    """Return the plaintext of a chunk sealed by seal_chunk; raise BadCiphertext if it is not."""
    try:
        return AESGCM(key).decrypt(_chunk_nonce(idx), sealed, _CHUNK_CONTEXT + fid)
    except (InvalidTag, ValueError) as exc:
        raise BadCiphertext(f"file chunk does not decrypt ({type(exc).__name__})") from None


def _chunk_nonce(idx: int) -> bytes:
    if not 0 <= idx < 1 << 64:
        raise ValueError("chunk index out of range")
    return idx.to_bytes(12, "big")


# --- mail (docs/protocol.md section 24) ------------------------------------------


def seal_to(recipient_public: bytes, data: bytes) -> bytes:
    """Seal data (crypto_box_seal) so that only the holder of recipient_public can open it."""
    return bytes(nacl.public.SealedBox(_curve_public(recipient_public)).encrypt(data))


def open_sealed(identity: Identity, sealed: bytes) -> bytes:
    """Open what seal_to sealed to identity; raise BadCiphertext if it is not ours or tampered."""
    try:
        private = identity.signing_key.to_curve25519_private_key()
        return bytes(nacl.public.SealedBox(private).decrypt(sealed))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise BadCiphertext(f"mail does not decrypt ({type(exc).__name__})") from None

"""The passphrase-encrypted archive of `chinwag export` / `chinwag import` (pure: no IO).

Layout (all integers big-endian), docs/api.md section 12 "Moving to another machine":

    magic     8 bytes  b"chinwagX"
    version   1 byte   1
    kdf       1 byte   1 = Argon2id (libsodium crypto_pwhash, ALG_ARGON2ID13)
    opslimit  4 bytes  Argon2id passes
    memlimit  4 bytes  Argon2id memory in KiB
    salt     16 bytes  random
    nonce    24 bytes  random
    ciphertext         XChaCha20-Poly1305-IETF(key, nonce, aad = the 58 header bytes above)

The key is Argon2id(passphrase, salt, opslimit, memlimit). The whole header is the
AEAD's associated data, so a changed version, parameter, salt or nonce fails like a
changed ciphertext byte; so does a truncated file (the tag is the last 16 bytes). The
caller draws salt and nonce (this module draws no randomness).
"""

from __future__ import annotations

import struct

import nacl.bindings
import nacl.exceptions
import nacl.pwhash

from chinwag import limits
from chinwag.errors import ChinwagError

MAGIC = b"chinwagX"
VERSION = 1
KDF_ARGON2ID = 1
SALT_BYTES = nacl.pwhash.argon2id.SALTBYTES
NONCE_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
_FIXED = struct.Struct(">8sBBII")
HEADER_BYTES = _FIXED.size + SALT_BYTES + NONCE_BYTES

#: What export uses: libsodium's MODERATE limits (3 passes, 256 MiB, about 1 s here), four
#: times the memory of the interactive limits private rooms use: the file may be copied,
#: lost or stolen, and then guessed offline for as long as the thief likes.
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MODERATE


class BadArchive(ChinwagError):
    """Not a chinwag export, a version we cannot read, a wrong passphrase, or a tampered
    or truncated file (these last three cannot be told apart, by design)."""


def derive_key(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    """Return the 32-byte archive key: Argon2id of the passphrase (slow on purpose)."""
    return nacl.pwhash.argon2id.kdf(
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
        passphrase,
        salt,
        opslimit=opslimit,
        memlimit=memlimit,
    )


def seal(
    passphrase: bytes,
    payload: bytes,
    salt: bytes,
    nonce: bytes,
    opslimit: int = OPSLIMIT,
    memlimit: int = MEMLIMIT,
) -> bytes:
    """Return the archive of payload under passphrase (salt and nonce: fresh random bytes)."""
    if len(salt) != SALT_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("salt and nonce have fixed sizes")
    header = _FIXED.pack(MAGIC, VERSION, KDF_ARGON2ID, opslimit, memlimit // 1024) + salt + nonce
    key = derive_key(passphrase, salt, opslimit, memlimit)
    return header + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        payload, header, nonce, key
    )


def check_header(data: bytes) -> tuple[int, int]:
    """Return (opslimit, memlimit in bytes) of an archive; raise BadArchive if it is not one
    we can open, or asks for more work than MAX_ARCHIVE_* (a crafted file must not make us
    allocate gigabytes)."""
    if len(data) < HEADER_BYTES + TAG_BYTES or not data.startswith(MAGIC):
        raise BadArchive("not a chinwag export file (or truncated)")
    _magic, version, kdf, opslimit, mem_kib = _FIXED.unpack_from(data)
    if version != VERSION or kdf != KDF_ARGON2ID:
        raise BadArchive(f"export format version {version}.{kdf} is not one this chinwag reads")
    memlimit = mem_kib * 1024
    if not (
        nacl.pwhash.argon2id.OPSLIMIT_MIN <= opslimit <= limits.MAX_ARCHIVE_OPSLIMIT
        and nacl.pwhash.argon2id.MEMLIMIT_MIN <= memlimit <= limits.MAX_ARCHIVE_MEMLIMIT
    ):
        raise BadArchive("export file asks for Argon2id limits out of range (damaged?)")
    return opslimit, memlimit


def open_sealed(passphrase: bytes, data: bytes) -> bytes:
    """Return the payload of an archive; raise BadArchive on anything wrong."""
    opslimit, memlimit = check_header(data)
    header = data[:HEADER_BYTES]
    salt = header[_FIXED.size : _FIXED.size + SALT_BYTES]
    nonce = header[_FIXED.size + SALT_BYTES :]
    key = derive_key(passphrase, salt, opslimit, memlimit)
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            data[HEADER_BYTES:], header, nonce, key
        )
    except nacl.exceptions.CryptoError:
        raise BadArchive(
            "cannot open the export file: wrong passphrase, or the file is damaged or truncated"
        ) from None

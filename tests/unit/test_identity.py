"""crypto/identity.py: peer ids, fingerprints, signatures and the key file."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from unit_support import FUZZ

from chinwag.crypto.identity import (
    PEER_ID_CHARS,
    SHORT_ID_CHARS,
    BadIdentity,
    Identity,
    fingerprint,
    key_from_peer_id,
    peer_id_from_public,
    public_from_peer_id,
    short_id,
    verify,
)
from chinwag.datadir import load_or_create_identity
from chinwag.errors import ChinwagError

SEED = bytes(range(32))


@pytest.fixture
def ident() -> Identity:
    return Identity.from_seed(SEED)


def test_peer_id_round_trip(ident: Identity) -> None:
    pid = ident.peer_id
    assert len(pid) == PEER_ID_CHARS
    assert re.fullmatch(r"[a-z2-7]{52}", pid)
    assert public_from_peer_id(pid) == ident.public
    assert peer_id_from_public(ident.public) == pid


def test_peer_id_is_the_unpadded_lowercase_base32_of_the_key(ident: Identity) -> None:
    expected = base64.b32encode(ident.public).decode().rstrip("=").lower()
    assert ident.peer_id == expected


def test_from_seed_is_deterministic() -> None:
    assert Identity.from_seed(SEED).peer_id == Identity.from_seed(SEED).peer_id
    assert Identity.from_seed(SEED).peer_id != Identity.from_seed(bytes(32)).peer_id


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_seed_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(BadIdentity):
        Identity.from_seed(bytes(size))


@pytest.mark.parametrize("size", [0, 31, 33])
def test_public_key_of_wrong_size_has_no_peer_id(size: int) -> None:
    with pytest.raises(BadIdentity):
        peer_id_from_public(bytes(size))


def _non_canonical_last_char(pid: str) -> str:
    # 52 base32 characters carry 260 bits for a 256-bit key: the low 4 bits of
    # the last character are padding, so flipping them names the same key.
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    index = alphabet.index(pid[-1])
    return pid[:-1] + alphabet[index ^ 0b0001]


def test_non_canonical_peer_ids_are_refused(ident: Identity) -> None:
    pid = ident.peer_id
    twin = _non_canonical_last_char(pid)
    assert base64.b32decode(twin.upper() + "====") == ident.public  # same key...
    for bad in (twin, pid.upper()):  # ...but only one spelling is a peer id
        with pytest.raises(BadIdentity, match="canonical"):
            public_from_peer_id(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a" * 51,
        "a" * 53,
        "1" * 52,  # not in the base32 alphabet
        "0" * 52,
        "é" * 52,  # not ASCII
        "a" * 51 + "=",
        " " * 52,
    ],
)
def test_malformed_peer_ids_are_refused(bad: str) -> None:
    with pytest.raises(BadIdentity):
        public_from_peer_id(bad)


def test_bad_identity_is_a_chinwag_error() -> None:
    assert issubclass(BadIdentity, ChinwagError)


def test_short_id(ident: Identity) -> None:
    assert short_id(ident.peer_id) == ident.peer_id[:SHORT_ID_CHARS]
    assert len(short_id(ident.peer_id)) == 8


def test_fingerprint_format(ident: Identity) -> None:
    fp = fingerprint(ident.peer_id)
    assert re.fullmatch(r"([0-9a-f]{4} ){7}[0-9a-f]{4}", fp)
    assert fp.replace(" ", "") == hashlib.sha256(ident.public).hexdigest()[:32]
    assert fingerprint(Identity.generate().peer_id) != fp


def test_fingerprint_of_a_malformed_peer_id_is_refused() -> None:
    with pytest.raises(BadIdentity):
        fingerprint("not a peer id")


def test_sign_and_verify(ident: Identity) -> None:
    sig = ident.sign(b"message")
    assert len(sig) == 64
    assert sig == ident.sign(b"message")  # Ed25519 is deterministic
    assert verify(ident.public, b"message", sig)


def test_verify_rejects_wrong_key(ident: Identity) -> None:
    sig = ident.sign(b"message")
    assert not verify(Identity.generate().public, b"message", sig)


def test_verify_rejects_tampered_message_or_signature(ident: Identity) -> None:
    sig = ident.sign(b"message")
    assert not verify(ident.public, b"messagE", sig)
    assert not verify(ident.public, b"message ", sig)
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not verify(ident.public, b"message", flipped)


@pytest.mark.parametrize(
    ("public_size", "sig_size"), [(31, 64), (33, 64), (32, 63), (32, 65), (0, 0)]
)
def test_verify_rejects_wrong_sizes(public_size: int, sig_size: int) -> None:
    assert not verify(bytes(public_size), b"m", bytes(sig_size))


@FUZZ
@given(st.binary(min_size=32, max_size=32), st.binary(), st.binary(min_size=64, max_size=64))
def test_verify_never_raises(public: bytes, message: bytes, sig: bytes) -> None:
    """Hostile keys (small-order, off-curve) and signatures give False, never an exception."""
    assert verify(public, message, sig) in (False, True)


def test_load_or_create_identity_creates_a_private_key_file(tmp_path: Path) -> None:
    ident = load_or_create_identity(tmp_path)
    path = tmp_path / "identity.key"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == bytes(ident.signing_key)
    assert sorted(os.listdir(tmp_path)) == ["identity.key"]  # no temporary file left


def test_load_or_create_identity_loads_the_same_identity_twice(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path)
    again = load_or_create_identity(tmp_path)
    assert again.peer_id == first.peer_id
    assert again.sign(b"x") == first.sign(b"x")


def test_load_or_create_identity_creates_different_identities_per_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert load_or_create_identity(tmp_path / "a").peer_id != (
        load_or_create_identity(tmp_path / "b").peer_id
    )


@pytest.mark.parametrize("content", [b"", b"short", bytes(31), bytes(33), b"x" * 1000])
def test_corrupt_key_file_is_bad_identity(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "identity.key").write_bytes(content)
    with pytest.raises(BadIdentity, match="not a chinwag identity key"):
        load_or_create_identity(tmp_path)
    assert (tmp_path / "identity.key").read_bytes() == content  # never overwritten


def test_a_peer_id_that_is_not_a_curve_point_is_refused_as_a_key(ident: Identity) -> None:
    """Canonical base32 is not enough: blinding and DH on a non-point raise (issue 15)."""
    fake = "a" * 52  # canonical (the last character holds 0 bits), all-zero key: small order
    assert public_from_peer_id(fake) == bytes(32)
    with pytest.raises(BadIdentity, match="not a valid Ed25519 key"):
        key_from_peer_id(fake)
    assert key_from_peer_id(ident.peer_id) == ident.public

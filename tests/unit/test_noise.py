"""crypto/noise.py against the published Noise test vectors, and its failure modes.

The vector is the `Noise_XX_25519_AESGCM_SHA256` entry of the cacophony test
vectors (the Haskell reference implementation's), as carried by the snow
project: repository mcginty/snow, path tests/vectors/cacophony.txt, commit
62fbfae2c84b644a0432ce497a4a47e4fa139a2d. Payloads are the cacophony
quotations; messages 1-3 are the handshake, 4-6 transport messages
alternating responder -> initiator, initiator -> responder, ...
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chinwag.crypto.noise import (
    PROTOCOL_NAME,
    NoiseFailure,
    NoiseXX,
    generate_static_private,
    static_public,
)

h = bytes.fromhex

VECTOR_PROTOCOL = b"Noise_XX_25519_AESGCM_SHA256"
PROLOGUE = h("4a6f686e2047616c74")  # "John Galt"
INIT_STATIC = h("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1")
INIT_EPHEMERAL = h("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a")
RESP_STATIC = h("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893")
RESP_EPHEMERAL = h("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b")
# (payload, ciphertext) in order; the first three are handshake messages.
MESSAGES = [
    (
        h("4c756477696720766f6e204d69736573"),
        h(
            "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
            "4c756477696720766f6e204d69736573"
        ),
    ),
    (
        h("4d757272617920526f746862617264"),
        h(
            "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
            "757117acceb05bd7a45733bc22015c97a9d0cbaf41b80446d5988ff5127235d7"
            "6b79eade70f473d6a4ef521fdcbeda5340d01e028ba793fc059f2724a83af05f"
            "12dda0448a7621a926b379a92477fd"
        ),
    ),
    (
        h("462e20412e20486179656b"),
        h(
            "c90f1cf77eba4e50edb038991565e36c9758943a989229b6051244dc4fbecb69"
            "46744b401af2ee1a5881b65fbb87fd07cb6a328ececc9ce6ce84c399dc332d4f"
            "d521fa4bb7f467ce909395"
        ),
    ),
    (
        h("4361726c204d656e676572"),
        h("bc3fa77f6aca3e8466d7dc6bea10013e88a6a29add5132b461806c"),
    ),
    (
        h("4a65616e2d426170746973746520536179"),
        h("250b01074cdfe0df2ecf8ccbf1737b15a2ddb5b52fd9a396604e9c793cee3b3bb9"),
    ),
    (
        h("457567656e2042f6686d20766f6e2042617765726b"),
        h("449d4d433b3cdc3d02bf6fc881774b9df54366ebcffb9689bb13f14709822cd7ef42bcdb4d"),
    ),
]


@pytest.fixture(autouse=True)
def _quiet_fixed_ephemeral_warning() -> Iterator[None]:
    # noiseprotocol warns whenever an ephemeral key is preset, which only test vectors do.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One of ephemeral keypairs is already set")
        yield


def vector_sides() -> tuple[NoiseXX, NoiseXX]:
    init = NoiseXX(True, INIT_STATIC, PROLOGUE, ephemeral_private=INIT_EPHEMERAL)
    resp = NoiseXX(False, RESP_STATIC, PROLOGUE, ephemeral_private=RESP_EPHEMERAL)
    return init, resp


def test_chinwag_uses_the_vector_protocol() -> None:
    assert PROTOCOL_NAME == VECTOR_PROTOCOL


def test_handshake_matches_the_cacophony_vector() -> None:
    init, resp = vector_sides()
    (p1, c1), (p2, c2), (p3, c3) = MESSAGES[:3]

    assert init.write_handshake(p1) == c1
    assert resp.read_handshake(c1) == p1
    assert not init.finished and not resp.finished

    assert resp.write_handshake(p2) == c2
    assert init.read_handshake(c2) == p2
    assert init.remote_static == static_public(RESP_STATIC)
    assert not init.finished

    assert init.write_handshake(p3) == c3
    assert init.finished
    assert resp.read_handshake(c3) == p3
    assert resp.finished
    assert resp.remote_static == static_public(INIT_STATIC)
    assert init.handshake_hash == resp.handshake_hash


def complete_vector_handshake(init: NoiseXX, resp: NoiseXX) -> None:
    for i, (payload, _) in enumerate(MESSAGES[:3]):
        sender, receiver = (resp, init) if i == 1 else (init, resp)
        receiver.read_handshake(sender.write_handshake(payload))


def test_transport_messages_match_the_cacophony_vector() -> None:
    init, resp = vector_sides()
    complete_vector_handshake(init, resp)
    # After the handshake the vector alternates, starting with the responder.
    for i, (payload, ciphertext) in enumerate(MESSAGES[3:]):
        sender, receiver = (resp, init) if i % 2 == 0 else (init, resp)
        assert sender.encrypt(payload) == ciphertext
        assert receiver.decrypt(ciphertext) == payload


def _independent_handshake_hash() -> bytes:
    """The final handshake hash of the vector, from the Noise spec with `cryptography` only.

    Cross-checks NoiseXX.handshake_hash. (The vector file's own `handshake_hash`
    field, c7c118c3..., is not the spec's final h; snow does not check it either.)
    """

    def sha(x: bytes) -> bytes:
        return hashlib.sha256(x).digest()

    def hkdf2(ck: bytes, ikm: bytes) -> tuple[bytes, bytes]:
        t = hmac.new(ck, ikm, "sha256").digest()
        o1 = hmac.new(t, b"\x01", "sha256").digest()
        return o1, hmac.new(t, o1 + b"\x02", "sha256").digest()

    def pub(k: bytes) -> bytes:
        return X25519PrivateKey.from_private_bytes(k).public_key().public_bytes_raw()

    def dh(k: bytes, p: bytes) -> bytes:
        return X25519PrivateKey.from_private_bytes(k).exchange(X25519PublicKey.from_public_bytes(p))

    hh = VECTOR_PROTOCOL.ljust(32, b"\0")
    ck = hh
    key: bytes | None = None
    nonce = 0

    def mix_key(ikm: bytes) -> None:
        nonlocal ck, key, nonce
        ck, key = hkdf2(ck, ikm)
        nonce = 0

    def encrypt_and_hash(plain: bytes) -> bytes:
        nonlocal hh, nonce
        if key is None:
            out = plain
        else:
            out = AESGCM(key).encrypt(b"\0" * 4 + nonce.to_bytes(8, "big"), plain, hh)
            nonce += 1
        hh = sha(hh + out)
        return out

    hh = sha(hh + PROLOGUE)
    # -> e
    hh = sha(hh + pub(INIT_EPHEMERAL))
    m1 = pub(INIT_EPHEMERAL) + encrypt_and_hash(MESSAGES[0][0])
    # <- e, ee, s, es
    hh = sha(hh + pub(RESP_EPHEMERAL))
    mix_key(dh(INIT_EPHEMERAL, pub(RESP_EPHEMERAL)))
    m2 = pub(RESP_EPHEMERAL) + encrypt_and_hash(pub(RESP_STATIC))
    mix_key(dh(RESP_STATIC, pub(INIT_EPHEMERAL)))
    m2 += encrypt_and_hash(MESSAGES[1][0])
    # -> s, se
    m3 = encrypt_and_hash(pub(INIT_STATIC))
    mix_key(dh(INIT_STATIC, pub(RESP_EPHEMERAL)))
    m3 += encrypt_and_hash(MESSAGES[2][0])
    # The independent derivation must reproduce the vector before its hash is trusted.
    assert [m1, m2, m3] == [c for _, c in MESSAGES[:3]]
    return hh


def test_handshake_hash_matches_an_independent_derivation() -> None:
    init, resp = vector_sides()
    complete_vector_handshake(init, resp)
    assert init.handshake_hash == _independent_handshake_hash()


# --- failure modes ----------------------------------------------------------


def handshake(prologue_i: bytes = b"p", prologue_r: bytes = b"p") -> tuple[NoiseXX, NoiseXX]:
    init = NoiseXX(True, generate_static_private(), prologue_i)
    resp = NoiseXX(False, generate_static_private(), prologue_r)
    resp.read_handshake(init.write_handshake(b""))
    init.read_handshake(resp.write_handshake(b""))
    resp.read_handshake(init.write_handshake(b""))
    return init, resp


def test_random_keys_complete_and_talk() -> None:
    init, resp = handshake()
    assert init.finished and resp.finished
    assert resp.decrypt(init.encrypt(b"hi")) == b"hi"
    assert init.decrypt(resp.encrypt(b"yo")) == b"yo"


def test_prologue_mismatch_fails_the_handshake() -> None:
    init = NoiseXX(True, generate_static_private(), b"chinwag/2")
    resp = NoiseXX(False, generate_static_private(), b"chinwag/1")
    resp.read_handshake(init.write_handshake(b""))  # message 1 carries no MAC yet
    with pytest.raises(NoiseFailure):
        init.read_handshake(resp.write_handshake(b""))


def test_tampered_handshake_message_is_refused() -> None:
    init = NoiseXX(True, generate_static_private(), b"p")
    resp = NoiseXX(False, generate_static_private(), b"p")
    resp.read_handshake(init.write_handshake(b""))
    m2 = bytearray(resp.write_handshake(b"payload"))
    m2[40] ^= 1
    with pytest.raises(NoiseFailure):
        init.read_handshake(bytes(m2))


@pytest.mark.parametrize("message", [b"", b"\x00", bytes(31)])
def test_truncated_first_message_is_refused(message: bytes) -> None:
    resp = NoiseXX(False, generate_static_private(), b"p")
    with pytest.raises(NoiseFailure):
        resp.read_handshake(message)


def test_tampered_transport_message_is_refused() -> None:
    init, resp = handshake()
    sealed = init.encrypt(b"one")
    with pytest.raises(NoiseFailure):
        resp.decrypt(bytes([sealed[0] ^ 0x80]) + sealed[1:])


def test_replayed_transport_message_is_refused() -> None:
    init, resp = handshake()
    sealed = init.encrypt(b"one")
    assert resp.decrypt(sealed) == b"one"
    with pytest.raises(NoiseFailure):  # the receiving nonce has moved on
        resp.decrypt(sealed)


def test_reordered_transport_messages_are_refused() -> None:
    init, resp = handshake()
    init.encrypt(b"one")
    with pytest.raises(NoiseFailure):
        resp.decrypt(init.encrypt(b"two"))


def test_static_public_matches_cryptography() -> None:
    private = generate_static_private()
    assert len(private) == 32
    expected = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    assert static_public(private) == expected
    assert generate_static_private() != private

"""crypto/box.py: private messages, private rooms and safety numbers.

Every wrapper is checked against something it did not compute itself:
libsodium's published Argon2id outputs, argon2-cffi (the reference Argon2
implementation, not libsodium), the `cryptography` library's X25519 and the
Montgomery/Edwards map written out by hand, hashlib for the wire names, key
check values and safety numbers documented in docs/protocol.md (sections 2, 16).
"""

from __future__ import annotations

import base64
import hashlib
import re

import msgspec
import nacl.public
import nacl.pwhash
import nacl.secret
import nacl.signing
import pytest
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chinwag import limits
from chinwag.crypto import box
from chinwag.crypto.box import BadCiphertext
from chinwag.crypto.identity import Identity
from chinwag.errors import ChinwagError
from chinwag.protocol.names import is_valid_name

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
TEXTS = ["hello", "", "ünïcödé ✓ 🎉", "x" * limits.MAX_TEXT_BYTES]

argon2id = nacl.pwhash.argon2id


def b64(text: str) -> bytes:
    """Decode the unpadded base64 of a PHC hash string."""
    return base64.b64decode(text + "=" * (-len(text) % 4))


# --- Argon2id -----------------------------------------------------------------
#
# libsodium's own vectors (jedisct1/libsodium, test/default/pwhash_argon2id.c and
# its .exp output), computed with crypto_pwhash: the same call PyNaCl's kdf makes.
# `tv` entries give hex password (first passwd_len bytes), hex salt (first 16 bytes
# used), outlen, opslimit and memlimit in bytes; `tv3` entries are PHC strings.

LIBSODIUM_TV = [
    pytest.param(
        "4a857e2ee8aa9b6056f2424e84d24a72473378906ee04a46cb05311502d5250b82"
        "ad86b83c8f20a23dbb74f6da60b0b6ecffd67134d45946ac8ebfb3064294bc097d"
        "43ced68642bfb8bbbdd0f50b30118f5e",
        82,
        "39d82eef32010b8b79cc5ba88ed539fbaba741100f2edbeca7cc171ffeabf258",
        190,
        3,
        1432947,
        "08d8cd330c57e1b4643241d05bb468ba4ee4e932cd0858816be9ef15360b27bbd06a87130ee92222"
        "be267a29b81f5ae8fe8613324cfc4832dc49387fd0602f1c57b4d0f3855db94fb7e12eb05f9a484a"
        "ed4a4307abf586cd3d55c809bc081541e00b682772fb2066504ff935b8ebc551a2083882f874bc0f"
        "ae68e56848ae34c91097c3bf0cca8e75c0797eef3efde3f75e005815018db3cf7c109a812264c4de"
        "69dcb22322dbbcfa447f5b00ecd1b04a7be1569c8e556adb7bba48adf81d",
        id="tv4",
    ),
    pytest.param(
        "b540beb016a5366524d4605156493f9874514a5aa58818cd0c6dfffaa9e90205f17b",
        34,
        "44071f6d181561670bda728d43fb79b443bb805afdebaf98622b5165e01b15fb",
        231,
        1,
        1631659,
        "7fb72409b0987f8190c3729710e98c3f80c5a8727d425fdcde7f3644d467fe973f5b5fee683bd3fc"
        "e812cb9ae5e9921a2d06c2f1905e4e839692f2b934b682f11a2fe2b90482ea5dd234863516dba6f5"
        "2dc0702d324ec77d860c2e181f84472bd7104fedce071ffa93c5309494ad51623d214447a7b2b146"
        "2dc7d5d55a1f6fd5b54ce024118d86f0c6489d16545aaa87b6689dad9f2fb47fda9894f8e12b87d9"
        "78b483ccd4cc5fd9595cdc7a818452f915ce2f7df95ec12b1c72e3788d473441d884f9748eb14703"
        "c21b45d82fd667b85f5b2d98c13303b3fe76285531a826b6fc0fe8e3dddecf",
        id="tv6",
    ),
]


@pytest.mark.parametrize(
    ("password_hex", "password_len", "salt_hex", "outlen", "opslimit", "memlimit", "expected"),
    LIBSODIUM_TV,
)
def test_argon2id_kdf_matches_libsodium_vectors(
    password_hex: str,
    password_len: int,
    salt_hex: str,
    outlen: int,
    opslimit: int,
    memlimit: int,
    expected: str,
) -> None:
    password = bytes.fromhex(password_hex)[:password_len]
    salt = bytes.fromhex(salt_hex)[: argon2id.SALTBYTES]
    out = argon2id.kdf(outlen, password, salt, opslimit=opslimit, memlimit=memlimit)
    assert out.hex() == expected
    # The reference implementation agrees (memory in KiB, as libsodium rounds it).
    reference = hash_secret_raw(
        password,
        salt,
        time_cost=opslimit,
        memory_cost=memlimit // 1024,
        parallelism=1,
        hash_len=outlen,
        type=Type.ID,
    )
    assert reference.hex() == expected


@pytest.mark.parametrize(
    ("password", "phc"),
    [
        pytest.param(
            b"",
            "$argon2id$v=19$m=4882,t=2,p=1$bA81arsiXysd3WbTRzmEOw"
            "$Nm8QBM+7RH1DXo9rvp5cwKEOOOfD2g6JuxlXihoNcpE",
            id="tv3-2-empty-password",
        ),
        pytest.param(
            b"^T5H$JYt39n%K*j:W]!1s?vg!:jGi]Ax?..l7[p0v:1jHTpla9;]bUN;?bWyCbtqg ",
            "$argon2id$v=19$m=4096,t=19,p=1$PkEgMTYtYnl0ZXMgc2FsdA"
            "$ltB/ue1kPtBMBGfsysMpPigE6hiNEKZ9vs8vLNVDQGA",
            id="tv3-4",
        ),
    ],
)
def test_argon2id_kdf_matches_libsodium_phc_strings(password: bytes, phc: str) -> None:
    m = re.fullmatch(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=1\$([^$]+)\$([^$]+)", phc)
    assert m is not None
    mem_kib, ops, salt, expected = int(m[1]), int(m[2]), b64(m[3]), b64(m[4])
    out = argon2id.kdf(len(expected), password, salt, opslimit=ops, memlimit=mem_kib * 1024)
    assert out == expected


def room_salt(name: str) -> bytes:
    """The salt docs/protocol.md (section 16.3) specifies, computed here independently."""
    return hashlib.sha256(b"chinwag/1 private room salt\x00" + name.encode()).digest()[:16]


@pytest.mark.parametrize(
    ("name", "passphrase"),
    [("secret", "correct horse battery staple"), ("ops-team", "pässwörd ✓"), ("x", "")],
)
def test_derive_room_key_matches_reference_argon2id(name: str, passphrase: str) -> None:
    key = box.derive_room_key(name, passphrase)
    assert len(key) == box.ROOM_KEY_BYTES == 32
    reference = hash_secret_raw(
        passphrase.encode(),
        room_salt(name),
        time_cost=argon2id.OPSLIMIT_INTERACTIVE,
        memory_cost=argon2id.MEMLIMIT_INTERACTIVE // 1024,
        parallelism=1,
        hash_len=32,
        type=Type.ID,
    )
    assert key == reference


def test_derive_room_key_uses_the_documented_limits() -> None:
    # docs/protocol.md (16.3) promises opslimit 2 and 64 MiB: a change would split every room.
    assert argon2id.OPSLIMIT_INTERACTIVE == 2
    assert argon2id.MEMLIMIT_INTERACTIVE == 64 * 1024 * 1024


def test_derive_room_key_depends_on_name_and_passphrase() -> None:
    base = box.derive_room_key("secret", "pass")
    assert box.derive_room_key("secret", "pass") == base
    assert box.derive_room_key("secret", "pass2") != base
    assert box.derive_room_key("secret2", "pass") != base


# --- private messages (sealed boxes) ----------------------------------------------


@pytest.mark.parametrize("text", TEXTS, ids=["ascii", "empty", "unicode", "max"])
def test_dm_round_trip_for_recipient_and_author(text: str) -> None:
    enc = box.seal_dm(ALICE, BOB.public, text)
    assert box.open_dm(BOB, enc, authored_by_me=False) == text
    assert box.open_dm(ALICE, enc, authored_by_me=True) == text
    # Both boxes fit in a chat body, even for the longest text.
    assert len(enc) <= limits.MAX_ENC_BYTES
    if text:
        assert text.encode() not in enc


def test_dm_is_two_sealed_boxes_of_the_documented_shape() -> None:
    text = "hello bob"
    enc = box.seal_dm(ALICE, BOB.public, text)
    to, me = msgspec.msgpack.decode(enc)
    overhead = 32 + 16  # ephemeral public key + Poly1305 tag
    assert len(to) == len(me) == len(text.encode()) + overhead
    # Each box opens with libsodium's crypto_box_seal_open under the converted key.
    bob_x = BOB.signing_key.to_curve25519_private_key()
    alice_x = ALICE.signing_key.to_curve25519_private_key()
    assert nacl.public.SealedBox(bob_x).decrypt(to) == text.encode()
    assert nacl.public.SealedBox(alice_x).decrypt(me) == text.encode()
    # Sealing is randomised (fresh ephemeral key each time).
    assert box.seal_dm(ALICE, BOB.public, text) != enc


def test_dm_boxes_are_not_interchangeable() -> None:
    enc = box.seal_dm(ALICE, BOB.public, "hi")
    with pytest.raises(BadCiphertext):
        box.open_dm(BOB, enc, authored_by_me=True)  # the author's box
    with pytest.raises(BadCiphertext):
        box.open_dm(ALICE, enc, authored_by_me=False)  # the recipient's box


@pytest.mark.parametrize("authored_by_me", [False, True])
def test_third_identity_cannot_open_a_dm(authored_by_me: bool) -> None:
    enc = box.seal_dm(ALICE, BOB.public, "for bob only")
    with pytest.raises(BadCiphertext):
        box.open_dm(CAROL, enc, authored_by_me=authored_by_me)


@pytest.mark.parametrize("which", ["to", "me"])
@pytest.mark.parametrize("where", [0, 31, 32, 40, -1])
def test_tampered_dm_does_not_open(which: str, where: int) -> None:
    enc = box.seal_dm(ALICE, BOB.public, "do not touch")
    to, me = msgspec.msgpack.decode(enc)
    boxes = {"to": bytearray(to), "me": bytearray(me)}
    boxes[which][where] ^= 0x01
    tampered = msgspec.msgpack.encode([bytes(boxes["to"]), bytes(boxes["me"])])
    reader, mine = (BOB, False) if which == "to" else (ALICE, True)
    with pytest.raises(BadCiphertext):
        box.open_dm(reader, tampered, authored_by_me=mine)


def test_dm_of_invalid_utf8_does_not_open() -> None:
    bob_x = BOB.signing_key.verify_key.to_curve25519_public_key()
    sealed = nacl.public.SealedBox(bob_x).encrypt(b"\xff\xfe not utf-8")
    enc = msgspec.msgpack.encode([sealed, sealed])
    with pytest.raises(BadCiphertext):
        box.open_dm(BOB, enc, authored_by_me=False)


@pytest.mark.parametrize(
    "enc",
    [
        b"",
        b"\x00" * 10,
        b"\xc1",  # never used in MessagePack
        msgspec.msgpack.encode([b"", b""]),
        msgspec.msgpack.encode([b"x" * 47, b"x" * 47]),  # shorter than a sealed box
        msgspec.msgpack.encode([b"x" * 80, b"x" * 80]),  # long enough, not a box
        msgspec.msgpack.encode([b"only one"]),
        msgspec.msgpack.encode([1, 2]),
        msgspec.msgpack.encode({"to": b"x" * 80, "me": b"x" * 80}),
        msgspec.msgpack.encode("a string"),
        msgspec.msgpack.encode([b"x" * 80, b"x" * 80]) + b"trailing",
    ],
    ids=[
        "empty",
        "zeros",
        "bad-msgpack",
        "empty-boxes",
        "short-boxes",
        "random-boxes",
        "one-box",
        "ints",
        "map",
        "string",
        "trailing",
    ],
)
@pytest.mark.parametrize("authored_by_me", [False, True])
def test_garbage_dm_raises_bad_ciphertext(enc: bytes, authored_by_me: bool) -> None:
    with pytest.raises(BadCiphertext) as exc:
        box.open_dm(BOB, enc, authored_by_me=authored_by_me)
    assert isinstance(exc.value, ChinwagError)


# --- the Ed25519 -> X25519 conversion is the standard birational map ----------------

P = 2**255 - 19


def montgomery_u_from_edwards(ed_public: bytes) -> bytes:
    """u = (1 + y) / (1 - y) mod p, from the encoded Edwards point (RFC 7748, section 4.1)."""
    y = int.from_bytes(ed_public, "little") & ((1 << 255) - 1)
    u = (1 + y) * pow(1 - y, P - 2, P) % P
    return u.to_bytes(32, "little")


def clamp(scalar: bytes) -> bytes:
    s = bytearray(scalar)
    s[0] &= 248
    s[31] &= 127
    s[31] |= 64
    return bytes(s)


@pytest.mark.parametrize("seed", [b"a" * 32, b"b" * 32, bytes(32), bytes(range(32))])
def test_x25519_keys_are_the_standard_conversion(seed: bytes) -> None:
    ident = Identity.from_seed(seed)
    nacl_public = bytes(ident.signing_key.verify_key.to_curve25519_public_key())
    nacl_private = bytes(ident.signing_key.to_curve25519_private_key())
    # The secret scalar Ed25519 itself uses: SHA-512 of the seed, first half, clamped.
    scalar = hashlib.sha512(seed).digest()[:32]
    assert nacl_private == clamp(scalar)
    # An independent X25519 (OpenSSL via `cryptography`) gives the same public key ...
    independent = (
        X25519PrivateKey.from_private_bytes(scalar)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    assert nacl_public == independent
    # ... which is the birational image of the Ed25519 public key.
    assert nacl_public == montgomery_u_from_edwards(ident.public)
    assert bytes(nacl.public.PrivateKey(nacl_private).public_key) == nacl_public


def test_dm_sealed_to_an_independently_derived_key_opens() -> None:
    # A peer that converts keys with another library interoperates.
    scalar = hashlib.sha512(b"b" * 32).digest()[:32]
    bob_x = (
        X25519PrivateKey.from_private_bytes(scalar)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    sealed = nacl.public.SealedBox(nacl.public.PublicKey(bob_x)).encrypt(b"interop")
    enc = msgspec.msgpack.encode([sealed, sealed])
    assert box.open_dm(BOB, enc, authored_by_me=False) == "interop"


# --- private rooms ------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS, ids=["ascii", "empty", "unicode", "max"])
def test_room_round_trip(text: str) -> None:
    enc = box.seal_room(KEY, text)
    assert box.open_room(KEY, enc) == text
    assert len(enc) == nacl.secret.SecretBox.NONCE_SIZE + len(text.encode()) + 16
    assert len(enc) <= limits.MAX_ENC_BYTES
    assert box.seal_room(KEY, text) != enc  # random nonce
    # The documented format: crypto_secretbox with the nonce prepended.
    nonce, ciphertext = enc[:24], enc[24:]
    assert nacl.secret.SecretBox(KEY).decrypt(ciphertext, nonce) == text.encode()


def test_room_wrong_key_raises_bad_ciphertext() -> None:
    enc = box.seal_room(KEY, "members only")
    with pytest.raises(BadCiphertext):
        box.open_room(OTHER_KEY, enc)


@pytest.mark.parametrize("where", [0, 23, 24, 39, 40, -1])
def test_tampered_room_message_raises_bad_ciphertext(where: int) -> None:
    enc = bytearray(box.seal_room(KEY, "members only"))
    enc[where] ^= 0x80
    with pytest.raises(BadCiphertext):
        box.open_room(KEY, bytes(enc))


@pytest.mark.parametrize(
    ("key", "enc"),
    [
        (KEY, b""),
        (KEY, b"x" * 10),
        (KEY, b"x" * 39),  # nonce + less than a tag
        (KEY, b"x" * 100),
        (b"short", b"x" * 100),  # a corrupt stored key
        (
            KEY,
            nacl.secret.SecretBox(KEY).encrypt(b"\xff\xfe not utf-8"),
        ),
    ],
    ids=["empty", "short", "no-tag", "random", "bad-key", "not-utf8"],
)
def test_garbage_room_message_raises_bad_ciphertext(key: bytes, enc: bytes) -> None:
    with pytest.raises(BadCiphertext):
        box.open_room(key, bytes(enc))


def test_key_check_is_stable_distinct_and_documented() -> None:
    kcv = box.key_check(KEY)
    assert kcv == box.key_check(bytes(KEY))
    assert len(kcv) == box.KCV_BYTES == 8
    assert box.key_check(OTHER_KEY) != kcv
    # BLAKE2b-64("kcv", key=room key), computed with hashlib.
    assert kcv == hashlib.blake2b(b"kcv", key=KEY, digest_size=8).digest()
    # It reveals nothing directly: not a prefix of the key or of an unkeyed hash.
    assert kcv not in KEY
    assert kcv != hashlib.blake2b(KEY, digest_size=8).digest()


# --- wire names ---------------------------------------------------------------------


def assert_wire_name(wire: str) -> None:
    """A name the `Room` wire type accepts and open_message lets through."""
    assert is_valid_name(wire)
    assert 1 <= len(wire) <= limits.MAX_ROOM_CHARS
    assert wire == wire.lower()


@pytest.mark.parametrize("name", ["secret", "ops-team", "q", "x" * limits.MAX_ROOM_CHARS])
def test_private_room_id(name: str) -> None:
    wire = box.private_room_id(name)
    assert wire == box.private_room_id(name)
    assert wire.startswith("p.")
    assert name not in wire[2:]
    assert_wire_name(wire)
    expected = hashlib.sha256(b"chinwag/1 private room id\x00" + name.encode()).hexdigest()[:24]
    assert wire == "p." + expected
    assert box.private_room_id(name + "2") != wire


def test_dm_room() -> None:
    a, b, c = ALICE.peer_id, BOB.peer_id, CAROL.peer_id
    wire = box.dm_room(a, b)
    assert wire == box.dm_room(a, b) == box.dm_room(b, a)
    assert wire.startswith("dm.")
    assert a not in wire and b not in wire
    assert a[:8] not in wire and b[:8] not in wire
    assert_wire_name(wire)
    low, high = sorted((a, b))
    digest = hashlib.sha256(b"chinwag/1 dm room\x00" + f"{low}|{high}".encode()).hexdigest()
    assert wire == "dm." + digest[:24]
    assert len({box.dm_room(a, b), box.dm_room(a, c), box.dm_room(b, c)}) == 3


# --- safety numbers -----------------------------------------------------------------


def test_safety_number_is_symmetric_and_well_formed() -> None:
    number = box.safety_number(ALICE.public, BOB.public)
    assert number == box.safety_number(BOB.public, ALICE.public)
    assert re.fullmatch(r"\d{5}( \d{5}){11}", number)
    assert len(number.replace(" ", "")) == 60


def test_safety_number_differs_for_different_pairs() -> None:
    ab = box.safety_number(ALICE.public, BOB.public)
    ac = box.safety_number(ALICE.public, CAROL.public)
    bc = box.safety_number(BOB.public, CAROL.public)
    assert len({ab, ac, bc}) == 3


def test_safety_number_matches_the_documented_formula() -> None:
    low, high = sorted((ALICE.public, BOB.public))
    digest = hashlib.sha512(b"chinwag/1 safety number\x00" + low + high).digest()
    groups = [f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 60, 5)]
    assert box.safety_number(ALICE.public, BOB.public) == " ".join(groups)

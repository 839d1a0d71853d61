"""The known-answer vectors of docs/protocol.md (section 19), recomputed with the code.

Every fenced block of docs/protocol.md whose info string is `kat NAME` is a
vector: `key = value` lines (a line that starts with a space continues the
previous value). The inputs are read from the document, the outputs are
computed by chinwag's own code (and, where the document spells out a
construction, once more by hand from that description) and must equal the
document's, so the document and the code cannot drift apart.

Run `python tests/unit/test_vectors.py` to print every block with the outputs
the code computes today (to write the section after a deliberate change).
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import unicodedata
import warnings
from collections.abc import Callable
from pathlib import Path

import msgspec
import nacl.bindings
import nacl.hash
import nacl.public
import nacl.secret
import pytest
from argon2.low_level import Type, hash_secret_raw

from chinwag import limits
from chinwag.crypto import box
from chinwag.crypto.identity import Identity, fingerprint, short_id
from chinwag.crypto.noise import static_public
from chinwag.protocol import messages as m
from chinwag.protocol.chat import make_message, open_message
from chinwag.protocol.discovery import encode_beacon, parse_beacon
from chinwag.protocol.names import is_valid_name
from chinwag.protocol.presence import make_record, open_record, verify_record
from chinwag.protocol.session import HandshakeComplete, LocalInfo, Session
from chinwag.protocol.transfer import (
    FILE_ID_CONTEXT,
    OFFER_MARK,
    decode_offer,
    digest_root,
    encode_offer,
    file_id,
    new_offer,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_BLOCK = re.compile(r"^```kat ([a-z0-9-]+)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)

Vector = dict[str, str]


def parse_vectors(text: str) -> dict[str, Vector]:
    """Return every `kat` block of a markdown text: name -> {key: value}."""
    blocks: dict[str, Vector] = {}
    for match in _BLOCK.finditer(text):
        name, content = match.group(1), match.group(2)
        assert name not in blocks, f"vector {name!r} appears twice"
        fields: Vector = {}
        key = ""
        for line in content.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace():
                assert key, f"{name}: continuation line before any key"
                fields[key] += line.strip()
                continue
            key, sep, value = line.partition("=")
            assert sep, f"{name}: not a `key = value` line: {line!r}"
            key = key.strip()
            assert key not in fields, f"{name}: key {key!r} twice"
            fields[key] = value.strip()
        blocks[name] = fields
    return blocks


def h(value: str) -> bytes:
    """Decode a hex value of a vector."""
    return bytes.fromhex(value)


def tcp(noise_message: bytes) -> bytes:
    """Return one TCP frame: the 2-byte big-endian length, then the Noise message."""
    return len(noise_message).to_bytes(2, "big") + noise_message


# --- the computations: inputs of a vector -> every output --------------------


def identity(v: Vector) -> Vector:
    ident = Identity.from_seed(h(v["seed"]))
    pid = ident.peer_id
    # The peer id as section 2 describes it.
    assert pid == base64.b32encode(ident.public).decode().rstrip("=").lower()
    curve_private = ident.signing_key.to_curve25519_private_key()
    # Section 16.1: SHA-512 of the seed, first half, clamped.
    clamped = bytearray(hashlib.sha512(h(v["seed"])).digest()[:32])
    clamped[0] &= 248
    clamped[31] = (clamped[31] & 127) | 64
    assert bytes(curve_private) == bytes(clamped)
    return {
        "public": ident.public.hex(),
        "peer_id": pid,
        "short_id": short_id(pid),
        "fingerprint": fingerprint(pid),
        "x25519_private": bytes(curve_private).hex(),
        "x25519_public": bytes(curve_private.public_key).hex(),
    }


def safety_number(v: Vector) -> Vector:
    a, b = h(v["public_a"]), h(v["public_b"])
    number = box.safety_number(a, b)
    assert number == box.safety_number(b, a), "the safety number is the same on both sides"
    return {"safety_number": number}


def chat_message(v: Vector) -> Vector:
    author = Identity.from_seed(h(v["seed"]))
    msg = make_message(author, v["room"], v["nick"], int(v["ts"]), int(v["seq"]), v["text"])
    # What arrives is accepted, with the same id, by the receiving side of the code.
    received = open_message(msg.raw_body, msg.sig, check_signature=True)
    assert received.id == msg.id and received.body == msg.body
    # The id as section 7.3 describes it.
    assert msg.id == hashlib.sha256(msg.raw_body).hexdigest()[:32]
    return {
        "signed": (m.CHAT_CONTEXT + msg.raw_body).hex(),
        "body": msg.raw_body.hex(),
        "sig": msg.sig.hex(),
        "id": msg.id,
        "frame_live": m.encode(m.Chat(body=msg.raw_body, sig=msg.sig)).hex(),
        "frame_hist": m.encode(m.Chat(body=msg.raw_body, sig=msg.sig, hist=True)).hex(),
    }


def _drain(session: Session) -> list[object]:
    events: list[object] = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def noise_handshake(v: Vector) -> Vector:
    caps = tuple(c for c in v["caps"].split(",") if c)
    sides = []
    for who, initiator in (("i", True), ("r", False)):
        local = LocalInfo.create(
            Identity.from_seed(h(v[f"{who}_seed"])),
            h(v[f"{who}_static"]),
            v[f"{who}_nick"],
            int(v[f"{who}_port"]),
            caps,
        )
        with warnings.catch_warnings():
            # noiseprotocol warns when an ephemeral key is preset, which only vectors do.
            warnings.filterwarnings("ignore", message="One of ephemeral keypairs is already set")
            session = Session(local, initiator, 0.0, ephemeral_private=h(v[f"{who}_ephemeral"]))
        sides.append((local, session))
    (i_local, init), (r_local, resp) = sides
    msg1 = init.data_to_send()
    resp.receive_data(msg1, 0.0)
    msg2 = resp.data_to_send()
    init.receive_data(msg2, 0.0)
    msg3 = init.data_to_send()
    resp.receive_data(msg3, 0.0)
    opened = [_drain(init), _drain(resp)]
    assert [type(e) for events in opened for e in events] == [HandshakeComplete] * 2, opened
    assert init.handshake_hash == resp.handshake_hash
    # Transport: the initiator's first two frames, then the responder's first.
    init.send_encoded(h(v["i_plain0"]))
    i_wire0 = init.data_to_send()
    init.send_encoded(h(v["i_plain1"]))
    i_wire1 = init.data_to_send()
    resp.send_encoded(h(v["r_plain0"]))
    r_wire0 = resp.data_to_send()
    # Each side decrypts what the other sent (the chat frame arrives as a frame event).
    resp.receive_data(i_wire0 + i_wire1, 0.0)
    init.receive_data(r_wire0, 0.0)
    assert not resp.closed and not init.closed
    return {
        "i_static_public": static_public(h(v["i_static"])).hex(),
        "r_static_public": static_public(h(v["r_static"])).hex(),
        "prelude": m.encode(m.Prelude(proto=m.PROTOCOL_NAME, v=m.PROTOCOL_VERSION)).hex(),
        "i_binding_sig": i_local.binding_sig.hex(),
        "r_binding_sig": r_local.binding_sig.hex(),
        "i_hello": i_local.hello().hex(),
        "r_hello": r_local.hello().hex(),
        "msg1": msg1.hex(),
        "msg2": msg2.hex(),
        "msg3": msg3.hex(),
        "handshake_hash": init.handshake_hash.hex(),
        "i_wire0": i_wire0.hex(),
        "i_wire1": i_wire1.hex(),
        "r_wire0": r_wire0.hex(),
    }


def _seal_by_hand(recipient_x25519: bytes, ephemeral_private: bytes, data: bytes) -> bytes:
    """crypto_box_seal as the document describes it, with a given ephemeral key."""
    eph = nacl.public.PrivateKey(ephemeral_private)
    epk = bytes(eph.public_key)
    nonce = nacl.hash.blake2b(
        epk + recipient_x25519, digest_size=24, encoder=nacl.encoding.RawEncoder
    )
    boxed = nacl.public.Box(eph, nacl.public.PublicKey(recipient_x25519)).encrypt(data, nonce)
    return epk + boxed.ciphertext


def dm(v: Vector) -> Vector:
    author = Identity.from_seed(h(v["author_seed"]))
    recipient = Identity.from_seed(h(v["recipient_seed"]))
    data = v["text"].encode()
    to = _seal_by_hand(
        nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(recipient.public),
        h(v["to_ephemeral"]),
        data,
    )
    me = _seal_by_hand(
        nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(author.public),
        h(v["me_ephemeral"]),
        data,
    )
    enc = msgspec.msgpack.encode([to, me])
    # The code opens what the document's construction sealed, on both sides.
    assert box.open_dm(recipient, enc, authored_by_me=False) == v["text"]
    assert box.open_dm(author, enc, authored_by_me=True) == v["text"]
    room = box.dm_room(author.peer_id, recipient.peer_id)
    assert room == box.dm_room(recipient.peer_id, author.peer_id)
    msg = make_message(author, room, v["nick"], int(v["ts"]), int(v["seq"]), "", enc)
    return {
        "dm_room": room,
        "to": to.hex(),
        "me": me.hex(),
        "enc": enc.hex(),
        "body": msg.raw_body.hex(),
        "id": msg.id,
    }


def private_room(v: Vector) -> Vector:
    name, passphrase = v["name"], v["passphrase"]
    salt = hashlib.sha256(b"chinwag/1 private room salt\x00" + name.encode()).digest()[:16]
    key = box.derive_room_key(name, passphrase)
    # The reference Argon2 implementation (not libsodium) agrees on the parameters.
    assert key == hash_secret_raw(
        passphrase.encode(), salt, time_cost=2, memory_cost=65536, parallelism=1,
        hash_len=32, type=Type.ID, version=19,
    )  # fmt: skip
    nonce = h(v["nonce"])
    enc = bytes(nacl.secret.SecretBox(key).encrypt(v["text"].encode(), nonce))
    assert box.open_room(key, enc) == v["text"]
    wire = box.private_room_id(name)
    kcv = box.key_check(key)
    rooms = m.Rooms(joined=[m.RoomAnnounce(room="general"), m.RoomAnnounce(room=wire, kcv=kcv)])
    return {
        "salt": salt.hex(),
        "key": key.hex(),
        "kcv": kcv.hex(),
        "wire_room": wire,
        "enc": enc.hex(),
        "rooms_frame": m.encode(rooms).hex(),
    }


def _pattern(size: int) -> bytes:
    """The vector file: byte i is i mod 256."""
    return bytes(i % 256 for i in range(size))


def file_offer(v: Vector) -> Vector:
    author = Identity.from_seed(h(v["author_seed"]))
    data = _pattern(int(v["size"]))
    chunk = int(v["chunk"])
    digests = b"".join(
        hashlib.sha256(data[i : i + chunk]).digest() for i in range(0, len(data), chunk)
    )
    salt = h(v["salt"])
    offer = new_offer(
        author.public,
        salt,
        v["name"],
        len(data),
        hashlib.sha256(data).hexdigest(),
        digest_root(digests),
        chunk,
    )
    text = encode_offer(offer)
    assert text.startswith(OFFER_MARK)
    assert decode_offer(text) == offer
    fid = hashlib.sha256(FILE_ID_CONTEXT + author.public + salt).hexdigest()[:32]
    assert fid == file_id(author.public, salt.hex()) == offer.fid
    return {
        "sha256": offer.sha256,
        "chunk_digests": digests.hex(),
        "root": offer.root,
        "fid": offer.fid,
        "offer_json": text[len(OFFER_MARK) :],
        "fwho_frame": m.encode(m.FileWho(fid=h(offer.fid))).hex(),
    }


def beacon(v: Vector) -> Vector:
    datagram = encode_beacon(v["peer_id"], int(v["port"]), v["nick"])
    parsed = parse_beacon(datagram)
    assert parsed is not None and parsed.peer_id == v["peer_id"]
    return {"datagram": datagram.hex()}


def presence_record(v: Vector) -> Vector:
    author = Identity.from_seed(h(v["seed"]))
    rooms = [(room, b"") for room in v["rooms"].split(",")]
    record = make_record(
        author, v["nick"], int(v["seq"]), int(v["expires"]), v["gone"] == "true", rooms,
        v["addrs"].split(","),
    )  # fmt: skip
    received = open_record(record.signed)
    assert received == record and verify_record(received)
    return {
        "signed": (m.PRESENCE_CONTEXT + record.signed.body).hex(),
        "body": record.signed.body.hex(),
        "sig": record.signed.sig.hex(),
        "frame": m.encode(m.Presence(recs=[record.signed])).hex(),
    }


def name_chars(v: Vector) -> Vector:
    """Nothing to compute: the rule is checked over every code point below."""
    return {}


COMPUTE: dict[str, Callable[[Vector], Vector]] = {
    "identity-alice": identity,
    "identity-bob": identity,
    "safety-number": safety_number,
    "chat-message": chat_message,
    "noise-xx": noise_handshake,
    "dm": dm,
    "private-room": private_room,
    "file-offer": file_offer,
    "beacon": beacon,
    "name-chars": name_chars,
    "presence-record": presence_record,
}


# --- the tests -----------------------------------------------------------------


def doc_vectors() -> dict[str, Vector]:
    return parse_vectors(DOC.read_text(encoding="utf-8"))


def test_the_document_has_every_vector_and_no_unknown_one() -> None:
    assert sorted(doc_vectors()) == sorted(COMPUTE)


@pytest.mark.parametrize("name", sorted(COMPUTE))
def test_vector_matches_the_code(name: str) -> None:
    vector = doc_vectors()[name]
    computed = COMPUTE[name](vector)
    documented = {key: vector.get(key) for key in computed}
    assert documented == computed


def test_vectors_chain_together() -> None:
    """The blocks use the same keys and messages where the document says they do."""
    v = doc_vectors()
    alice, bob = v["identity-alice"], v["identity-bob"]
    assert (v["safety-number"]["public_a"], v["safety-number"]["public_b"]) == (
        alice["public"],
        bob["public"],
    )
    assert v["chat-message"]["seed"] == v["dm"]["author_seed"] == alice["seed"]
    assert v["noise-xx"]["i_seed"] == alice["seed"] and v["noise-xx"]["r_seed"] == bob["seed"]
    assert v["noise-xx"]["i_plain0"] == v["chat-message"]["frame_live"]
    assert v["dm"]["recipient_seed"] == bob["seed"]
    assert v["file-offer"]["author_seed"] == alice["seed"]
    assert v["beacon"]["peer_id"] == alice["peer_id"]
    assert v["presence-record"]["seed"] == alice["seed"]
    # The X25519 keys of the identities are what the sealed boxes are addressed to.
    to, me = h(v["dm"]["to"]), h(v["dm"]["me"])
    assert (
        nacl.bindings.crypto_box_seal_open(to, h(bob["x25519_public"]), h(bob["x25519_private"]))
        == v["dm"]["text"].encode()
    )
    assert (
        nacl.bindings.crypto_box_seal_open(
            me, h(alice["x25519_public"]), h(alice["x25519_private"])
        )
        == v["dm"]["text"].encode()
    )


def _documented_name_char(v: Vector, char: str) -> bool:
    return (
        unicodedata.category(char) in v["categories"].split()
        or f"{ord(char):04x}" in v["also"].split()
    )


def test_name_rule_in_code_points_is_the_code_rule() -> None:
    """Every code point is a name character exactly when the document says so."""
    v = doc_vectors()["name-chars"]
    wrong = [
        f"U+{cp:04X}"
        for cp in range(0x110000)
        if is_valid_name(chr(cp)) != _documented_name_char(v, chr(cp))
    ]
    assert not wrong, wrong[:20]


def test_room_lowercase_rule_examples() -> None:
    """The canonical-form examples of the document behave as it says."""
    v = doc_vectors()["name-chars"]
    for room in v["canonical"].split(","):
        assert room == room.lower() and is_valid_name(room), room
    for room in v["not_canonical"].split(","):
        assert room != room.lower(), room
    assert "ΑΣ".lower() == "ας" and not is_valid_name("İ".lower())


def test_the_limits_table_has_the_values_of_limits_py() -> None:
    """Section 14 of the document lists the bounds of src/chinwag/limits.py with their values."""
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("## 14. Limits") : text.index("## 15. Worked examples")]
    checked = []
    for line in table.splitlines():
        row = re.match(r"\| ((?:`[A-Z_0-9]+`(?:, )?)+) \| ([^|]+) \|", line)
        if row is None:
            continue
        names = re.findall(r"`([A-Z_0-9]+)`", row.group(1))
        values = row.group(2).split(",") if len(names) > 1 else [row.group(2)]
        for name, value in zip(names, values, strict=True):
            number = value.strip().split(" (")[0].replace(" ", "")
            expected = 2 ** int(number[2:]) if number.startswith("2^") else float(number)
            assert getattr(limits, name) == expected, (name, value)
            checked.append(name)
    assert len(checked) > 50 and "MAX_FRAME" in checked and "MAX_ROOMS" in checked


def main(path: Path = DOC) -> None:
    """Print every block with the outputs the code computes from the document's inputs."""
    for name, vector in parse_vectors(path.read_text(encoding="utf-8")).items():
        out = COMPUTE[name](vector)
        print(f"```kat {name}")
        for key, value in {**vector, **out}.items():
            lines = [value[i : i + 64] for i in range(0, len(value), 64)] or [""]
            if " " in value:
                lines = [value]
            print(f"{key} = {lines[0]}")
            for rest in lines[1:]:
                print(f"    {rest}")
        print("```\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DOC)

"""protocol/discovery.py: beacons are parsed, or dropped as None, never an exception."""

from __future__ import annotations

import ipaddress
import random

import msgspec
import pytest

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.net.discovery import Discovery
from chinwag.protocol.discovery import (
    MAGIC,
    Beacon,
    encode_beacon,
    parse_beacon,
    source_allowed,
)
from chinwag.protocol.messages import PROTOCOL_VERSION

PEER = Identity.from_seed(bytes(range(32))).peer_id


def raw_beacon(*fields: object) -> bytes:
    return MAGIC + msgspec.msgpack.encode(list(fields))


def test_round_trip() -> None:
    data = encode_beacon(PEER, 47475, "alice")
    assert data.startswith(MAGIC)
    assert len(data) <= limits.MAX_BEACON_BYTES
    assert parse_beacon(data) == Beacon(PROTOCOL_VERSION, PEER, 47475, "alice")


def test_encoding_is_the_documented_array() -> None:
    assert encode_beacon(PEER, 1, "bob") == raw_beacon(1, PEER, 1, "bob")


def test_largest_real_beacon_fits_the_limit() -> None:
    data = encode_beacon(PEER, 65535, "é" * limits.MAX_NICK_CHARS)
    assert len(data) <= limits.MAX_BEACON_BYTES
    assert parse_beacon(data) is not None


def test_every_truncation_is_dropped() -> None:
    data = encode_beacon(PEER, 47475, "alice")
    for i in range(len(data)):
        assert parse_beacon(data[:i]) is None


@pytest.mark.parametrize("garbage", [b"\x00", b"x", encode_beacon(PEER, 1, "x")])
def test_trailing_garbage_is_dropped(garbage: bytes) -> None:
    assert parse_beacon(encode_beacon(PEER, 47475, "alice") + garbage) is None


def test_oversized_datagram_is_dropped() -> None:
    data = encode_beacon(PEER, 47475, "alice")
    padded = data + b"\x00" * (limits.MAX_BEACON_BYTES + 1 - len(data))
    assert len(padded) == limits.MAX_BEACON_BYTES + 1
    assert parse_beacon(padded) is None
    assert parse_beacon(b"\xff" * 65507) is None  # the largest UDP payload


@pytest.mark.parametrize("magic", [b"", b"CHWG", b"CHWGa", b"chwgb", b"XXXXX", MAGIC[::-1]])
def test_wrong_magic_is_dropped(magic: bytes) -> None:
    data = encode_beacon(PEER, 47475, "alice")
    assert parse_beacon(magic + data[len(MAGIC) :]) is None


@pytest.mark.parametrize("version", [0, 2, -1, 2**63])
def test_wrong_version_is_dropped(version: int) -> None:
    assert parse_beacon(raw_beacon(version, PEER, 47475, "alice")) is None


@pytest.mark.parametrize(
    "fields",
    [
        (1, PEER, 0, "alice"),  # port 0 cannot be dialled
        (1, PEER, 65536, "alice"),
        (1, PEER, -1, "alice"),
        (1, PEER, "47475", "alice"),
        (1, PEER, 47475, ""),
        (1, PEER, 47475, "a b"),
        (1, PEER, 47475, "evil\x1b[2J"),
        (1, PEER, 47475, "x" * (limits.MAX_NICK_CHARS + 1)),
        (1, PEER.upper(), 47475, "alice"),  # not canonical
        (1, PEER[:-1], 47475, "alice"),
        (1, PEER + "a", 47475, "alice"),
        (1, "1" * 52, 47475, "alice"),
        (1, PEER.encode(), 47475, "alice"),
        (1, PEER, 47475),
        (),
        ("1", PEER, 47475, "alice"),
    ],
)
def test_invalid_fields_are_dropped(fields: tuple[object, ...]) -> None:
    assert parse_beacon(raw_beacon(*fields)) is None


def test_extra_trailing_fields_are_ignored() -> None:
    """Forward compatibility: a later minor version may append fields to the array."""
    assert parse_beacon(raw_beacon(1, PEER, 47475, "alice", "extra")) == Beacon(
        1, PEER, 47475, "alice"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        MAGIC,
        MAGIC + b"\xc1",
        MAGIC + msgspec.msgpack.encode({"v": 1, "peer_id": PEER, "port": 1, "nick": "a"}),
        MAGIC + msgspec.msgpack.encode(None),
        bytes(range(256)),
        b"M-SEARCH * HTTP/1.1\r\n\r\n",  # someone else's discovery protocol
    ],
)
def test_garbage_is_dropped(data: bytes) -> None:
    assert parse_beacon(data) is None


def test_byte_by_byte_equals_whole() -> None:
    """A datagram arrives whole; growing it a byte at a time only parses when complete."""
    data = encode_beacon(PEER, 47475, "alice")
    results = [parse_beacon(data[: i + 1]) for i in range(len(data))]
    assert results[:-1] == [None] * (len(data) - 1)
    assert results[-1] == parse_beacon(data)


# --- where beacons may come from (hardening) --------------------------------------

LAN = [ipaddress.IPv4Network("10.1.0.0/24"), ipaddress.IPv4Network("127.0.0.0/8")]


@pytest.mark.parametrize(
    ("host", "port", "ok"),
    [
        ("10.1.0.7", 47474, True),
        ("127.0.0.1", 47474, True),  # loopback for loopback (nodes on one machine)
        ("10.1.1.7", 47474, False),  # another subnet: routed from afar or spoofed
        ("192.0.2.1", 47474, False),
        ("10.1.0.7", 47475, False),  # not sent from the discovery port
        ("10.1.0.7", 0, False),
        ("::1", 47474, False),
        ("not an address", 47474, False),
    ],
)
def test_beacons_are_believed_only_from_the_discovery_port_of_attached_subnets(
    host: str, port: int, ok: bool
) -> None:
    assert source_allowed(host, port, 47474, LAN) is ok


async def test_discovery_hands_on_only_beacons_from_attached_subnets() -> None:
    heard: list[tuple[str, str, int]] = []

    def on_beacon(peer_id: str, host: str, port: int) -> bool:
        heard.append((peer_id, host, port))
        return False

    own = Identity.from_seed(b"o" * 32).peer_id
    d = Discovery(47474, None, own, lambda: b"", on_beacon, random.Random(1))
    d.networks = LAN
    data = encode_beacon(PEER, 5000, "bob")
    d.datagram_received(data, ("192.0.2.1", 47474))
    d.datagram_received(data, ("10.1.0.9", 40000))
    assert heard == []
    d.datagram_received(data, ("10.1.0.9", 47474))
    assert heard == [(PEER, "10.1.0.9", 5000)]

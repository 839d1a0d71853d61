"""Discovery beacons: the UDP datagram a node broadcasts to say "I am here".

A beacon is MAGIC followed by a MessagePack array [v, peer_id, port, nick].
It is an untrusted hint: it only tells us where to dial; who answers is proven
by the handshake. Anything that is not a well-formed beacon is dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Annotated, Final

import msgspec

from chinwag import limits
from chinwag.crypto.identity import BadIdentity, public_from_peer_id
from chinwag.protocol.messages import PROTOCOL_VERSION, Nick, Port
from chinwag.protocol.names import is_valid_name

MAGIC: Final = b"CHWGb"


class Beacon(msgspec.Struct, frozen=True, array_like=True):
    """Announcement of a node: protocol version, peer id, TCP listen port, nick."""

    v: int
    peer_id: Annotated[str, msgspec.Meta(min_length=52, max_length=52)]
    port: Port
    nick: Nick


_decoder = msgspec.msgpack.Decoder(Beacon)
_encoder = msgspec.msgpack.Encoder()


def encode_beacon(peer_id: str, port: int, nick: str) -> bytes:
    """Return the datagram announcing this node."""
    return MAGIC + _encoder.encode(Beacon(PROTOCOL_VERSION, peer_id, port, nick))


def parse_beacon(data: bytes) -> Beacon | None:
    """Return the beacon in a datagram, or None if it is not a valid one of our version."""
    if len(data) > limits.MAX_BEACON_BYTES or not data.startswith(MAGIC):
        return None
    try:
        beacon = _decoder.decode(data[len(MAGIC) :])
        public_from_peer_id(beacon.peer_id)
    except (msgspec.DecodeError, BadIdentity):
        return None
    if beacon.v != PROTOCOL_VERSION or beacon.port == 0 or not is_valid_name(beacon.nick):
        return None
    return beacon


def source_allowed(
    host: str, src_port: int, discovery_port: int, networks: Iterable[ipaddress.IPv4Network]
) -> bool:
    """Return whether a beacon from host:src_port may be believed at all.

    Real beacons are broadcast from the discovery port to the subnets we are attached
    to, so one from another port or from outside those subnets (loopback for
    loopback) is spoofed or routed from afar: it must not make us dial anyone.
    """
    if src_port != discovery_port:
        return False
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return any(ip in net for net in networks)

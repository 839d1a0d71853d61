"""Addresses on the wire: the text "host:port" (IPv6 as "[h]:p"); one parser, one formatter."""

from __future__ import annotations

import ipaddress

from chinwag.errors import RemoteProtocolError
from chinwag.protocol.reasons import Reason


def parse_addr(text: str) -> tuple[str, int]:
    """Parse "a.b.c.d:port" or "[v6]:port" (IP literals only); raise RemoteProtocolError."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise RemoteProtocolError(f"bad address {text[:64]!r}", Reason.MALFORMED_FRAME) from None
    if not sep or not 0 < port < 65536 or not port_text.isdigit():
        raise RemoteProtocolError(f"bad address {text[:64]!r}", Reason.MALFORMED_FRAME)
    return str(ip), port


def format_addr(host: str, port: int) -> str:
    """Format an address as parse_addr reads it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def dialable(host: str) -> bool:
    """Return False for addresses no punch may target: unspecified, multicast, broadcast."""
    ip = ipaddress.ip_address(host)
    if ip.is_unspecified or ip.is_multicast:
        return False
    return not (isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address(0xFFFFFFFF))

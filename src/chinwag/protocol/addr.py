"""Addresses as text: "host:port" for IPv4, "[host]:port" for IPv6 (one parser for all).

Invites, `Observed` frames and contacts carry addresses in this form. Only IP
literals are accepted: a name would make the dialler ask a resolver, and an
address a peer gave us must not make us look names up.
"""

from __future__ import annotations

import ipaddress

from chinwag.errors import ChinwagError

#: Characters of the longest address text: "[" + 39 (IPv6) + "]:" + 5 (port).
MAX_ADDR_CHARS = 47

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddrError(ChinwagError):
    """An address text is not "host:port" with an IP literal host and a port 1-65535."""


def parse_addr(text: str) -> tuple[str, int]:
    """Return (host, port) of "1.2.3.4:5" or "[::1]:5", the host in canonical form.

    Raises AddrError with a message saying what is wrong.
    """
    if not isinstance(text, str) or not text:
        raise AddrError("an address is HOST:PORT")
    if len(text) > MAX_ADDR_CHARS:
        raise AddrError(f"address too long ({len(text)} characters)")
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise AddrError(f"{text!r} is not HOST:PORT")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise AddrError(f"{text!r}: the port must be 1-65535")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise AddrError(f"{text!r}: the host must be an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and not bracketed:
        raise AddrError(f"{text!r}: write an IPv6 address as [HOST]:PORT")
    if isinstance(ip, ipaddress.IPv4Address) and bracketed:
        raise AddrError(f"{text!r}: brackets are for IPv6 addresses")
    return str(ip), int(port)


def format_addr(host: str, port: int) -> str:
    """Return the address text of (host, port): IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalize_addr(text: str) -> str:
    """Return the canonical text of an address (raises AddrError as parse_addr)."""
    return format_addr(*parse_addr(text))


def ip_of(text: str) -> IPAddress:
    """Return the IP address of an address text (raises AddrError as parse_addr)."""
    return ipaddress.ip_address(parse_addr(text)[0])


#: Networks that are not reachable from the internet, though not all count as "private"
#: in the stdlib sense: carrier-grade NAT space is shared, never a home's public address.
_NOT_PUBLIC_V4 = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]
_NOT_PUBLIC_V6 = [
    ipaddress.IPv6Network(n) for n in ("::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8")
]


def is_public(ip: IPAddress) -> bool:
    """Return whether ip could be a host's address on the internet.

    The documentation networks (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)
    count as public: the NAT lab uses them as its internet.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        return not any(ip in net for net in _NOT_PUBLIC_V6)
    return not any(ip in net for net in _NOT_PUBLIC_V4)


def dialable(host: str) -> bool:
    """Return False for addresses no punch may target: unspecified, multicast, broadcast."""
    ip = ipaddress.ip_address(host)
    if ip.is_unspecified or ip.is_multicast:
        return False
    return not (isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address(0xFFFFFFFF))

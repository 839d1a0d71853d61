"""A classic RFC 3489 STUN server for the NAT lab (enough for miniupnpd's STUN test).

    stun.py IP1 IP2 PORT1 PORT2

Binds UDP on the four (address, port) pairs, prints `ready`, and answers every Binding
Request with a Binding Response carrying MAPPED-ADDRESS (and XOR-MAPPED-ADDRESS when the
request has RFC 5389's magic cookie) plus SOURCE-ADDRESS and CHANGED-ADDRESS. A
CHANGE-REQUEST attribute makes it answer from the other address and/or port, which is how
a client learns whether its NAT filters. Runs until killed.
"""

from __future__ import annotations

import selectors
import socket
import struct
import sys

BINDING_REQUEST = 0x0001
BINDING_RESPONSE = 0x0101
MAPPED_ADDRESS = 0x0001
CHANGE_REQUEST = 0x0003
SOURCE_ADDRESS = 0x0004
CHANGED_ADDRESS = 0x0005
XOR_MAPPED_ADDRESS = 0x8020
COOKIE = 0x2112A442
CHANGE_IP = 0x04
CHANGE_PORT = 0x02


def addr_attr(kind: int, ip: str, port: int) -> bytes:
    """One IPv4 address attribute (type, length 8, family 1, port, address)."""
    return struct.pack(">HHxBH4s", kind, 8, 1, port, socket.inet_aton(ip))


Addr = tuple[str, int]


def answer(req: bytes, src: Addr, me: Addr, other: Addr) -> tuple[bytes, int] | None:
    """The response to one request and the change flags it asked for, or None if not one."""
    if len(req) < 20:
        return None
    mtype, length, cookie = struct.unpack_from(">HHI", req)
    if mtype != BINDING_REQUEST or 20 + length > len(req):
        return None
    flags = 0
    pos = 20
    while pos + 4 <= 20 + length:
        atype, alen = struct.unpack_from(">HH", req, pos)
        if atype == CHANGE_REQUEST and alen == 4:
            (flags,) = struct.unpack_from(">I", req, pos + 4)
        pos += 4 + alen + (-alen % 4)
    attrs = addr_attr(MAPPED_ADDRESS, *src)
    if cookie == COOKIE:
        xport = src[1] ^ (COOKIE >> 16)
        xip = struct.unpack(">I", socket.inet_aton(src[0]))[0] ^ COOKIE
        attrs += struct.pack(">HHxBHI", XOR_MAPPED_ADDRESS, 8, 1, xport, xip)
    attrs += addr_attr(SOURCE_ADDRESS, *me) + addr_attr(CHANGED_ADDRESS, *other)
    return struct.pack(">HH", BINDING_RESPONSE, len(attrs)) + req[4:20] + attrs, flags


def main(argv: list[str]) -> int:
    """Serve until killed."""
    ips, ports = argv[0:2], [int(p) for p in argv[2:4]]
    socks: dict[tuple[int, int], socket.socket] = {}
    sel = selectors.DefaultSelector()
    for i, ip in enumerate(ips):
        for j, port in enumerate(ports):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, port))
            socks[i, j] = s
            sel.register(s, selectors.EVENT_READ, (i, j))
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            i, j = key.data
            req, src = key.fileobj.recvfrom(2048)  # type: ignore[union-attr]
            got = answer(req, src, (ips[i], ports[j]), (ips[1 - i], ports[1 - j]))
            if got is None:
                continue
            resp, flags = got
            ri = 1 - i if flags & CHANGE_IP else i
            rj = 1 - j if flags & CHANGE_PORT else j
            socks[ri, rj].sendto(resp, src)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""TCP from the listening port: port-reusing dials and simultaneous open (hole punching).

Every outgoing connection binds the node's listening port (SO_REUSEADDR +
SO_REUSEPORT), so the NAT mapping peers observe is the one of the listening
port, the same mapping a hole punch uses. When that 4-tuple is taken (a
connection to the same address still in TIME_WAIT) the dial falls back to an
ephemeral port, as before port reuse.

simultaneous_open() connects from the listening port to every address at once:
behind NATs that drop unsolicited SYNs silently, our SYN opens our mapping and
the peer's SYN, sent at about the same time, passes it and completes one of our
pending connects (TCP simultaneous open). The first to complete wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Sequence

log = logging.getLogger(__name__)

#: Errors of bind()/connect() that mean "this local port cannot be used for that peer now".
_PORT_BUSY = (errno.EADDRINUSE, errno.EADDRNOTAVAIL)


def _tcp_socket(family: int) -> socket.socket:
    """Return a non-blocking TCP socket with TCP_NODELAY on.

    asyncio's own loop sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, which a
    socket made here is not (proto 0): chat frames would wait for Nagle's algorithm.
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def reuse_socket(bind_host: str, port: int, family: int = socket.AF_INET) -> socket.socket:
    """Return a non-blocking TCP socket (TCP_NODELAY on) bound to (bind_host, port) with
    port reuse on."""
    sock = _tcp_socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bind_host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def connect_from(
    bind_host: str, local_port: int, host: str, port: int, limit_s: float
) -> socket.socket:
    """Connect to host:port from our listening port (any port if that one is busy or 0).

    Raises OSError / TimeoutError like a plain connect.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, _type, _proto, _name, address = infos[0]
    # Only IPv4 listens (net/manager.py), so only IPv4 dials can share its port.
    reuse = local_port != 0 and family == socket.AF_INET
    if reuse:
        try:
            sock = reuse_socket(bind_host, local_port, family)
        except OSError as exc:
            log.debug("cannot bind port %d for a dial (%s); using any port", local_port, exc)
            reuse = False
    if not reuse:
        sock = _tcp_socket(family)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), limit_s)
    except OSError as exc:
        sock.close()
        if not reuse or exc.errno not in _PORT_BUSY:
            raise
        # The same 4-tuple is still in use (TIME_WAIT of an earlier connection): dial as before.
        sock = _tcp_socket(family)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), limit_s)
        except BaseException:
            sock.close()
            raise
    except BaseException:
        sock.close()
        raise
    return sock


async def simultaneous_open(
    bind_host: str, local_port: int, addrs: Sequence[tuple[str, int]], limit_s: float
) -> tuple[socket.socket | None, bool]:
    """Connect from local_port to every IPv4 address at once; return the first that connects.

    The other attempts are closed. Returns (socket, busy): socket None when none connected
    within limit_s; busy True when a connect found its 4-tuple taken, which means the
    peer's SYN reached our listener first (that connection is the punched one).
    """
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    tasks: dict[asyncio.Future[None], socket.socket] = {}
    for host, port in addrs:
        if ":" in host:  # the listener is IPv4 only: no mapping to share for IPv6
            continue
        try:
            sock = reuse_socket(bind_host, local_port)
        except OSError as exc:
            log.debug("punch: cannot bind port %d: %s", local_port, exc)
            continue
        socks.append(sock)
        tasks[asyncio.ensure_future(loop.sock_connect(sock, (host, port)))] = sock
    winner: socket.socket | None = None
    busy = False
    try:
        pending = set(tasks)
        deadline = loop.time() + limit_s
        while pending and winner is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            done, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            for task in done:
                if winner is None and not task.cancelled() and task.exception() is None:
                    winner = tasks[task]
                elif not task.cancelled() and (error := task.exception()) is not None:
                    log.debug("punch: connect failed: %s", error)
                    busy = busy or (isinstance(error, OSError) and error.errno in _PORT_BUSY)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for sock in socks:
            if sock is not winner:
                sock.close()
    return winner, busy

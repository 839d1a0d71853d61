"""UDP broadcast discovery: send beacons, hear others', hand them to the manager.

Beacons go to the broadcast address of every IPv4 interface (or, with
`--bind ADDR`, of the interface holding ADDR only) and to 255.255.255.255.
The socket is bound with SO_REUSEADDR/SO_REUSEPORT, so several nodes on one
machine share the port and all hear every broadcast, loopback's included.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Callable, Iterator
from typing import cast

import ifaddr

from chinwag import limits
from chinwag.protocol.discovery import parse_beacon, source_allowed

log = logging.getLogger(__name__)

LIMITED_BROADCAST = "255.255.255.255"


def _interface_networks() -> Iterator[ipaddress.IPv4Network]:
    """Yield the IPv4 network of every interface address, in order, repeats included."""
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6
            try:
                yield ipaddress.IPv4Network(f"{ip.ip}/{ip.network_prefix}", strict=False)
            except ValueError:
                continue


def attached_networks() -> list[ipaddress.IPv4Network]:
    """Return the IPv4 networks of every interface (loopback's included), each once."""
    nets: list[ipaddress.IPv4Network] = []
    for net in _interface_networks():
        if net not in nets:
            nets.append(net)
    return nets


def broadcast_targets(bind: str | None) -> list[str]:
    """Return the broadcast addresses to send beacons to."""
    bind_ip = None if bind in (None, "", "0.0.0.0") else ipaddress.ip_address(bind)
    targets: list[str] = []
    for net in _interface_networks():
        if net.prefixlen >= 31:
            continue
        if bind_ip is not None and bind_ip not in net:
            continue
        addr = str(net.broadcast_address)
        if addr not in targets:
            targets.append(addr)
    if bind_ip is None:
        targets.append(LIMITED_BROADCAST)
    return targets


class Discovery(asyncio.DatagramProtocol):
    """Beacon sender and listener."""

    def __init__(
        self,
        port: int,
        bind: str | None,
        own_peer_id: str,
        beacon: Callable[[], bytes],
        on_beacon: Callable[[str, str, int], bool],
        rng: random.Random,
    ) -> None:
        self.port = port
        self.bind = bind
        self.own_peer_id = own_peer_id
        self._beacon = beacon
        self._on_beacon = on_beacon
        self._rng = rng
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_answer = -1e9
        self._answer_pending: asyncio.TimerHandle | None = None
        self._send_errors_logged: set[str] = set()
        self._bad_logged = False
        self._foreign_logged = False
        #: Refreshed with every periodic beacon (interfaces come and go).
        self.networks: list[ipaddress.IPv4Network] = []

    async def start(self) -> None:
        """Bind the discovery port and send the first beacon."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        # Broadcasts are only delivered to sockets bound to the wildcard address.
        sock.bind(("", self.port))
        sock.setblocking(False)
        await self._loop.create_datagram_endpoint(lambda: self, sock=sock)
        self.networks = attached_networks()
        self.send_beacon()
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._answer_pending is not None:
            self._answer_pending.cancel()
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so no isinstance check.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        beacon = parse_beacon(data)
        if beacon is None:
            if not self._bad_logged:
                self._bad_logged = True
                log.info("dropping malformed datagram from %s (logged once)", addr[0])
            return
        if beacon.peer_id == self.own_peer_id:
            return
        host = str(addr[0])
        if not source_allowed(host, addr[1], self.port, self.networks):
            if not self._foreign_logged:
                self._foreign_logged = True
                log.info(
                    "ignoring a beacon from %s:%d: not from the discovery port of an "
                    "attached subnet (logged once)",
                    host,
                    addr[1],
                )
            return
        if self._on_beacon(beacon.peer_id, host, beacon.port):
            # An unknown peer: answer at once so it learns about us without waiting.
            self._answer()

    def _answer(self) -> None:
        # Rate-limited, but a suppressed answer is postponed, not dropped:
        # a peer that started just after another must still hear us at once.
        if self._answer_pending is not None:
            return
        now = self._loop.time()
        wait = self._last_answer + limits.BEACON_ANSWER_MIN_GAP_S - now
        if wait <= 0:
            self._send_answer()
        else:
            self._answer_pending = self._loop.call_later(wait, self._send_answer)

    def _send_answer(self) -> None:
        self._answer_pending = None
        self._last_answer = self._loop.time()
        self.send_beacon()

    def error_received(self, exc: Exception) -> None:
        log.debug("discovery socket error: %s", exc)

    def send_beacon(self) -> None:
        """Broadcast one beacon to every target."""
        if self._transport is None:
            return
        data = self._beacon()
        for target in broadcast_targets(self.bind):
            try:
                self._transport.sendto(data, (target, self.port))
            except OSError as exc:
                if target not in self._send_errors_logged:
                    self._send_errors_logged.add(target)
                    log.debug("cannot send beacon to %s: %s", target, exc)

    def _schedule(self) -> None:
        jitter = 1 + limits.BEACON_JITTER * (2 * self._rng.random() - 1)
        self._timer = self._loop.call_later(limits.BEACON_INTERVAL_S * jitter, self._tick)

    def _tick(self) -> None:
        self.networks = attached_networks()
        self.send_beacon()
        self._schedule()

"""This machine's own addresses, and a cheap watch for their changes (issue 14).

A changed set of interface addresses (a new DHCP lease, a switch to a phone's hotspot)
means contacts may now be reachable another way: the node redials them at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable

import ifaddr

from chinwag import limits
from chinwag.protocol.addr import format_addr

log = logging.getLogger(__name__)


def interface_ips() -> list[str]:
    """Return the IPv4 addresses of this machine's interfaces, each once, in order."""
    ips: list[str] = []
    try:
        adapters = ifaddr.get_adapters()
    except OSError as exc:  # no interfaces to read: nothing to offer, not an error
        log.debug("cannot read interface addresses: %s", exc)
        return ips
    for adapter in adapters:
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and ip.ip not in ips:
                ips.append(ip.ip)
    return ips


def lan_addrs(bind: str, port: int, ips: list[str] | None = None) -> list[str]:
    """Return the "host:port" addresses peers on our networks may dial us at.

    With a specific `bind` address, that one only. Loopback and link-local addresses
    only when there is nothing else (one machine, or a test in a network namespace).
    """
    if bind not in ("", "0.0.0.0"):
        return [format_addr(bind, port)]
    ips = interface_ips() if ips is None else ips
    usable = []
    for text in ips:
        ip = ipaddress.ip_address(text)
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
            usable.append(text)
    chosen = usable or [t for t in ips if ipaddress.ip_address(t).is_loopback]
    return [format_addr(ip, port) for ip in chosen]


class NetWatch:
    """Polls the interface addresses every NETWORK_POLL_S; calls on_change when they change
    (and on_poll, if given, after every poll)."""

    def __init__(
        self,
        on_change: Callable[[list[str]], None],
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        self._on_change = on_change
        self._on_poll = on_poll
        self.ips = interface_ips()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(limits.NETWORK_POLL_S)
            # ifaddr reads netlink: well under a millisecond, fine on the loop.
            ips = interface_ips()
            if sorted(ips) != sorted(self.ips):
                log.info("interface addresses changed: %s -> %s", self.ips, ips)
                self.ips = ips
                try:
                    self._on_change(ips)
                except Exception:
                    log.exception("network change handler failed")
            if self._on_poll is not None:
                try:
                    self._on_poll()
                except Exception:
                    log.exception("network poll handler failed")

    def close(self) -> None:
        """Stop polling (the task ends at the loop's next turn; nothing to wait for)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

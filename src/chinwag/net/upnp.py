"""Map the node's TCP port on the home router with UPnP-IGD (the miniupnpc library).

Every miniupnpc call blocks (SSDP search, SOAP over HTTP), so each runs in a daemon thread
of its own and the event loop only awaits its result: the loop never blocks, and a search
still running when the node stops does not hold its exit. The mapper keeps one mapping:
discover (bounded by limits.UPNP_DISCOVER_MS), `selectigd` (it returns the IGD even when its
external address is a reserved one, as in the NAT lab), add a mapping of our port with a
lease, renew it at half the lease, delete it on stop. Without an IGD it tries again every
limits.UPNP_RETRY_S. `mapping` is the public "host:port", or None.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from chinwag import limits

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Not worth advertising: an IGD whose own WAN is private sits behind another NAT.
_NOT_PUBLIC = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8")
]
_DESCRIPTION = "chinwag"
_SSDP = ("239.255.255.250", 1900)
#: UPnP error text of an IGD that only grants permanent mappings (error 725).
_ONLY_PERMANENT = "OnlyPermanentLeasesSupported"


@dataclass(frozen=True)
class Mapping:
    """One port mapping held on an IGD."""

    external_ip: str
    external_port: int
    internal_ip: str
    internal_port: int
    lease_s: int

    @property
    def address(self) -> str:
        """The public "host:port" of the mapping."""
        return f"{self.external_ip}:{self.external_port}"


class Igd(Protocol):
    """What the mapper needs of an IGD client (blocking calls, run in worker threads)."""

    def find(self) -> bool: ...
    def add(self, port: int, ports: list[int], lease_s: int) -> Mapping: ...
    def delete(self, mapping: Mapping) -> None: ...


class _Igd:
    """The blocking miniupnpc calls for one mapping (run only in worker threads)."""

    def __init__(self, discover_ms: int) -> None:
        import miniupnpc  # imported here: the node starts without it when UPnP is off

        self.upnp: Any = miniupnpc.UPnP()
        self.upnp.discoverdelay = discover_ms

    def find(self) -> bool:
        """Search the LAN for an IGD and select it; False if none answered."""
        if not _ssdp_routable():
            # Without a route miniupnpc prints its sendto errors on our stderr (the TUI's
            # screen): say nothing, there is no LAN to search.
            return False
        try:
            if self.upnp.discover() <= 0:
                return False
            self.upnp.selectigd()
        except Exception as exc:  # miniupnpc raises bare Exception for every failure
            log.debug("upnp: no IGD: %s", exc)
            return False
        return True

    def add(self, port: int, ports: list[int], lease_s: int) -> Mapping:
        """Map one of `ports` (in order) to our `port`; raise Exception when none is granted."""
        internal = str(self.upnp.lanaddr)
        external_ip = str(self.upnp.externalipaddress())
        last: Exception | None = None
        for eport in ports:
            for lease in (lease_s, 0):
                try:
                    self.upnp.addportmapping(eport, "TCP", internal, port, _DESCRIPTION, "", lease)
                    return Mapping(external_ip, eport, internal, port, lease)
                except Exception as exc:
                    last = exc
                    if lease == 0 or _ONLY_PERMANENT not in str(exc):
                        break
        raise last or Exception("no port to try")

    def delete(self, mapping: Mapping) -> None:
        """Remove the mapping (errors raised)."""
        self.upnp.deleteportmapping(mapping.external_port, "TCP")


def _ssdp_routable() -> bool:
    """Whether a datagram to the SSDP multicast group has a route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(_SSDP)
        except OSError:
            return False
    return True


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking call in a daemon thread of its own; await its result."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def done(result: T | None, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(done, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(done, result, None)

    threading.Thread(target=work, name="chinwag-upnp", daemon=True).start()
    return await fut


def is_public(host: str) -> bool:
    """Whether an IGD's external address is worth advertising (not behind another NAT)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not any(addr in net for net in _NOT_PUBLIC) and not addr.is_unspecified


class UpnpMapper:
    """Keeps the node's TCP port mapped on the LAN's IGD while running."""

    def __init__(
        self,
        port: int,
        rng: random.Random,
        on_change: Callable[[str | None], None],
        discover_ms: int = limits.UPNP_DISCOVER_MS,
        lease_s: int = limits.UPNP_LEASE_S,
        retry_s: float = limits.UPNP_RETRY_S,
        igd_factory: Callable[[int], Igd] | None = None,
    ) -> None:
        self.port = port
        self._rng = rng
        self._on_change = on_change
        self._discover_ms = discover_ms
        self._lease_s = lease_s
        self._retry_s = retry_s
        self._igd_factory: Callable[[int], Igd] = igd_factory or _Igd
        self._igd: Igd | None = None
        self._mapping: Mapping | None = None
        self._task: asyncio.Task[None] | None = None
        #: An AddPortMapping under way: stop() waits for it, so a mapping made just as the
        #: node stops is deleted too (else it stays open on the router for a whole lease).
        self._adding: asyncio.Future[Mapping] | None = None
        #: The mapping last reported through on_change.
        self._told: str | None = None

    @property
    def mapping(self) -> str | None:
        """The mapped public "host:port", or None while there is none."""
        return self._mapping.address if self._mapping is not None else None

    def start(self) -> None:
        """Begin mapping in the background (returns at once)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="chinwag-upnp")

    async def _run(self) -> None:
        while True:
            try:
                held = await self._ensure()
            except Exception as exc:  # a router's error must never stop the node
                log.info("upnp: mapping port %d failed: %s", self.port, exc)
                self._set(None)
                held = False
            lease = self._mapping.lease_s if held and self._mapping is not None else 0
            # Renew at half the lease; a permanent mapping or none: look again later.
            await asyncio.sleep(lease / 2 if lease else self._retry_s)

    async def _ensure(self) -> bool:
        """Add (or renew) the mapping; True when one is held."""
        if self._igd is None:
            igd = await in_thread(lambda: self._igd_factory(self._discover_ms))
            if not await in_thread(igd.find):
                log.info("upnp: no Internet gateway device answered on the LAN")
                return False
            self._igd = igd
        igd = self._igd
        held = self._mapping
        ports = [held.external_port] if held is not None else [self.port]
        ports += [self._rng.randrange(1024, 65536) for _ in range(limits.UPNP_PORT_TRIES - 1)]
        try:
            self._adding = asyncio.ensure_future(
                in_thread(lambda: igd.add(self.port, ports, self._lease_s))
            )
            mapping = await asyncio.shield(self._adding)
        except Exception:
            self._igd = None  # search again next time: the router may have changed
            raise
        if not is_public(mapping.external_ip):
            log.info("upnp: the gateway's address %s is not public: not used", mapping.external_ip)
            with contextlib.suppress(Exception):
                await in_thread(lambda: igd.delete(mapping))
            return False
        if held is None or held.address != mapping.address:
            log.info("upnp: port %d mapped at %s", self.port, mapping.address)
        self._mapping = mapping
        self._set(mapping.address)
        return True

    def _set(self, address: str | None) -> None:
        if address is None:
            self._mapping = None
        if address != self._told:
            self._told = address
            self._on_change(address)

    async def close(self) -> None:
        """Stop renewing and delete the mapping (waiting at most limits.UPNP_DELETE_S)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        mapping, igd = self._mapping, self._igd
        self._mapping = None
        adding, self._adding = self._adding, None
        if adding is not None:
            with contextlib.suppress(Exception):
                mapping = await asyncio.wait_for(asyncio.shield(adding), limits.UPNP_DELETE_S)
        if mapping is None or igd is None:
            return
        try:
            await asyncio.wait_for(in_thread(lambda: igd.delete(mapping)), limits.UPNP_DELETE_S)
            log.info("upnp: mapping %s deleted", mapping.address)
        except Exception as exc:
            log.info("upnp: deleting mapping %s failed: %s", mapping.address, exc)

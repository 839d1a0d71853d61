"""What our own address looks like from outside: the reports of `Observed` frames, summed up.

Right after a handshake each side tells the other the address it sees it at (the
`obs` frame). One report proves nothing (a peer may lie), so an address counts as
ours only when OBS_CONFIRMATIONS reporters from different networks (IPv4 /24, IPv6
/48) saw it. From reports of connections we opened from one local port, the kind of
NAT shows: the same public port towards every peer is an endpoint-independent (cone)
mapping, different ports a symmetric one (the mapping depends on the destination).

Bounds: one report per reporter (its latest), at most MAX_OBS_REPORTERS reporters (the
oldest report goes), reports older than OBS_MAX_AGE_S are ignored. Pure: reporters'
addresses and `now` come in as arguments.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from chinwag import limits
from chinwag.errors import RemoteProtocolError
from chinwag.protocol.addr import AddrError, IPAddress, format_addr, is_public, parse_addr
from chinwag.protocol.reasons import Reason


@dataclass(frozen=True, slots=True)
class Report:
    """One peer's view of us: it saw our connection from its address at `addr`."""

    addr: str
    ip: str
    port: int
    #: Our local port of that connection.
    local_port: int
    #: True if we opened the connection (then `port` is our NAT's mapping of local_port).
    outbound: bool
    #: The reporter's network (its /24 or /48): reporters in one count once.
    group: str
    at: float


def parse_observed(addr: str) -> tuple[str, int]:
    """Return (host, port) of an `obs` frame's address; RemoteProtocolError if unparseable."""
    try:
        return parse_addr(addr)
    except AddrError as exc:
        raise RemoteProtocolError(f"bad observed address: {exc}", Reason.MALFORMED_FRAME) from None


def _group(ip: IPAddress) -> str:
    prefix = limits.OBS_GROUP_PREFIX_V4 if ip.version == 4 else limits.OBS_GROUP_PREFIX_V6
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class Reach:
    """Reports of our address by peers → our confirmed public addresses and NAT kind."""

    def __init__(self, listen_port: int) -> None:
        """listen_port: where we accept connections (outbound reports from it name it)."""
        self.listen_port = listen_port
        self._reports: dict[str, Report] = {}

    def observed(
        self,
        reporter: str,
        reporter_host: str,
        addr: str,
        local_port: int,
        outbound: bool,
        now: float,
    ) -> bool:
        """Take one peer's report; return True if it was kept (it may change the summary).

        Raises RemoteProtocolError if addr is not an address. An implausible report is
        ignored (False): a private address from a public peer, or any non-public one.
        """
        host, port = parse_observed(addr)
        ip = ipaddress.ip_address(host)
        try:
            reporter_ip = ipaddress.ip_address(reporter_host)
        except ValueError:
            return False
        if not is_public(ip):
            # Only public addresses are worth learning (LAN ones come from our interfaces);
            # from a public reporter a private one is also a lie or a broken peer.
            return False
        self._reports.pop(reporter, None)
        self._reports[reporter] = Report(
            format_addr(host, port), host, port, local_port, outbound, _group(reporter_ip), now
        )
        while len(self._reports) > limits.MAX_OBS_REPORTERS:
            del self._reports[next(iter(self._reports))]
        return True

    def _fresh(self, now: float) -> list[Report]:
        return [r for r in self._reports.values() if now - r.at <= limits.OBS_MAX_AGE_S]

    def public_addrs(self, now: float) -> list[str]:
        """Return our public addresses that reach our listening port, best confirmed first.

        An address counts when OBS_CONFIRMATIONS reporters of different networks saw it:
        on connections they opened to us, or that we opened from our listening port.
        """
        groups: dict[str, set[str]] = {}
        for r in self._fresh(now):
            if r.outbound and r.local_port != self.listen_port:
                continue  # the mapping of a passing port: nobody can dial us there
            groups.setdefault(r.addr, set()).add(r.group)
        confirmed = [
            (len(g), addr) for addr, g in groups.items() if len(g) >= limits.OBS_CONFIRMATIONS
        ]
        confirmed.sort(key=lambda c: (-c[0], c[1]))
        return [addr for _n, addr in confirmed[: limits.MAX_PUBLIC_ADDRS]]

    def public_ips(self, now: float) -> list[str]:
        """Return the public IPs confirmed by reporters of different networks (any port)."""
        groups: dict[str, set[str]] = {}
        for r in self._fresh(now):
            groups.setdefault(r.ip, set()).add(r.group)
        return sorted(ip for ip, g in groups.items() if len(g) >= limits.OBS_CONFIRMATIONS)

    def symmetric(self, now: float) -> bool | None:
        """Return True if our NAT maps one local port to different public ports per
        destination, False if to the same one, None while nobody can tell.

        Only reports of connections we opened count, compared per local port and public
        IP, each network of reporters once. A public port seen by OBS_CONFIRMATIONS
        networks is a stable mapping (False), whatever one liar says; failing that,
        different ports from OBS_CONFIRMATIONS networks mean a symmetric NAT.
        """
        seen: dict[tuple[int, str], dict[int, set[str]]] = {}
        for r in self._fresh(now):
            if r.outbound:
                seen.setdefault((r.local_port, r.ip), {}).setdefault(r.port, set()).add(r.group)
        verdict: bool | None = None
        for per_port in seen.values():
            if any(len(groups) >= limits.OBS_CONFIRMATIONS for groups in per_port.values()):
                return False
            if len(set().union(*per_port.values())) >= limits.OBS_CONFIRMATIONS:
                verdict = True
        return verdict

    def summary(self, now: float) -> tuple[list[str], bool | None]:
        """Return (public_addrs, symmetric): what changes of them the node acts upon."""
        return self.public_addrs(now), self.symmetric(now)

"""A LAN built from Linux network namespaces, for LAN tests and benchmarks.

Theory of operation: one "switch" namespace holds a Linux bridge per segment
(so nothing is ever attached to the machine's own interfaces). Each host is a
namespace of its own, joined to a segment by a veth pair whose bridge-side end
lives in the switch namespace and whose host-side end is `eth0`, `eth1`, ...
in the host. Segment `i` is the subnet `10.X.i.0/24` (X picked at random per
lab), and host `n` gets address `.n` on every segment it joins. Hosts get a
default route out of their first interface so that `255.255.255.255`
broadcasts leave them. IP forwarding stays off, so hosts on different
segments cannot reach each other except through an application that relays.

Cutting a host's link is `ip link set <bridge-side veth> down` in the switch
namespace; restoring it sets the veth up again. `close()` deletes every
namespace the lab created (killing stray processes left inside them first)
and is safe to call more than once. Everything needs root.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

IP = "ip"


def ip(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one `ip` command (optionally with `-n NETNS`); raise on failure."""
    argv = [IP] + (["-n", netns] if netns is not None else []) + list(args)
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)
    except subprocess.CalledProcessError as exc:
        msg = f"{' '.join(argv)} failed ({exc.returncode}): {exc.stderr.strip()}"
        raise RuntimeError(msg) from exc


@dataclass
class Segment:
    """One broadcast domain: a bridge in the switch namespace and its subnet."""

    name: str
    index: int
    bridge: str
    prefix: str  # first three octets, e.g. "10.42.0"

    @property
    def subnet(self) -> str:
        """The segment's subnet in CIDR form."""
        return f"{self.prefix}.0/24"


@dataclass
class Host:
    """One host: a namespace with one interface per segment it is attached to."""

    name: str
    index: int
    netns: str
    addresses: dict[str, str] = field(default_factory=dict)  # segment name -> address
    ifnames: dict[str, str] = field(default_factory=dict)  # segment name -> host-side ifname
    links: dict[str, str] = field(default_factory=dict)  # segment name -> bridge-side veth

    @property
    def address(self) -> str:
        """The address on the host's first segment."""
        return next(iter(self.addresses.values()))


class NetLab:
    """A set of namespaces forming one or more bridged segments; delete with close()."""

    def __init__(self, tag: str | None = None, subnet_octet: int | None = None) -> None:
        self.tag = tag or f"cw{os.getpid()}x{random.randrange(16**4):04x}"
        self.octet = subnet_octet if subnet_octet is not None else random.randint(16, 250)
        self.switch_ns = f"{self.tag}-sw"
        self.segments: dict[str, Segment] = {}
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._closed = False
        self._add_netns(self.switch_ns)

    def __enter__(self) -> NetLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _add_netns(self, name: str) -> None:
        """Create a namespace, remember it for teardown, and bring its loopback up."""
        ip("netns", "add", name)
        self._namespaces.append(name)
        ip("link", "set", "lo", "up", netns=name)

    def add_segment(self, name: str = "lan") -> Segment:
        """Create a bridge (a new subnet 10.X.<index>.0/24) in the switch namespace."""
        if name in self.segments:
            raise ValueError(f"segment {name!r} exists")
        index = len(self.segments)
        seg = Segment(name, index, f"br{index}", f"10.{self.octet}.{index}")
        ip("link", "add", seg.bridge, "type", "bridge", netns=self.switch_ns)
        ip("link", "set", seg.bridge, "up", netns=self.switch_ns)
        self.segments[name] = seg
        return seg

    def add_host(self, name: str, segments: Sequence[str] | None = None) -> Host:
        """Create a host namespace attached to the given segments (default: the first one)."""
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists")
        if not self.segments:
            self.add_segment()
        seg_names = list(segments) if segments is not None else [next(iter(self.segments))]
        index = len(self.hosts) + 1
        host = Host(name, index, f"{self.tag}-{name}")
        self._add_netns(host.netns)
        self.hosts[name] = host
        for i, seg_name in enumerate(seg_names):
            seg = self.segments[seg_name]
            ifname = f"eth{i}"
            link = f"v{index}s{seg.index}"
            addr = f"{seg.prefix}.{index}"
            ip("link", "add", link, "type", "veth", "peer", "name", ifname, "netns", host.netns,
               netns=self.switch_ns)  # fmt: skip
            ip("link", "set", link, "master", seg.bridge, "up", netns=self.switch_ns)
            ip("addr", "add", f"{addr}/24", "dev", ifname, netns=host.netns)
            ip("link", "set", ifname, "up", netns=host.netns)
            host.addresses[seg_name] = addr
            host.ifnames[seg_name] = ifname
            host.links[seg_name] = link
        ip("route", "add", "default", "dev", "eth0", netns=host.netns)
        return host

    def _links(self, host: str | Host, segment: str | None) -> list[str]:
        """The bridge-side veths of a host (on one segment, or all)."""
        h = host if isinstance(host, Host) else self.hosts[host]
        if segment is None:
            return list(h.links.values())
        return [h.links[segment]]

    def cut(self, host: str | Host, segment: str | None = None) -> None:
        """Unplug a host's cable(s): set the bridge-side veth(s) down."""
        for link in self._links(host, segment):
            ip("link", "set", link, "down", netns=self.switch_ns)

    def restore(self, host: str | Host, segment: str | None = None) -> None:
        """Plug a host's cable(s) back in: set the bridge-side veth(s) up."""
        for link in self._links(host, segment):
            ip("link", "set", link, "up", netns=self.switch_ns)

    def throttle(self, host: str | Host, mbit: int) -> None:
        """Limit what reaches a host to mbit Mbit/s (a token bucket on its bridge-side veths),
        so a transfer lasts long enough for a test to act in its middle on any machine."""
        for link in self._links(host, None):
            bucket = ["tbf", "rate", f"{mbit}mbit", "burst", "1mb", "latency", "100ms"]
            argv = [IP, "netns", "exec", self.switch_ns, "tc", "qdisc", "add", "dev", link, "root"]
            subprocess.run([*argv, *bucket], check=True, capture_output=True, text=True, timeout=30)

    def exec_argv(self, host: str | Host, *argv: str) -> list[str]:
        """The argv that runs a command inside a host's namespace."""
        h = host if isinstance(host, Host) else self.hosts[host]
        return [IP, "netns", "exec", h.netns, *argv]

    def close(self) -> None:
        """Kill anything left in the lab's namespaces and delete them all."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for ns in reversed(self._namespaces):
            for pid in _netns_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                ip("netns", "del", ns)
            except RuntimeError as exc:
                errors.append(str(exc))
        self._namespaces.clear()
        if errors:
            raise RuntimeError("netlab teardown: " + "; ".join(errors))


def _netns_pids(ns: str) -> list[int]:
    """Pids of processes running inside a named namespace (none if it is gone)."""
    res = subprocess.run([IP, "netns", "pids", ns], capture_output=True, text=True, timeout=30)
    return [int(tok) for tok in res.stdout.split() if tok.isdigit()]


@functools.cache
def unavailable_reason() -> str | None:
    """Why a namespace LAN cannot be built here, or None if it can."""
    if sys.platform != "linux":
        return f"LAN tests need Linux network namespaces (platform is {sys.platform})"
    if os.geteuid() != 0:
        return "LAN tests need root to create network namespaces (run as root)"
    if shutil.which(IP) is None:
        return "LAN tests need iproute2's `ip` command on PATH"
    try:
        with NetLab(tag=f"cw{os.getpid()}probe") as lab:
            lab.add_host("h")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot build a namespace LAN here: {exc}"
    return None

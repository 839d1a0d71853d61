"""A small NAT lab for hole-punch tests and benchmarks: a public bridge, homes behind NATs.

Theory of operation (FACTS.md "NAT lab"): a "switch" namespace holds one bridge for the
"internet" (203.0.113.0/24, documentation addresses, inside the namespaces only) and one
bridge per home LAN (192.168.1.0/24 each, so homes overlap as in life). A public host has
one leg on the internet. A home is a router namespace (leg `wan` on the internet at
203.0.113.<n>, leg `lan` at 192.168.1.1) and one host namespace (192.168.1.2, default
route via the router). The router translates with nftables:

- `cone`: `masquerade` (endpoint-independent mapping, ports kept; filtering is address-and-
  port dependent: a port-restricted cone);
- `symmetric`: `masquerade random` (a new outside port per destination);

it forwards LAN -> WAN and established/related traffic back, and drops anything else from
the WAN silently (no RST, no ICMP), as home routers do.

Every namespace is deleted by close() (processes left inside are killed first). Needs root
and nftables; `unavailable_reason()` says why not. `natlab` (tests/lab/natlab.py) builds the
full matrix; this one stays small on purpose.
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
from dataclasses import dataclass
from types import TracebackType

PUBLIC_PREFIX = "203.0.113"
HOME_PREFIX = "192.168.1"
NAT_KINDS = ("cone", "symmetric")


def run(argv: list[str], stdin: str | None = None) -> str:
    """Run one command; raise RuntimeError with its stderr on failure."""
    try:
        res = subprocess.run(
            argv, input=stdin, check=True, capture_output=True, text=True, timeout=30
        )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{' '.join(argv)} failed: {exc.stderr.strip()}") from exc
    return res.stdout


def ip(*args: str, netns: str | None = None) -> str:
    return run(["ip", *(["-n", netns] if netns else []), *args])


@dataclass
class Home:
    """A home: its router (public address, NAT kind) and its one host."""

    name: str
    kind: str
    router_ns: str
    host_ns: str
    public: str  # the router's WAN address
    host_addr: str = f"{HOME_PREFIX}.2"


class PunchLab:
    """The internet bridge, public hosts and homes behind NATs; close() removes them."""

    def __init__(self) -> None:
        self.tag = f"pl{os.getpid() % 10000}{random.randrange(16**3):03x}"
        self.switch = f"{self.tag}-sw"
        self._namespaces: list[str] = []
        self._links = 0
        self._next_public = 1
        self.public_hosts: dict[str, str] = {}  # name -> netns
        self.homes: dict[str, Home] = {}
        self._closed = False
        try:
            self._netns(self.switch)
            self._bridge("inet")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> PunchLab:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- building -------------------------------------------------------

    def _netns(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)
        ip("link", "set", "lo", "up", netns=name)

    def _bridge(self, name: str) -> None:
        ip("link", "add", name, "type", "bridge", netns=self.switch)
        ip("link", "set", name, "up", netns=self.switch)

    def _plug(self, netns: str, ifname: str, bridge: str, addr: str) -> None:
        """A veth from bridge (in the switch) to ifname in netns, with addr/24."""
        self._links += 1
        link = f"v{self._links}"
        ip("link", "add", link, "type", "veth", "peer", "name", ifname, "netns", netns,
           netns=self.switch)  # fmt: skip
        ip("link", "set", link, "master", bridge, "up", netns=self.switch)
        ip("addr", "add", f"{addr}/24", "dev", ifname, netns=netns)
        ip("link", "set", ifname, "up", netns=netns)

    def _public_addr(self) -> str:
        addr = f"{PUBLIC_PREFIX}.{self._next_public}"
        self._next_public += 1
        return addr

    def add_public_host(self, name: str) -> str:
        """A host on the internet; return its address."""
        ns = f"{self.tag}-{name}"
        self._netns(ns)
        addr = self._public_addr()
        self._plug(ns, "eth0", "inet", addr)
        self.public_hosts[name] = ns
        return addr

    def add_home(self, name: str, kind: str) -> Home:
        """A router of NAT `kind` and one host behind it."""
        if kind not in NAT_KINDS:
            raise ValueError(f"unknown NAT kind {kind!r}")
        home = Home(name, kind, f"{self.tag}-{name}r", f"{self.tag}-{name}", self._public_addr())
        bridge = f"h{len(self.homes)}"
        self._bridge(bridge)
        self._netns(home.router_ns)
        self._plug(home.router_ns, "wan", "inet", home.public)
        self._plug(home.router_ns, "lan", bridge, f"{HOME_PREFIX}.1")
        run(["ip", "netns", "exec", home.router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        masq = "masquerade random" if kind == "symmetric" else "masquerade"
        rules = f"""
table ip nat {{
  chain post {{ type nat hook postrouting priority 100; oifname "wan" {masq}; }}
}}
table ip filter {{
  chain forward {{ type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "lan" oifname "wan" accept
  }}
  chain input {{ type filter hook input priority 0; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" drop
  }}
}}
"""
        run(["ip", "netns", "exec", home.router_ns, "nft", "-f", "-"], stdin=rules)
        self._netns(home.host_ns)
        self._plug(home.host_ns, "eth0", bridge, home.host_addr)
        ip("route", "add", "default", "via", f"{HOME_PREFIX}.1", netns=home.host_ns)
        self.homes[name] = home
        return home

    # --- using ----------------------------------------------------------

    def ns_of(self, name: str) -> str:
        """The namespace of a public host or of a home's host."""
        if name in self.public_hosts:
            return self.public_hosts[name]
        return self.homes[name].host_ns

    def exec_argv(self, name: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_of(name), *argv]

    def flush_conntrack(self) -> None:
        """Forget every NAT mapping (between benchmark tries): each try starts cold."""
        for home in self.homes.values():
            with contextlib.suppress(RuntimeError):
                run(["ip", "netns", "exec", home.router_ns, "conntrack", "-F"])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ns in reversed(self._namespaces):
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for tok in out.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(tok), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._namespaces.clear()


@functools.cache
def unavailable_reason() -> str | None:
    """Why the NAT lab cannot be built here, or None."""
    if sys.platform != "linux":
        return "the NAT lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"the NAT lab needs `{tool}` (apt-get install iproute2 nftables)"
    return None

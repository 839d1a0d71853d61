"""A small internet built from network namespaces: a public bridge, NAT routers, home LANs.

Theory of operation (recipes measured in /work/shared/FACTS.md "NAT lab"):

- One "switch" namespace holds every bridge, so nothing touches the machine's interfaces:
  the public bridge `pub` (203.0.113.0/24, documentation addresses), one bridge per home LAN
  (each 192.168.1.0/24: they never meet) and one per carrier network (100.64.N.0/24).
- A *site* is one place on that internet where a host lives:
  - `public`: the host sits on the public bridge itself (no NAT);
  - `cone`: host 192.168.1.2 behind a router that masquerades (ports kept: an
    endpoint-independent mapping, address-and-port dependent filtering);
  - `symmetric`: the same with `masquerade random` (a new port per destination);
  - `double`: host behind a home router (cone) whose WAN is on a carrier network
    100.64.N.0/24, behind a carrier router (cone) on the public bridge.
- Routers forward only LAN -> WAN and replies (`ct state established,related`); their WAN
  drops everything else silently, like a home router. Every router's ruleset is one
  `table inet filter` shaped the way miniupnpd wants it (its chains exist, empty), so any
  router can also run miniupnpd (`start_miniupnpd`).
- A second public network, 198.51.100.0/24 (bridge `pub2`), joined to the first by a
  "core" router (.1 on both, plain forwarding): sites may live on either.
- A classic RFC 3489 STUN server (tests/lab/stun.py) runs on two public addresses: miniupnpd
  needs it to believe a documentation address can forward ports (FACTS.md).
- After building, every neighbour on every bridge is pinned in the ARP tables (`nud
  permanent`): the kernel's neighbour table is shared by all namespaces and another lab
  filling it would otherwise make our hosts unreachable for seconds.

`close()` kills what runs in the lab's namespaces and deletes them; it is safe to call twice.
Sockets can be made inside any namespace from this process (`socket_in`): a short-lived
thread enters the namespace (setns), creates the socket and leaves; the socket stays there.
Everything needs root, `ip` and `nft`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lan"))

from netlab import _netns_pids, ip

PUBLIC = "203.0.113"
#: The second public network (a site on it is "elsewhere on the internet"): reports of our
#: address from two /24s are what chinwag needs to believe them (protocol/reach.py).
PUBLIC2 = "198.51.100"
#: The public networks by bridge name; the core router joins them at address .1 of each.
PUBLIC_NETS = {"pub": PUBLIC, "pub2": PUBLIC2}
CORE = ".1"
HOME = "192.168.1"
HOME_ROUTER = f"{HOME}.1"
HOME_HOST = f"{HOME}.2"
STUN_IPS = (f"{PUBLIC}.250", f"{PUBLIC}.251")
STUN_PORTS = (3478, 3479)
KINDS = ("public", "cone", "symmetric", "double")
HERE = Path(__file__).resolve().parent
CLONE_NEWNET = 0x40000000


@dataclass
class Leg:
    """One interface of a namespace on a bridge: what ARP pinning needs."""

    netns: str
    ifname: str
    addr: str
    bridge: str
    link: str  # the bridge-side veth in the switch namespace


@dataclass
class Router:
    """A NAT router: WAN leg upstream, LAN leg on its own bridge."""

    netns: str
    wan: Leg
    lan: Leg
    random_ports: bool


@dataclass
class Site:
    """One host somewhere on the lab's internet, with the routers in front of it."""

    name: str
    kind: str
    netns: str
    leg: Leg
    routers: list[Router] = field(default_factory=list)  # outermost first

    @property
    def addr(self) -> str:
        """The host's own address (private behind a NAT)."""
        return self.leg.addr

    @property
    def public_ip(self) -> str:
        """The address the public side sees this host's connections come from."""
        return self.routers[0].wan.addr if self.routers else self.leg.addr

    @property
    def router(self) -> Router | None:
        """The router next to the host (the home router), if any."""
        return self.routers[-1] if self.routers else None


class NatLab:
    """Namespaces forming a public bridge, NAT routers and home LANs; delete with close()."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or f"cn{os.getpid() % 100000}x{random.randrange(16**3):03x}"
        self.switch_ns = f"{self.tag}-sw"
        self.sites: dict[str, Site] = {}
        self.legs: list[Leg] = []
        self.stun_ns: str | None = None
        self._namespaces: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._next_public = {"pub": 10, "pub2": 10}
        self._next_link = 0
        self._bridges: list[str] = []
        self._closed = False
        self._add_netns(self.switch_ns)
        self._bridge("pub")
        self._bridge("pub2")
        core = f"{self.tag}-core"
        self._add_netns(core)
        for bridge, prefix in PUBLIC_NETS.items():
            self._leg(core, f"to{bridge}", bridge, prefix + CORE)
        _run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns=core)

    def __enter__(self) -> NatLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- building ---------------------------------------------------------------------

    def _add_netns(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)
        ip("link", "set", "lo", "up", netns=name)

    def _bridge(self, name: str) -> str:
        ip("link", "add", name, "type", "bridge", netns=self.switch_ns)
        ip("link", "set", name, "up", netns=self.switch_ns)
        self._bridges.append(name)
        return name

    def _public_addr(self, bridge: str = "pub") -> str:
        addr = f"{PUBLIC_NETS[bridge]}.{self._next_public[bridge]}"
        self._next_public[bridge] += 1
        if self._next_public[bridge] >= 250:
            raise RuntimeError("natlab: out of public addresses")
        return addr

    def _to_core(self, netns: str, bridge: str) -> None:
        """Route everything off-link through the core router (the other public network)."""
        ip("route", "replace", "default", "via", PUBLIC_NETS[bridge] + CORE, netns=netns)

    def _leg(self, netns: str, ifname: str, bridge: str, addr: str) -> Leg:
        """Plug a namespace into a bridge with a veth named ifname, address addr/24."""
        link = f"v{self._next_link}"
        self._next_link += 1
        ip("link", "add", link, "type", "veth", "peer", "name", ifname, "netns", netns,
           netns=self.switch_ns)  # fmt: skip
        ip("link", "set", link, "master", bridge, "up", netns=self.switch_ns)
        ip("addr", "add", f"{addr}/24", "dev", ifname, netns=netns)
        ip("link", "set", ifname, "up", netns=netns)
        leg = Leg(netns, ifname, addr, bridge, link)
        self.legs.append(leg)
        return leg

    def _router(
        self, name: str, upstream: str, wan_addr: str, lan_bridge: str, lan_prefix: str,
        random_ports: bool, gateway: str | None = None,
    ) -> Router:  # fmt: skip
        ns = f"{self.tag}-{name}"
        self._add_netns(ns)
        wan = self._leg(ns, "wan", upstream, wan_addr)
        lan = self._leg(ns, "lan", lan_bridge, f"{lan_prefix}.1")
        if gateway is not None:
            ip("route", "add", "default", "via", gateway, netns=ns)
        _run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns=ns)
        _run(["nft", "-f", "-"], netns=ns, stdin=_router_rules(lan_prefix, random_ports))
        return Router(ns, wan, lan, random_ports)

    def add_site(self, name: str, kind: str, bridge: str = "pub") -> Site:
        """Add a host of the given kind (public, cone, symmetric, double) named name, whose
        public side is on `bridge` ("pub": 203.0.113.0/24, "pub2": 198.51.100.0/24)."""
        if kind not in KINDS:
            raise ValueError(f"unknown site kind {kind!r} (one of {KINDS})")
        if name in self.sites:
            raise ValueError(f"site {name!r} exists")
        index = len(self.sites) + 1
        ns = f"{self.tag}-{name}"
        routers: list[Router] = []
        if kind == "public":
            self._add_netns(ns)
            leg = self._leg(ns, "eth0", bridge, self._public_addr(bridge))
            self._to_core(ns, bridge)
        else:
            home = self._bridge(f"h{index}")
            if kind == "double":
                carrier_prefix = f"100.64.{index}"
                carrier = self._bridge(f"c{index}")
                cgn = self._router(f"{name}-cgn", bridge, self._public_addr(bridge), carrier,
                                   carrier_prefix, random_ports=False)  # fmt: skip
                self._to_core(cgn.netns, bridge)
                gw = self._router(f"{name}-gw", carrier, f"{carrier_prefix}.2", home, HOME,
                                  random_ports=False, gateway=f"{carrier_prefix}.1")  # fmt: skip
                routers += [cgn, gw]
            else:
                gw = self._router(f"{name}-gw", bridge, self._public_addr(bridge), home, HOME,
                                  random_ports=kind == "symmetric")  # fmt: skip
                self._to_core(gw.netns, bridge)
                routers.append(gw)
            self._add_netns(ns)
            leg = self._leg(ns, "eth0", home, HOME_HOST)
            ip("route", "add", "default", "via", HOME_ROUTER, netns=ns)
        site = Site(name, kind, ns, leg, routers)
        self.sites[name] = site
        return site

    def readdress(self, site: Site, addr: str) -> None:
        """Give a NATed host a new LAN address (a new DHCP lease); re-pins its bridge's ARP."""
        old = site.leg.addr
        # Old first: deleting a primary address also deletes its secondaries.
        ip("addr", "del", f"{old}/24", "dev", site.leg.ifname, netns=site.netns)
        ip("addr", "add", f"{addr}/24", "dev", site.leg.ifname, netns=site.netns)
        ip("route", "replace", "default", "via", HOME_ROUTER, netns=site.netns)
        site.leg.addr = addr
        self.pin_arp()

    def pin_arp(self) -> None:
        """Pin every neighbour on every bridge as a permanent ARP entry in each namespace."""
        macs = {id(leg): _mac(leg) for leg in self.legs}
        batches: dict[str, list[str]] = {}
        for leg in self.legs:
            for other in self.legs:
                if other is leg or other.bridge != leg.bridge:
                    continue
                batches.setdefault(leg.netns, []).append(
                    f"neigh replace {other.addr} lladdr {macs[id(other)]} dev {leg.ifname} "
                    "nud permanent"
                )
        for ns, lines in batches.items():
            _run(["ip", "-batch", "-"], netns=ns, stdin="\n".join(lines) + "\n")

    # --- services ---------------------------------------------------------------------

    def start_stun(self) -> tuple[str, int]:
        """Start the classic STUN server on two public addresses; return its main address."""
        if self.stun_ns is not None:
            return STUN_IPS[0], STUN_PORTS[0]
        ns = f"{self.tag}-stun"
        self._add_netns(ns)
        self._leg(ns, "eth0", "pub", STUN_IPS[0])
        ip("addr", "add", f"{STUN_IPS[1]}/24", "dev", "eth0", netns=ns)
        self._to_core(ns, "pub")
        self.legs.append(Leg(ns, "eth0", STUN_IPS[1], "pub", self.legs[-1].link))
        self.stun_ns = ns
        proc = self.spawn(ns, sys.executable, str(HERE / "stun.py"), *STUN_IPS,
                          *(str(p) for p in STUN_PORTS), stdout=subprocess.PIPE)  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"natlab: STUN server did not start: {line!r}")
        return STUN_IPS[0], STUN_PORTS[0]

    def start_miniupnpd(self, site: Site, workdir: Path, within: float = 15.0) -> Path:
        """Run miniupnpd on the site's home router (needs the STUN server); return its log."""
        router = site.router
        if router is None:
            raise ValueError(f"site {site.name} has no router")
        stun_ip, stun_port = self.start_stun()
        self.pin_arp()
        # Let the STUN server's answers from its second address and port in: miniupnpd
        # treats their absence as a filtering NAT upstream and refuses to forward ports.
        _run(["nft", "insert", "rule", "inet", "filter", "input", "iifname", "wan", "ip", "saddr",
              "{ " + ", ".join(STUN_IPS) + " }", "udp", "sport", "{ 3478, 3479 }", "accept"],
             netns=router.netns)  # fmt: skip
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / f"miniupnpd-{site.name}.conf"
        conf.write_text(
            "ext_ifname=wan\n"
            "listening_ip=lan\n"
            "enable_upnp=yes\n"
            "enable_natpmp=yes\n"
            "secure_mode=yes\n"
            "system_uptime=yes\n"
            "notify_interval=60\n"
            "clean_ruleset_interval=600\n"
            f"uuid=3b1e5d6a-0c11-4c1a-9b5e-{random.randrange(16**12):012x}\n"
            "ext_perform_stun=yes\n"
            f"ext_stun_host={stun_ip}\n"
            f"ext_stun_port={stun_port}\n"
            f"allow 1024-65535 {HOME}.0/24 1024-65535\n"
            "deny 0-65535 0.0.0.0/0 0-65535\n"
        )
        log_path = workdir / f"miniupnpd-{site.name}.log"
        log = log_path.open("wb")
        proc = self.spawn(router.netns, "miniupnpd", "-d", "-f", str(conf),
                          "-P", str(workdir / f"miniupnpd-{site.name}.pid"),
                          stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        deadline = time.monotonic() + within
        ready = (b"Port forwarding is now enabled", b"Listening for NAT-PMP")
        while not all(word in log_path.read_bytes() for word in ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"natlab: miniupnpd not ready: {log_path.read_text(errors='replace')[-800:]}"
                )
            time.sleep(0.05)  # polling a log file we do not control: no event to wait for
        return log_path

    def spawn(self, netns: str, *argv: str, **kw: object) -> subprocess.Popen[bytes]:
        """Start a process inside a namespace; it is killed at close()."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", netns, *argv], **kw
        )
        self._procs.append(proc)
        return proc

    def exec_argv(self, site: Site | str, *argv: str) -> list[str]:
        """The argv that runs a command inside a site's host namespace."""
        ns = site.netns if isinstance(site, Site) else site
        return ["ip", "netns", "exec", ns, *argv]

    def block(self, router: Router, dst: str) -> int:
        """Make the router drop what its LAN sends to dst (a path down); return the handle."""
        out = _run(["nft", "--echo", "--handle", "insert", "rule", "inet", "filter", "forward",
                    "ip", "daddr", dst, "drop"], netns=router.netns)  # fmt: skip
        return int(out.rsplit("# handle", 1)[1].split()[0])

    def unblock(self, router: Router, handle: int) -> None:
        """Remove a rule block() made."""
        _run(["nft", "delete", "rule", "inet", "filter", "forward", "handle", str(handle)],
             netns=router.netns)  # fmt: skip

    def nat_table(self, router: Router) -> str:
        """The router's nftables ruleset (miniupnpd's mappings show there)."""
        return _run(["nft", "list", "ruleset"], netns=router.netns)

    # --- sockets inside namespaces ----------------------------------------------------

    def socket_in(self, netns: str, kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
        """A new IPv4 socket living in netns (made by a thread that enters it)."""
        box: list[socket.socket | BaseException] = []

        def make() -> None:
            try:
                _enter_netns(netns)
                box.append(socket.socket(socket.AF_INET, kind))
            except BaseException as exc:
                box.append(exc)

        t = threading.Thread(target=make, name=f"netns-{netns}")
        t.start()
        t.join()
        got = box[0]
        if isinstance(got, BaseException):
            raise got
        return got

    # --- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the lab's processes and delete every namespace; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(3)
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()
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
            raise RuntimeError("natlab teardown: " + "; ".join(errors))


def _router_rules(lan_prefix: str, random_ports: bool) -> str:
    """One router's nftables ruleset: NAT out of the WAN, drop unsolicited inbound traffic.

    Shaped as miniupnpd expects (table inet filter; chains miniupnpd, prerouting_miniupnpd and
    postrouting_miniupnpd jumped to, empty until it fills them).
    """
    flags = " random" if random_ports else ""
    return f"""
table inet filter {{
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
        ct status dnat accept
        jump miniupnpd
    }}
    chain miniupnpd {{
    }}
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }}
    chain prerouting {{
        type nat hook prerouting priority -100; policy accept;
        jump prerouting_miniupnpd
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
        oifname "wan" ip saddr {lan_prefix}.0/24 masquerade{flags}
    }}
    chain prerouting_miniupnpd {{
    }}
    chain postrouting_miniupnpd {{
    }}
}}
"""


def _run(argv: list[str], netns: str | None = None, stdin: str | None = None) -> str:
    """Run a command (inside netns if given); raise with its stderr on failure."""
    full = ["ip", "netns", "exec", netns, *argv] if netns is not None else argv
    res = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def _mac(leg: Leg) -> str:
    """The MAC address of a leg's interface."""
    out = ip("-br", "link", "show", "dev", leg.ifname, netns=leg.netns).stdout
    return out.split()[2]


_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(netns: str) -> None:
    """Move the calling thread into a named network namespace."""
    fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def built(*sites: tuple[str, ...]) -> Iterator[NatLab]:
    """A lab with the given (name, kind[, bridge]) sites, ARP pinned; torn down on exit."""
    lab = NatLab()
    try:
        for name, kind, *bridge in sites:
            lab.add_site(name, kind, *bridge)
        lab.pin_arp()
        yield lab
    finally:
        lab.close()


@functools.cache
def unavailable_reason() -> str | None:
    """Why a NAT lab cannot be built here, or None if it can."""
    if sys.platform != "linux":
        return f"NAT tests need Linux network namespaces (platform is {sys.platform})"
    if os.geteuid() != 0:
        return "NAT tests need root to create network namespaces (run as root)"
    for tool in ("ip", "nft", "sysctl"):
        if shutil.which(tool) is None:
            return f"NAT tests need `{tool}` on PATH (apt-get install iproute2 nftables procps)"
    try:
        with built(("probe", "cone")):
            pass
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot build a NAT lab here: {exc}"
    return None


def miniupnpd_missing() -> str | None:
    """Why miniupnpd cannot run here, or None."""
    if shutil.which("miniupnpd") is None:
        return "the UPnP test needs miniupnpd (apt-get install miniupnpd miniupnpd-nftables)"
    return None

"""The NAT lab itself behaves like the internet: the properties the reach tests rely on.

Plain sockets only (no chinwag): each socket is made inside a lab namespace by natlab's
`socket_in`, then used from this process.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Iterator

import pytest
from nat_support import lab_of
from natlab import HOME_HOST, NatLab, Site

pytestmark = pytest.mark.nat

#: Seconds a connect may take before we call it dropped (SYN retransmits at 1 s).
DROP_S = 1.5
#: Seconds an expected connect may take on the lab.
CONNECT_S = 5.0

_ports = itertools.count(20000)


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    """Two public hosts (one on each public network), two cones, two symmetric NATs and
    two double NATs."""
    yield from lab_of(
        ("obs", "public"), ("obs2", "public", "pub2"),
        ("c1", "cone"), ("c2", "cone"),
        ("s1", "symmetric"), ("s2", "symmetric"),
        ("d1", "double"), ("d2", "double"),
    )  # fmt: skip


def bound(lab: NatLab, site: Site, port: int) -> socket.socket:
    """A TCP socket in site's namespace bound to port with address and port reuse."""
    s = lab.socket_in(site.netns)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("0.0.0.0", port))
    return s


class Observer:
    """A listening socket on a public host that reports where each connection came from."""

    def __init__(self, lab: NatLab, site: Site) -> None:
        self.site = site
        self.port = next(_ports)
        self.sock = bound(lab, site, self.port)
        self.sock.listen(16)
        self.sock.settimeout(CONNECT_S)

    @property
    def addr(self) -> tuple[str, int]:
        return self.site.addr, self.port

    def seen(self, client: socket.socket) -> tuple[tuple[str, int], socket.socket]:
        """Connect client here; return the address we saw it at and our end."""
        client.settimeout(CONNECT_S)
        client.connect(self.addr)
        conn, peer = self.sock.accept()
        return peer, conn

    def close(self) -> None:
        self.sock.close()


def mapping(lab: NatLab, site: Site, port: int, observer: Observer) -> tuple[str, int]:
    """Where observer sees a connection from site's port (closed again at once)."""
    client = bound(lab, site, port)
    try:
        peer, conn = observer.seen(client)
        conn.close()
        return peer
    finally:
        client.close()


def connect_outcome(sock: socket.socket, addr: tuple[str, int], timeout: float) -> str:
    """'ok', 'timeout' or the errno name of a connect attempt."""
    sock.settimeout(timeout)
    try:
        sock.connect(addr)
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error {exc.errno}"
    return "ok"


@pytest.mark.parametrize(("name", "kept"), [("c1", True), ("d1", True), ("s1", False)])
def test_mapping_ports(lab: NatLab, name: str, kept: bool) -> None:
    """Cone and double NAT keep the port for every destination; symmetric changes it."""
    site = lab.sites[name]
    a, b = Observer(lab, lab.sites["obs"]), Observer(lab, lab.sites["obs2"])
    try:
        port = next(_ports)
        seen_a = mapping(lab, site, port, a)
        seen_b = mapping(lab, site, port, b)
    finally:
        a.close()
        b.close()
    assert seen_a[0] == seen_b[0] == site.public_ip
    if kept:
        assert seen_a[1] == seen_b[1] == port
    else:
        assert seen_a[1] != seen_b[1]
        assert port not in (seen_a[1], seen_b[1])


@pytest.mark.parametrize("name", ["c1", "d1"])
def test_inbound_syn_dropped(lab: NatLab, name: str) -> None:
    """A SYN from outside to a live mapping, or to the private address, is silently dropped."""
    site = lab.sites[name]
    obs = Observer(lab, lab.sites["obs"])
    port = next(_ports)
    inside = bound(lab, site, port)
    inside.listen(4)
    other = bound(lab, lab.sites["obs2"], next(_ports))
    private = bound(lab, lab.sites["obs2"], next(_ports))
    try:
        # A live mapping site:port -> obs exists while this connection is open.
        peer, conn = obs.seen(bound(lab, site, port))
        assert peer == (site.public_ip, port)
        assert connect_outcome(other, (site.public_ip, port), DROP_S) == "timeout"
        outcome = connect_outcome(private, (HOME_HOST, port), DROP_S)
        assert outcome != "ok", outcome
        conn.close()
    finally:
        for s in (obs, inside, other, private):
            s.close()


def simultaneous_open(lab: NatLab, one: Site, two: Site) -> tuple[str, str]:
    """Both ends learn their mapping at a rendezvous, then connect() to each other at once."""
    rendezvous = Observer(lab, lab.sites["obs"])
    pa, pb = next(_ports), next(_ports)
    ra, rb = bound(lab, one, pa), bound(lab, two, pb)
    keep: list[socket.socket] = [ra, rb]
    try:
        seen_a, conn_a = rendezvous.seen(ra)
        seen_b, conn_b = rendezvous.seen(rb)
        keep += [conn_a, conn_b]
        a, b = bound(lab, one, pa), bound(lab, two, pb)
        keep += [a, b]
        out: dict[str, str] = {}
        threads = [
            threading.Thread(target=lambda: out.__setitem__("a", connect_outcome(a, seen_b, 2.5))),
            threading.Thread(target=lambda: out.__setitem__("b", connect_outcome(b, seen_a, 2.5))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if out["a"] == out["b"] == "ok":
            a.sendall(b"ping")
            b.settimeout(CONNECT_S)
            assert b.recv(4) == b"ping"
        return out["a"], out["b"]
    finally:
        rendezvous.close()
        for s in keep:
            s.close()


@pytest.mark.parametrize(
    ("x", "y", "works"),
    [("c1", "c2", True), ("d1", "d2", True), ("c1", "d2", True), ("s1", "s2", False)],
)
def test_simultaneous_open(lab: NatLab, x: str, y: str, works: bool) -> None:
    """TCP simultaneous open punches cone and double NATs, never two symmetric ones."""
    got = simultaneous_open(lab, lab.sites[x], lab.sites[y])
    if works:
        assert got == ("ok", "ok")
    else:
        assert "ok" not in got, got

"""UPnP-IGD in the NAT lab: a node behind a miniupnpd router maps its port, and unmaps it.

The home router is a cone NAT running the distribution's miniupnpd (with the lab's STUN
server, so it forwards ports on a documentation address); a public host dials the mapped
address. A capture on the home LAN's bridge shows the SSDP search, and none with --no-upnp.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from capture import BridgeCapture
from it_support import ask
from nat_support import PROMPT_S, START_S, NodeFactory, lab_of
from natlab import NatLab, Site, miniupnpd_missing

from ci_support import skip_or_fail

pytestmark = pytest.mark.nat

SSDP = ("239.255.255.250", 1900)
NATPMP_PORT = 5351
#: Seconds for the node to find the IGD and map its port (SSDP wait: 1-2 s).
MAP_S = 15.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatLab]:
    """A public host and a cone-NAT home whose router runs miniupnpd."""
    for built in lab_of(("pub", "public"), ("home", "cone")):
        reason = miniupnpd_missing()
        if reason is not None:
            skip_or_fail("NAT tests", reason)
        built.start_miniupnpd(built.sites["home"], tmp_path_factory.mktemp("upnp"))
        yield built


def udp_datagrams(frames: list[bytes]) -> list[tuple[str, str, int]]:
    """(source, destination, destination port) of every IPv4 UDP datagram among frames."""
    out = []
    for frame in frames:
        if len(frame) < 14 + 28 or struct.unpack_from(">H", frame, 12)[0] != 0x0800:
            continue
        hdr = frame[14:]
        if hdr[9] != socket.IPPROTO_UDP:
            continue
        ihl = (hdr[0] & 0x0F) * 4
        (dport,) = struct.unpack_from(">H", hdr, ihl + 2)
        out.append((socket.inet_ntoa(hdr[12:16]), socket.inet_ntoa(hdr[16:20]), dport))
    return out


def mappings(lab: NatLab, site: Site) -> str:
    """The DNAT rules miniupnpd holds on the site's router."""
    router = site.router
    assert router is not None
    return lab.nat_table(router)


async def capture_home(lab: NatLab, site: Site, out: Path) -> BridgeCapture:
    """Start capturing the home LAN's bridge."""
    cap = BridgeCapture(lab.switch_ns, site.leg.bridge, out)
    await cap.start()
    return cap


async def test_node_maps_its_port_and_unmaps_it_on_exit(
    lab: NatLab, node: NodeFactory, tmp_path: Path
) -> None:
    """The mapping is the router's public address; a public node handshakes through it."""
    home, pub = lab.sites["home"], lab.sites["pub"]
    cap = await capture_home(lab, home, tmp_path / "home.cap")
    try:
        alice = node(home, "alice")
        await alice.start(START_S)
        got = await alice.wait_for("upnp", lambda e: e["mapping"] is not None, timeout=MAP_S)
    finally:
        await cap.stop()
    mapped = got["mapping"]
    assert mapped == f"{home.public_ip}:{alice.port}"
    assert f"dport {alice.port}" in mappings(lab, home)
    sent = udp_datagrams(cap.frames())
    assert (home.addr, *SSDP) in sent, sent

    # The mapping is the first address alice's invites name; bob, on the public side,
    # adds the code and reaches her through it (the Noise handshake proves who answered).
    invite = await ask(alice, {"cmd": "invite"}, "invite")
    assert invite["addresses"][0] == mapped, invite
    bob = node(pub, "bob")
    await bob.start(START_S)
    await ask(bob, {"cmd": "add", "code": invite["code"]}, "contact_added")
    await bob.wait_for_peers([alice.peer_id], PROMPT_S)
    await alice.wait_for_peers([bob.peer_id], PROMPT_S)
    joined = await bob.wait_for("peer_joined", from_start=True, peer_id=alice.peer_id)
    assert joined["address"] == mapped, joined

    await alice.quit()
    assert f"dport {alice.port}" not in mappings(lab, home)


async def test_no_upnp_sends_no_ssdp(lab: NatLab, node: NodeFactory, tmp_path: Path) -> None:
    """With --no-upnp the node sends neither an SSDP search nor NAT-PMP, and maps nothing."""
    home, pub = lab.sites["home"], lab.sites["pub"]
    bob = node(pub, "bob2")
    await bob.start(START_S)
    cap = await capture_home(lab, home, tmp_path / "home.cap")
    try:
        carol = node(home, "carol", "--no-upnp", "--peer", f"{pub.addr}:{bob.port}")
        await carol.start(START_S)
        await carol.wait_for_peers([bob.peer_id], PROMPT_S)
        await bob.wait_for_peers([carol.peer_id], PROMPT_S)
        await carol.quit()
    finally:
        await cap.stop()
    sent = [d for d in udp_datagrams(cap.frames()) if d[0] == home.addr]
    assert not [d for d in sent if d[1:] == SSDP or d[2] == NATPMP_PORT], sent
    assert not [e for e in carol.events if e.get("event") == "upnp"]
    assert f"dport {carol.port}" not in mappings(lab, home)

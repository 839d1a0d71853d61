"""Knowing one's own address in the NAT lab (issue 14 item 2, protocol/reach.py).

A node behind a NAT holds reservations at two relays on two public networks
(203.0.113.0/24 and 198.51.100.0/24); each tells it, right after the handshake, the
address it sees it at. Two reporters of different networks agreeing make an address
believed: behind a cone or a double NAT its invite then names the router's public address
and its own port; behind a symmetric NAT the two reports differ, the node says so in its
log, and its invite names no public address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from nat_support import START_S, NodeFactory, lab_of
from natlab import NatLab
from reach_support import LabRelay, invite_code

pytestmark = [pytest.mark.nat, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    """A relay host on each public network, and a home of each NAT kind."""
    yield from lab_of(
        ("relay", "public"), ("relay2", "public", "pub2"),
        ("cone1", "cone"), ("dbl1", "double"), ("sym1", "symmetric"),
    )  # fmt: skip


@pytest.mark.parametrize(("site", "stable"), [("cone1", True), ("dbl1", True), ("sym1", False)])
async def test_invite_names_the_public_address_two_networks_saw(
    lab: NatLab, node: NodeFactory, tmp_path: Path, site: str, stable: bool
) -> None:
    r1 = await LabRelay(lab.sites["relay"], tmp_path / "r1").start()
    r2 = await LabRelay(lab.sites["relay2"], tmp_path / "r2").start()
    try:
        home = lab.sites[site]
        a = node(home, "alice", "--no-upnp", "--relay-peer", r1.addr, "--relay-peer", r2.addr)
        await a.start(START_S)
        # Reservations at both: each relay's `obs` frame came before its grant.
        invite = await invite_code(a, relays=2)
        public = [x for x in invite["addresses"] if x.startswith(home.public_ip + ":")]
        if stable:
            assert public == [f"{home.public_ip}:{a.port}"], invite
            assert "symmetric NAT: False" in a.stderr_tail(20_000)
        else:
            assert public == [], invite
            assert "symmetric NAT: True" in a.stderr_tail(20_000)
        assert f"192.168.1.2:{a.port}" in invite["addresses"], invite
    finally:
        await asyncio.gather(r1.stop(), r2.stop())

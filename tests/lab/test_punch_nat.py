"""Hole punching in the NAT lab: relayed first, then direct (cone) or relayed for good (symmetric).

Marker `nat`: natlab's namespaces and nftables routers, a real `chinwag relay` on a public
site, real node processes; the pair meets through a circuit at the relay (`connect`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from nat_support import PROMPT_S, START_S, NodeFactory, lab_of
from natlab import NatLab
from punch_support import ROOM, join_relayed, path_events, texts
from reach_support import DIRECT, LabRelay

from driver import ChinwagProcess

pytestmark = [pytest.mark.nat, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    yield from lab_of(
        ("relay", "public"), ("cone1", "cone"), ("cone2", "cone"),
        ("sym1", "symmetric"), ("sym2", "symmetric"),
    )  # fmt: skip


@pytest.fixture
async def relay(lab: NatLab, tmp_path: Path) -> Iterator[LabRelay]:  # type: ignore[misc]
    r = await LabRelay(lab.sites["relay"], tmp_path / "relay").start()
    try:
        yield r
    finally:
        await r.stop()


async def pair(
    lab: NatLab, node: NodeFactory, relay: LabRelay, sites: tuple[str, str], env: dict[str, str]
) -> tuple[ChinwagProcess, ChinwagProcess]:
    args = ("--no-upnp", "--relay-peer", relay.addr)
    a = node(lab.sites[sites[0]], "alice", *args)
    b = node(lab.sites[sites[1]], "bob", *args)
    a.env = b.env = env
    await asyncio.gather(a.start(START_S), b.start(START_S))
    await join_relayed(a, b, relay)
    return a, b


async def test_cone_pair_starts_relayed_ends_direct_chatting_through_the_switch(
    lab: NatLab, node: NodeFactory, relay: LabRelay
) -> None:
    a, b = await pair(lab, node, relay, ("cone1", "cone2"), {})
    sent: dict[str, list[str]] = {a.peer_id: [], b.peer_id: []}

    async def chat(me: ChinwagProcess, other: ChinwagProcess, name: str) -> None:
        """Talk without pause from the relayed connection's first moment until well after
        the switch; paced by the echo of our own message (stored and sent), not by sleeps."""
        n, after = 0, 0
        while after < 20:
            n += 1
            await me.say(f"{name}{n}", room=ROOM)
            sent[me.peer_id].append(f"{name}{n}")
            await me.wait_for("message", text=f"{name}{n}", own=True, timeout=PROMPT_S)
            if path_events(me, other.peer_id):
                after += 1

    await asyncio.wait_for(asyncio.gather(chat(a, b, "a"), chat(b, a, "b")), 4 * PROMPT_S)
    for node_, author in ((b, a), (a, b)):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROMPT_S
        while texts(node_, author.peer_id) != sent[author.peer_id] and loop.time() < deadline:
            await node_.wait_for("message", timeout=max(0.1, deadline - loop.time()))
        # None lost, doubled or reordered across the switch.
        assert texts(node_, author.peer_id) == sent[author.peer_id]
    for me, other in ((a, b), (b, a)):
        (path,) = path_events(me, other.peer_id)
        assert path["path"] in DIRECT and path["via"] is None
        # No flap: one join (relayed), no leave.
        assert [e["event"] for e in me.events if e.get("peer_id") == other.peer_id and
                e.get("event") in ("peer_joined", "peer_left")] == ["peer_joined"]  # fmt: skip
    # The circuit is closed once both ends have moved (the relay logs it; no event for it).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROMPT_S
    while "closing circuit 1: an end closed it" not in relay.log():
        assert loop.time() < deadline, relay.log()[-2000:]
        await asyncio.sleep(0.05)  # polling a log file: nothing to wait on


async def test_symmetric_pair_stays_relayed_and_retries_later(
    lab: NatLab, node: NodeFactory, relay: LabRelay, tmp_path: Path
) -> None:
    a, b = await pair(lab, node, relay, ("sym1", "sym2"), {})
    # A round of 3 attempts fails (each waits PUNCH_DIAL_TIMEOUT_S for a SYN that never
    # passes a symmetric NAT); the pair stays relayed, chatting, and says when it retries.
    log = tmp_path / "alice.stderr.log"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    n = 0
    while "failed (round 1)" not in log.read_text(errors="replace"):
        assert loop.time() < deadline, a.stderr_tail()
        n += 1
        await a.say(f"still here {n}", room=ROOM)
        await b.wait_for("message", text=f"still here {n}", timeout=PROMPT_S)
        # One message a second (the circuit is byte-limited); no path change meanwhile.
        with contextlib.suppress(TimeoutError):
            raise AssertionError(await a.wait_for("path", timeout=1.0))
    assert "next try in 30 s" in log.read_text(errors="replace")
    assert not path_events(a, b.peer_id) and not path_events(b, a.peer_id)
    await b.say("relayed still works", room=ROOM)
    await a.wait_for("message", text="relayed still works", timeout=PROMPT_S)
    assert b.peer_id in a.connected_peers()

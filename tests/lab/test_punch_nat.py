"""Hole punching in a NAT lab: relayed first, then direct (cone) or relayed for good (symmetric).

Marker `nat`: namespaces with nftables NAT routers (tests/lab/punchlab.py), real node
processes, a public relay host (a chinwag node for observed addresses, and the splice
standing in for relay circuits).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from punch_support import ROOM, LabNode, RelayHost, pair_node, path_events, stop, texts
from punchlab import PunchLab, unavailable_reason

from ci_support import skip_or_fail

pytestmark = pytest.mark.nat

WAIT_S = 20.0


@pytest.fixture
def lab() -> Iterator[PunchLab]:
    reason = unavailable_reason()
    if reason is not None:
        skip_or_fail("NAT lab tests", reason)
    with PunchLab() as built:
        yield built


@pytest.fixture
async def relay(lab: PunchLab, tmp_path: Path) -> AsyncIterator[RelayHost]:
    host = RelayHost(lab, tmp_path)
    try:
        await host.start()
        yield host
    finally:
        await host.stop()


async def start_pair(
    lab: PunchLab, relay: RelayHost, tmp_path: Path, kind_a: str, kind_b: str, env: dict[str, str]
) -> tuple[LabNode, LabNode]:
    lab.add_home("a", kind_a)
    lab.add_home("b", kind_b)
    a = pair_node(lab, relay, tmp_path, "a", "ab", initiator=True)
    b = pair_node(lab, relay, tmp_path, "b", "ab", initiator=False)
    a.env = b.env = env
    await asyncio.gather(a.start(), b.start())
    # Relayed: the only way between two homes until a punch works.
    await asyncio.gather(
        a.wait_for_peers([b.peer_id], WAIT_S), b.wait_for_peers([a.peer_id], WAIT_S)
    )
    return a, b


async def test_cone_pair_starts_relayed_ends_direct_chatting_through_the_switch(
    lab: PunchLab, relay: RelayHost, tmp_path: Path
) -> None:
    a, b = await start_pair(lab, relay, tmp_path, "cone", "cone", {})
    try:
        sent: dict[str, list[str]] = {a.peer_id: [], b.peer_id: []}

        async def chat(node: LabNode, name: str) -> None:
            n, after = 0, 0
            while after < 20:
                n += 1
                await node.say(f"{name}{n}", room=ROOM)
                sent[node.peer_id].append(f"{name}{n}")
                if path_events(a) and path_events(b):
                    after += 1
                # Paced by the echo of our own message (stored and sent), not by a sleep.
                await node.wait_for("message", text=f"{name}{n}", own=True, timeout=WAIT_S)

        await asyncio.wait_for(asyncio.gather(chat(a, "a"), chat(b, "b")), 2 * WAIT_S)
        for node, author in ((b, a), (a, b)):
            want = sent[author.peer_id]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT_S
            while texts(node, author.peer_id) != want and loop.time() < deadline:
                await node.wait_for("message", timeout=max(0.1, deadline - loop.time()))
            assert texts(node, author.peer_id) == want  # none lost, doubled or reordered
        for node, other in ((a, b), (b, a)):
            (path,) = path_events(node)
            assert (path["peer_id"], path["path"], path.get("via")) == (
                other.peer_id,
                "direct",
                None,
            )
            left = [e for e in node.events if e.get("event") == "peer_left"]
            assert not [e for e in left if e.get("peer_id") == other.peer_id]
        # Messages went both ways relayed first: the switch happened mid-conversation.
        first_path = min(i for i, e in enumerate(b.events) if e.get("event") == "path")
        assert any(
            e.get("event") == "message" and e.get("peer_id") == a.peer_id
            for e in b.events[:first_path]
        )
    finally:
        await asyncio.gather(stop(a), stop(b))


async def test_symmetric_pair_stays_relayed_and_retries_later(
    lab: PunchLab, relay: RelayHost, tmp_path: Path
) -> None:
    # Short attempts and back-off so that the second round comes within the test.
    env = {"CHINWAG_LAB_LIMITS": "PUNCH_DIAL_TIMEOUT_S=1,PUNCH_RETRY_BASE_S=1"}
    a, b = await start_pair(lab, relay, tmp_path, "symmetric", "symmetric", env)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3 * WAIT_S
        while "failed (round 2)" not in a.stderr_tail(100_000):
            assert loop.time() < deadline, a.stderr_tail()
            await a.say("still here", room=ROOM)
            await b.wait_for("message", text="still here", timeout=WAIT_S)
        assert "failed (round 1)" in a.stderr_tail(100_000)
        assert not path_events(a) and not path_events(b)
        await b.say("relayed still works", room=ROOM)
        await a.wait_for("message", text="relayed still works", timeout=WAIT_S)
        assert b.peer_id in a.connected_peers()
    finally:
        await asyncio.gather(stop(a), stop(b))

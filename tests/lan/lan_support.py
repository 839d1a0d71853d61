"""Helpers shared by the LAN tests (imported by the test modules and conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# For the store inspection helpers, shared with the integration tests.
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "integration"))

from it_support import private_rooms_stored as private_rooms_stored
from it_support import store_leaks as store_leaks
from netlab import Host

from driver import ChinwagProcess, Event

#: Arguments every LAN node gets: any TCP port, discovery on (broadcast on each interface).
NODE_ARGS = ("--port", "0", "--log-level", "info")

#: Seconds for a process to start and print `ready` (2 cores, several nodes at once).
START_S = 20.0
#: Seconds for nodes on one bridge to find each other, or for a message to arrive.
PROMPT_S = 10.0
#: Seconds for a peer behind a cut link to be declared gone (keepalive: within 10 s).
LEFT_S = 20.0
#: Seconds for a peer whose link is restored to be back (beacons every 2-5 s re-dial).
REJOIN_S = 20.0


class NodeFactory(Protocol):
    """Signature of the `node` fixture: a (not yet started) chinwag in one lab host."""

    def __call__(self, host: Host, nick: str, *args: str) -> ChinwagProcess: ...


async def start_all(*nodes: ChinwagProcess) -> None:
    """Start nodes at the same time; return once every one is ready."""
    await asyncio.gather(*(n.start(START_S) for n in nodes))


async def stop(node: ChinwagProcess) -> None:
    """Quit a node if it runs, killing it if it does not go."""
    if node.proc is None or node.proc.returncode is not None:
        return
    try:
        await node.quit(5)
    except Exception:
        with contextlib.suppress(Exception):
            await node.kill()


async def mesh(nodes: Iterable[ChinwagProcess], within: float = PROMPT_S) -> None:
    """Wait until every node reports every other one as joined."""
    ns = list(nodes)
    await asyncio.gather(
        *(n.wait_for_peers([o.peer_id for o in ns if o is not n], within) for n in ns)
    )


async def gone(node: ChinwagProcess, peer: ChinwagProcess, within: float) -> None:
    """Wait until node's latest event about peer is a peer_left (it saw peer leave)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    # Re-check the state after every new event; safe with other waiters on the same node.
    while peer.peer_id in node.connected_peers():
        try:
            await node.wait_for(timeout=deadline - loop.time())
        except TimeoutError as exc:
            raise TimeoutError(
                f"{node.nick} still had {peer.nick} joined {within}s later: {exc}"
            ) from exc


def joins(node: ChinwagProcess, peer: ChinwagProcess) -> list[Event]:
    """Every peer_joined node printed for peer."""
    return [
        ev
        for ev in node.events
        if ev.get("event") == "peer_joined" and ev.get("peer_id") == peer.peer_id
    ]


async def delivered(sender: ChinwagProcess, text: str, *receivers: ChinwagProcess) -> Event:
    """Send text; wait for the sender's own echo and for each receiver to show it; return echo."""
    await sender.say(text)
    own = await sender.wait_for("message", timeout=PROMPT_S, from_start=True, text=text)
    assert own["own"] is True, own
    for r in receivers:
        got = await r.wait_for_message(text, PROMPT_S)
        assert got["own"] is False, got
        assert got["peer_id"] == sender.peer_id, got
        assert got["id"] == own["id"], (got, own)
    return own


async def history(
    node: ChinwagProcess, limit: int = 10_000, room: str | None = None
) -> list[Event]:
    """Ask a node for a room's history (the `history` command); return its messages in order."""
    before = sum(1 for ev in node.events if ev.get("event") == "history")
    cmd: Event = {"cmd": "history", "limit": limit}
    if room is not None:
        cmd["room"] = room
    await node.send(cmd)
    count = 0

    def answer(_ev: Event) -> bool:
        # wait_for passes each history event to the predicate once, in order.
        nonlocal count
        count += 1
        return count > before

    reply = await node.wait_for("history", answer, timeout=PROMPT_S, from_start=True)
    return list(reply["messages"])


def message_events(node: ChinwagProcess, author: ChinwagProcess | None = None) -> list[Event]:
    """The message events a node printed (optionally only those written by author)."""
    return [ev for ev in node.messages() if author is None or ev.get("peer_id") == author.peer_id]


async def wait_texts(node: ChinwagProcess, texts: Iterable[str], within: float) -> None:
    """Wait until node printed a message event for every text (from any time), within seconds."""
    wanted = list(texts)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for text in wanted:
        remaining = deadline - loop.time()
        try:
            await node.wait_for_message(text, max(remaining, 0.001))
        except TimeoutError as exc:
            shown = {ev.get("text") for ev in node.messages()}
            missing = [t for t in wanted if t not in shown]
            raise TimeoutError(
                f"{node.nick} lacks {len(missing)} messages {within}s later "
                f"(first: {missing[:3]}): {exc}"
            ) from exc

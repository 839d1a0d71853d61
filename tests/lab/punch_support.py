"""Helpers of the hole-punch test and bench/punch.py: a pair joined through a real relay.

On natlab's lab (tests/lab/natlab.py): a `chinwag relay` on a public site, two nodes in
homes behind NATs, each with `--relay-peer` (so it holds a reservation there and learns its
observed public address from it); the first dials the second through the relay with the
`connect` command, which makes it the punch initiator.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
sys.path.insert(2, str(Path(__file__).resolve().parents[1] / "integration"))

from nat_support import PROMPT_S, START_S
from reach_support import LabRelay, invite_code

from driver import ChinwagProcess, Event

#: The chat room the pair uses (the relay is in none, so it cannot pass messages on).
ROOM = "pair"


async def join_relayed(a: ChinwagProcess, b: ChinwagProcess, relay: LabRelay) -> None:
    """Start nothing; with a and b started: b holds a reservation, a dials it via the relay."""
    await invite_code(b)  # names the relay once b's reservation is held
    await a.wait_for_peers([relay.peer_id], START_S)  # a has heard its observed address
    for node in (a, b):
        await node.send({"cmd": "join", "room": ROOM})
    await a.send({"cmd": "connect", "peer_id": b.peer_id, "via": relay.peer_id})
    joined = await a.wait_for("peer_joined", peer_id=b.peer_id, timeout=PROMPT_S, from_start=True)
    assert joined["path"] == "relayed", joined


def texts(node: ChinwagProcess, author: str) -> list[str]:
    """The texts node showed from author in the pair's room, in the order shown."""
    return [
        str(e["text"])
        for e in node.events
        if e.get("event") == "message" and e.get("peer_id") == author and e.get("room") == ROOM
    ]


def path_events(node: ChinwagProcess, peer_id: str) -> list[Event]:
    return [e for e in node.events if e.get("event") == "path" and e.get("peer_id") == peer_id]

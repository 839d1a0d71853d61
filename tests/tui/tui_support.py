"""Helpers for driving the TUI headless: waiting for conditions, synthetic peer events."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input

from chinwag import events as ev
from chinwag.crypto.identity import Identity
from chinwag.ui.tui import ChinwagApp

# tests/ for node_support.py, also when a benchmark imports this module directly.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node_support import make_node as make_node

#: The `app` fixture: builds an app over a fresh node (see conftest.py).
AppFactory = Callable[..., ChinwagApp]

BOB = Identity.from_seed(b"b" * 32).peer_id
CAROL = Identity.from_seed(b"c" * 32).peer_id
#: A second "carol": same nick, another key (a nick collision).
CAROL2 = Identity.from_seed(b"d" * 32).peer_id


async def until(pilot: Pilot[int], cond: Callable[[], object], timeout: float = 5.0) -> None:
    """Let the app run until cond() is true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.01)


async def started(pilot: Pilot[int]) -> ChinwagApp:
    """Wait until the app's node is up and its views exist."""
    app = pilot.app
    assert isinstance(app, ChinwagApp)
    await until(pilot, lambda: app.started and app.current)
    return app


async def enter(pilot: Pilot[int], line: str) -> None:
    """Put a line into the focused input and press Enter (typing key by key is slow)."""
    box = pilot.app.focused
    assert isinstance(box, Input)
    box.value = line
    box.cursor_position = len(line)
    await pilot.press("enter")


def texts(app: ChinwagApp, room: str | None = None) -> list[str]:
    """Return the plain text of every entry of a view (the current one by default)."""
    return app.views[room or app.current].plain_lines()


def shown(app: ChinwagApp, needle: str, room: str | None = None) -> bool:
    """Return whether some entry of a view contains needle."""
    return any(needle in t for t in texts(app, room))


_seq: dict[str, int] = {}


def message(
    text: str,
    peer_id: str = BOB,
    nick: str = "bob",
    room: str = "general",
    ts: float = 1_790_000_000.0,
    **kw: object,
) -> ev.Message:
    """Return a synthetic incoming room message."""
    _seq[peer_id] = _seq.get(peer_id, 0) + 1
    seq = _seq[peer_id]
    return ev.Message(
        id=f"{peer_id[:8]}{seq:056x}",
        room=room,
        peer_id=peer_id,
        nick=nick,
        ts=ts,
        text=text,
        own=False,
        seq=seq,
        **kw,  # type: ignore[arg-type]
    )


def dm(text: str, to: str, peer_id: str = BOB, nick: str = "bob", ts: float = 1_790_000_000.0):
    """Return a synthetic incoming private message."""
    _seq[peer_id] = _seq.get(peer_id, 0) + 1
    seq = _seq[peer_id]
    return ev.DirectMessage(
        id=f"d{peer_id[:7]}{seq:056x}",
        peer_id=peer_id,
        nick=nick,
        ts=ts,
        text=text,
        own=False,
        to=to,
        seq=seq,
    )


def feed(app: ChinwagApp, *events: ev.NodeEvent) -> None:
    """Deliver events to the app as the node would."""
    for event in events:
        app._on_node_event(event)


async def settle() -> None:
    """Give the loop one turn."""
    await asyncio.sleep(0)

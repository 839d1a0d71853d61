"""Snapshot tests of the main screens at 80x24 and 160x48 (fixed identity, port, times and zone).

Update after an intended change of the look with:
`pytest tests/tui/test_snapshots.py --snapshot-update` (inside `unshare -n`), then review the SVGs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from tui_support import BOB, CAROL, CAROL2, dm, feed, make_node, message, started, until

from chinwag import events as ev
from chinwag.ui.tui import ChinwagApp

#: A fixed listen port: the status line shows it (the test runs in its own network namespace).
PORT = 47123
DAY = 1_790_000_000.0  # 2026-09-21 in UTC

Snap = Callable[..., bool]


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def snap_app(tmp_path: Path) -> ChinwagApp:
    data = tmp_path / "snap"
    data.mkdir()
    (data / "identity.key").write_bytes(b"s" * 32)
    return ChinwagApp(make_node(data, "sam", port=PORT), bell=False)


async def chat_scene(pilot: Pilot[int]) -> None:
    app = await started(pilot)
    me = app.node.identity.peer_id
    await app.node.join("dev")
    feed(
        app,
        ev.PeerJoined(peer_id=BOB, nick="bob", address="127.0.0.1:50001"),
        ev.PeerJoined(peer_id=CAROL, nick="carol", address="127.0.0.1:50002"),
        ev.PeerJoined(peer_id=CAROL2, nick="carol", address="127.0.0.1:50003"),
        ev.PeerLeft(peer_id=CAROL2, nick="carol", reason="quit"),
        message("yesterday's news", BOB, "bob", ts=DAY - 86_400),
        message("good morning all", BOB, "bob", ts=DAY),
        message("morning! sam, did you see the build?", CAROL, "carol", ts=DAY + 60),
        message("another carol here", CAROL2, "carol", ts=DAY + 90),
        message("this one was late", BOB, "bob", ts=DAY + 30, late=True),
        ev.Gap(room="general", peer_id=BOB, missing=[4, 6]),
        dm("can we talk?", to=me, ts=DAY + 120),
        message("in dev", BOB, "bob", ts=DAY + 130, room="dev"),
    )
    await until(pilot, lambda: "@" + BOB[:8] in app.rooms)


def test_main_screen_80x24(snap_compare: Snap, tmp_path: Path) -> None:
    assert snap_compare(snap_app(tmp_path), terminal_size=(80, 24), run_before=chat_scene)


def test_main_screen_160x48(snap_compare: Snap, tmp_path: Path) -> None:
    assert snap_compare(snap_app(tmp_path), terminal_size=(160, 48), run_before=chat_scene)


async def files_scene(pilot: Pilot[int]) -> None:
    app = await started(pilot)
    offer = ev.FileOffer(
        id="a" * 64, peer_id=BOB, nick="bob", name="holiday.jpg", size=2_400_000, sha256="0" * 64
    )
    moving = ev.FileOffer(
        id="b" * 64, peer_id=CAROL, nick="carol", name="talk.mp4", size=80_000_000, sha256="1" * 64
    )
    feed(app, offer, moving)
    await until(pilot, lambda: moving.id in app.transfers)
    app.transfers[moving.id].state = "accepted"
    feed(app, ev.FileProgress(id=moving.id, bytes=20_000_000, total=80_000_000, rate=2_000_000))
    await until(pilot, lambda: "25%" in str(app._w_files.render()))


def test_file_offers_80x24(snap_compare: Snap, tmp_path: Path) -> None:
    assert snap_compare(snap_app(tmp_path), terminal_size=(80, 24), run_before=files_scene)


async def help_scene(pilot: Pilot[int]) -> None:
    await started(pilot)
    await pilot.press("f1")


def test_key_screen_80x24(snap_compare: Snap, tmp_path: Path) -> None:
    assert snap_compare(snap_app(tmp_path), terminal_size=(80, 24), run_before=help_scene)

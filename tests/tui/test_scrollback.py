"""Scrollback on demand and responsiveness: big rooms, bursts, rendering only what is visible.

These tests check behaviour, not speed: how long a page takes and how long the
event loop stalls are measured by bench/bench_tui_scrollback.py (a threshold
here would fail on a loaded machine without anything being wrong).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tui_support import BOB, CAROL, AppFactory, feed, message, started, until

from chinwag.store.db import NewMessage, Store
from chinwag.ui.tui import PAGE
from chinwag.ui.tui_view import MessageView
from chinwag.ui.tui_widgets import ChatInput

T0 = 1_790_000_000_000


def fill(data_dir: Path, count: int, room: str = "general") -> None:
    """Store `count` messages of bob and carol in a room, one a second (rows only, no crypto)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir / "chinwag.db")
    try:
        batch = []
        for i in range(count):
            author = (BOB, CAROL)[i % 2]
            batch.append(
                NewMessage(
                    id=f"{i:064x}",
                    room=room,
                    author=author,
                    seq=i // 2 + 1,
                    ts=T0 + i * 1000,
                    nick=("bob", "carol")[i % 2],
                    text=f"message {i}",
                    body=b"",
                    sig=b"",
                    late=False,
                    verified=True,
                )
            )
            if len(batch) == 10_000:
                store.insert_messages(batch)
                batch = []
        store.insert_messages(batch)
    finally:
        store.close()


def message_texts(view: MessageView) -> list[str]:
    return [e.msg.text for e in view.entries if e.msg is not None]


async def test_scrolling_up_loads_older_history_in_pages(app: AppFactory, tmp_path: Path) -> None:
    total = 50_000
    fill(tmp_path / "me", total)
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        view = a.views["general"]
        assert message_texts(view) == [f"message {i}" for i in range(total - PAGE, total)]
        assert view.has_older
        assert view.scroll_y == view.max_scroll_y
        for pages in range(2, 6):
            top_entry = view.entries[0]
            view.scroll_to(y=0, animate=False, force=True)
            await until(pilot, lambda n=pages: len(message_texts(view)) == n * PAGE)
            # What was at the top is still on screen: the view did not jump.
            index = view.entries.index(top_entry)
            assert view._cum[index] == view.scroll_y
        assert message_texts(view) == [f"message {i}" for i in range(total - 5 * PAGE, total)]
        # The screen answers at once while pages load.
        await pilot.press("x")
        assert a.query_one(ChatInput).value == "x"


async def test_the_top_of_a_room_ends_the_loading(app: AppFactory, tmp_path: Path) -> None:
    fill(tmp_path / "me", PAGE + 5)
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        view = a.views["general"]
        view.scroll_to(y=0, animate=False, force=True)
        await until(pilot, lambda: not view.has_older)
        assert message_texts(view) == [f"message {i}" for i in range(PAGE + 5)]
        # Date separators: one above the first message of each day.
        seps = [e for e in view.entries if e.sep]
        assert seps[0] is view.entries[0]


async def test_ten_thousand_messages_render_only_what_is_visible(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        feed(a, *(message(f"burst {i}", ts=1_790_000_000 + i) for i in range(10_000)))
        view = a.views["general"]
        await until(pilot, lambda: len(view.entries) > 10_000)
        await pilot.pause()
        for _ in range(40):
            await pilot.press("pageup")
        assert view.scroll_y < view.max_scroll_y - 40 * 10
        # Only entries that were on screen were ever folded into lines.
        assert len(view._strips) < 40 * 24


async def test_typing_during_a_burst_of_incoming_messages_loses_nothing(app: AppFactory) -> None:
    """Keys typed while 1,000 messages arrive all land, and every message is shown.

    (The event-loop stall during such a burst is a bench figure:
    tui_burst_loop_stall_ms_max in bench/bench_tui_scrollback.py.)
    """
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)

        async def burst() -> None:
            # 1,000 messages in one second, in 10 ms slices.
            for tick in range(100):
                feed(a, *(message(f"fast {tick * 10 + i}", peer_id=BOB) for i in range(10)))
                await asyncio.sleep(0.01)

        sender = asyncio.create_task(burst())
        await pilot.press(*"typing along")
        await sender
        view = a.views["general"]
        await until(pilot, lambda: any("fast 999" in t for t in view.plain_lines()))
        assert a.query_one(ChatInput).value == "typing along"
        # Every message once, in the order it arrived.
        shown = [t.rsplit("fast ", 1)[1] for t in view.plain_lines() if "fast " in t]
        assert shown == [str(i) for i in range(1000)]

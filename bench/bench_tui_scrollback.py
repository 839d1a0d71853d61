"""The terminal UI over a room of 1,000,000 messages: first screen and scrolling back.

Reuses the cached database of bench_history_open.py (built once under bench/results/),
runs the Textual app headless (pilot) on it at 120x40, and measures
  (a) from starting the app to the first screen of the room (node start included),
  (b) each page of older history loaded by scrolling to the top (PAGES pages in a row),
  (c) the worst stall of the event loop while pages load (what typing would feel),
  (d) Node.history(before=...) far back in the room (the 1,000th oldest message),
  (e) on a fresh node (80x24): the worst event-loop stall while 1,000 messages arrive within
      a second and someone types, and the time of 40 PageUp presses over 10,000 messages.
Prints tui_* figures (target: a page in well under 100 ms at any depth; stalls under 50 ms).
(tests/tui/test_scrollback.py checks the same scenarios for correctness only: timing
thresholds there would break on a loaded machine.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import REPO, emit, median, note, percentile, run
from bench_history_open import cached_data_dir
from chinwag.node import Node, NodeConfig
from chinwag.store.db import Store
from chinwag.ui.tui import PAGE, ChinwagApp
from chinwag.ui.tui_view import MessageView

sys.path.insert(0, str(REPO / "tests" / "tui"))
from tui_support import BOB, feed, make_node, message

PAGES = 25


async def measure(n: int, rebuild: bool) -> None:
    """Open the TUI on the big database and page back through it."""
    data_dir, _ = cached_data_dir(n, rebuild, None)
    config = NodeConfig(
        data_dir=data_dir,
        nick="bench",
        port=0,
        port_fallback=False,
        bind="127.0.0.1",
        discovery=False,
    )
    app = ChinwagApp(Node(config), bell=False)
    start = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        while not (app.started and app.current):
            await pilot.pause(0.001)
        view = app.views[app.current]
        await pilot.pause()
        emit("tui_messages", n)
        emit("tui_first_screen_ms", (time.perf_counter() - start) * 1000)

        lags: list[float] = []
        paging = True

        async def watch() -> None:
            while paging:
                before = time.perf_counter()
                await asyncio.sleep(0.002)
                lags.append((time.perf_counter() - before - 0.002) * 1000)

        watcher = asyncio.create_task(watch())
        pages: list[float] = []
        for _ in range(PAGES):
            held = len(view.entries)
            view.fetching = True  # load the page below, not from the scroll's own request
            view.scroll_to(y=0, animate=False, force=True)
            # What scrolling to the top posts, handled here to time it: read, build, prepend,
            # then the next screen update.
            begin = time.perf_counter()
            await app.on_message_view_need_older(MessageView.NeedOlder(view))
            await pilot.pause()
            pages.append((time.perf_counter() - begin) * 1000)
            assert len(view.entries) > held
        paging = False
        await watcher
        emit("tui_page_size", PAGE)
        emit("tui_page_ms_median", median(pages))
        emit("tui_page_ms_p95", percentile(pages, 95))
        emit("tui_page_ms_max", max(pages))
        emit("tui_loop_stall_ms_max", max(lags))
        emit("tui_entries_held", len(view.entries))

        store = Store(data_dir / "chinwag.db")
        try:
            (far,) = store.db.execute(
                "SELECT id FROM messages WHERE room='general' "
                "ORDER BY ts, author, seq LIMIT 1 OFFSET 999"
            ).fetchone()
        finally:
            store.close()
        deep = []
        for _ in range(20):
            begin = time.perf_counter()
            app.node.history("general", PAGE, before=far)
            deep.append((time.perf_counter() - begin) * 1000)
        emit("tui_history_before_far_ms_median", median(deep))
    note("done")


async def measure_burst() -> None:
    """A burst of 1,000 incoming messages while typing, then 40 PageUps over 10,000 messages."""
    with tempfile.TemporaryDirectory() as tmp:
        app = ChinwagApp(make_node(Path(tmp) / "me"), bell=False)
        async with app.run_test(size=(80, 24)) as pilot:
            while not (app.started and app.current):
                await pilot.pause(0.001)
            view = app.views[app.current]
            lags: list[float] = []
            watching = True

            async def watch() -> None:
                while watching:
                    before = time.perf_counter()
                    await asyncio.sleep(0.005)
                    lags.append((time.perf_counter() - before - 0.005) * 1000)

            async def burst() -> None:
                for tick in range(100):
                    feed(app, *(message(f"fast {tick * 10 + i}", peer_id=BOB) for i in range(10)))
                    await asyncio.sleep(0.01)

            gc.collect()
            watcher = asyncio.create_task(watch())
            sender = asyncio.create_task(burst())
            await pilot.press(*"typing along")
            await sender
            while not any("fast 999" in t for t in view.plain_lines()):
                await pilot.pause(0.01)
            watching = False
            await watcher
            emit("tui_burst_loop_stall_ms_max", max(lags))
            emit("tui_burst_loop_stall_ms_p99", percentile(lags, 99))

            feed(app, *(message(f"burst {i}", ts=1_790_000_000 + i) for i in range(9_000)))
            while len(view.entries) <= 10_000:
                await pilot.pause(0.01)
            await pilot.pause()
            begin = time.perf_counter()
            for _ in range(40):
                await pilot.press("pageup")
            emit("tui_pageup_40_over_10k_ms", (time.perf_counter() - begin) * 1000)


async def measure_all(n: int, rebuild: bool, burst_only: bool) -> None:
    await measure_burst()
    if not burst_only:
        await measure(n, rebuild)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--burst-only", action="store_true", help="only (e): no big database needed"
    )
    args = parser.parse_args()
    run(lambda: measure_all(args.messages, args.rebuild, args.burst_only))


if __name__ == "__main__":
    main()

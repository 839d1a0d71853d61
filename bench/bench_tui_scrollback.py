"""The terminal UI over a room of 1,000,000 messages: first screen and scrolling back.

Reuses the cached database of bench_history_open.py (built once under bench/results/),
runs the Textual app headless (pilot) on it at 120x40, and measures
  (a) from starting the app to the first screen of the room (node start included),
  (b) each page of older history loaded by scrolling to the top (PAGES pages in a row),
  (c) the worst stall of the event loop while pages load (what typing would feel),
  (d) Node.history(before=...) far back in the room (the 1,000th oldest message).
Prints tui_* figures (target: a page in well under 100 ms at any depth).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _bench_common import emit, median, note, percentile, run
from bench_history_open import cached_data_dir
from chinwag.node import Node, NodeConfig
from chinwag.store.db import Store
from chinwag.ui.tui import PAGE, ChinwagApp
from chinwag.ui.tui_view import MessageView

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    run(lambda: measure(args.messages, args.rebuild))


if __name__ == "__main__":
    main()

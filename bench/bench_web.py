"""The web UI's speed: page ready, a burst of 1,000 messages, a big room, the added latency.

Real `chinwag --json --web` nodes on loopback and the distribution's Chromium:
  (a) page ready: from navigation start to the open room's last screen shown with the
      composer taking input (the page's `chinwag-ready` performance mark), median of runs;
  (b) burst: another node sends 1,000 messages in 1 s (100 every 0.1 s) while the page
      shows them; the page's long tasks (PerformanceObserver 'longtask', > 50 ms) give
      the longest main-thread task; also when the last message was on screen;
  (c) big room: page ready on a data directory holding --big messages (built once and
      cached by bench_history_open.py's builder under bench/results/);
  (d) added latency: one node's JSON-lines stdout and a WebSocket client on its web UI
      receive the same message events; the figure is WebSocket arrival minus stdout
      arrival, per message (p50, p99), messages paced 20 ms apart.
Prints `key=value` lines. Run inside `unshare -n` as root:

    unshare -n bash -c 'ip link set lo up && .venv/bin/python bench/bench_web.py'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _bench_common import REPO, emit, median, note, percentile, require_isolated_netns

sys.path.insert(0, str(REPO / "tests" / "web"))

from web_support import WebNode, launch_chromium, open_page

BURST = 1_000
BURST_STEP = 100
READY_RUNS = 5
LATENCY_MESSAGES = 200

#: Installed before the page's own scripts: collects long tasks from the start.
LONGTASKS = """
window.__longtasks = [];
new PerformanceObserver(list => { for (const e of list.getEntries())
  window.__longtasks.push(e.duration); }).observe({type: 'longtask', buffered: true});
"""
READY_MS = "performance.getEntriesByName('chinwag-ready')[0]?.startTime ?? null"


def page_ready_ms(browser: Any, node: WebNode) -> float:
    """Open the node's page in a fresh context; return ms from navigation start to ready."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = open_page(ctx, node)
        page.wait_for_function(f"() => ({READY_MS}) !== null", timeout=30_000)
        return float(page.evaluate(READY_MS))
    finally:
        ctx.close()


def bench_ready(browser: Any, a: WebNode) -> None:
    times = [page_ready_ms(browser, a) for _ in range(READY_RUNS)]
    emit("page_ready_ms_first", times[0])
    emit("page_ready_ms_median", median(times[1:]))
    emit("page_ready_ms_max", max(times))


def bench_burst(browser: Any, a: WebNode, b: WebNode) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.add_init_script(LONGTASKS)
    try:
        page = open_page(ctx, a)
        page.evaluate("window.__longtasks = []")
        last = f"burst {BURST:04d}"
        start = time.perf_counter()
        for lo in range(1, BURST + 1, BURST_STEP):
            for i in range(lo, lo + BURST_STEP):
                b.send(cmd="send", text=f"burst {i:04d}")
            pause = start + lo // BURST_STEP * 0.1 - time.perf_counter() + 0.1
            if pause > 0:
                time.sleep(pause)  # pacing the sender, not synchronising a test
        sent = time.perf_counter() - start
        page.locator("[data-testid=message-text]", has_text=last).wait_for(timeout=60_000)
        shown = time.perf_counter() - start
        tasks = page.evaluate("window.__longtasks")
        count = page.evaluate("document.querySelectorAll('[data-testid=message]').length")
    finally:
        ctx.close()
    emit("burst_messages", BURST)
    emit("burst_send_s", sent)
    emit("burst_last_shown_s", shown)
    emit("burst_longtasks", len(tasks))
    emit("burst_longtask_max_ms", max(tasks) if tasks else 0.0)
    emit("burst_messages_in_dom", int(count))


def bench_big(browser: Any, workdir: Path, n: int, rebuild: bool) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from bench_history_open import cached_data_dir

    data_dir, build_s = cached_data_dir(n, rebuild, None)
    emit("big_messages", n)
    emit("big_build_s", build_s if build_s is not None else "cached")
    node = WebNode(data_dir, "bench")
    node.stderr_path = workdir / "big.stderr.log"
    node.start(timeout=120)
    try:
        times = [page_ready_ms(browser, node) for _ in range(READY_RUNS)]
    finally:
        node.stop()
    emit("big_page_ready_ms_first", times[0])
    emit("big_page_ready_ms_median", median(times[1:]))


def bench_latency(a: WebNode, b: WebNode) -> None:
    """WebSocket arrival minus JSON-lines arrival of the same message events on node a."""
    import aiohttp

    token = a.url.split("token=", 1)[1]
    ws_seen: dict[str, float] = {}
    connected = threading.Event()
    done = threading.Event()

    async def client() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{a.origin}/ws", headers=headers) as ws,
        ):
            await ws.send_str(json.dumps({"cmd": "resume", "since": 0}))
            connected.set()
            async for msg in ws:
                now = time.perf_counter()
                event = json.loads(msg.data)
                if event.get("event") == "message" and event["text"].startswith("lat "):
                    ws_seen[event["id"]] = now
                    if len(ws_seen) == LATENCY_MESSAGES:
                        break
        done.set()

    thread = threading.Thread(target=lambda: asyncio.run(client()), daemon=True)
    thread.start()
    if not connected.wait(10):
        raise SystemExit("the WebSocket did not connect")
    stdout_seen: dict[str, float] = {}
    a.on_event = lambda e: (
        stdout_seen.setdefault(e["id"], time.perf_counter())
        if e.get("event") == "message" and e.get("text", "").startswith("lat ")
        else None
    )
    for i in range(LATENCY_MESSAGES):
        b.send(cmd="send", text=f"lat {i}")
        time.sleep(0.02)  # pacing: one message at a time through an idle node
    if not done.wait(30):
        raise SystemExit(f"only {len(ws_seen)} of {LATENCY_MESSAGES} messages on the WebSocket")
    a.on_event = None
    deltas = [(ws_seen[k] - stdout_seen[k]) * 1000 for k in ws_seen if k in stdout_seen]
    emit("latency_messages", len(deltas))
    emit("web_added_latency_ms_p50", percentile(deltas, 50))
    emit("web_added_latency_ms_p99", percentile(deltas, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big", type=int, default=1_000_000, help="messages in the big room")
    parser.add_argument("--no-big", action="store_true", help="skip the big-room figure")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the big database")
    args = parser.parse_args()
    require_isolated_netns()
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="chinwag-bench-web-"))
    a = WebNode(workdir / "a", "alice").start()
    b = WebNode(workdir / "b", "bob", "--peer", f"127.0.0.1:{a.port}").start()
    try:
        a.connected(b)
        b.connected(a)
        bench_latency(a, b)
        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                bench_ready(browser, a)
                bench_burst(browser, a, b)
                if not args.no_big:
                    bench_big(browser, workdir, args.big, args.rebuild)
            finally:
                browser.close()
    finally:
        b.stop()
        a.stop()
    note(f"work files in {workdir}")


if __name__ == "__main__":
    main()

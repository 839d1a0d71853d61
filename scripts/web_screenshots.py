"""Make the web UI screenshots in docs/: web-desktop.png (1280x800) and web-phone.png (360x740).

Starts three real nodes on loopback, has them chat, and photographs alice's page in
Chromium. Run it inside a fresh network namespace, as root:

    unshare -n bash -c 'ip link set lo up && .venv/bin/python scripts/web_screenshots.py'
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "web"))

from web_support import WebNode, isolated_network, launch_chromium, message, open_page  # noqa: E402

CHAT = [
    ("bob", "morning all! is the printer on the 2nd floor fixed yet?"),
    ("carol", "yes, since yesterday. it jammed again at 5 though"),
    ("alice", "I'll have a look after stand-up"),
    ("bob", "thanks @alice"),
    ("carol", "lunch at 12:30? the new ramen place opened"),
    ("alice", "count me in"),
    ("bob", "me too. I'll bring the slides for the review,\nthen we can go straight after"),
]


def main() -> int:
    if not isolated_network():
        print("run me inside `unshare -n` (see the docstring)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    base = Path(tempfile.mkdtemp(prefix="chinwag-shots-"))
    alice = WebNode(base / "alice", "alice").start()
    others = [
        WebNode(base / nick, nick, "--peer", f"127.0.0.1:{alice.port}").start()
        for nick in ("bob", "carol")
    ]
    nodes = {"alice": alice, "bob": others[0], "carol": others[1]}
    try:
        for node in others:
            alice.connected(node)
        for node in nodes.values():
            node.send(cmd="join", room="lunch")
        for nick, text in CHAT:
            nodes[nick].send(cmd="send", text=text)
            alice.wait_for(lambda e, t=text: e.get("event") == "message" and e.get("text") == t)
        nodes["carol"].send(cmd="send", room="lunch", text="table for 3 booked")
        report = base / "q3-report.pdf"
        report.write_bytes(b"%PDF-1.4\n" + bytes(3_400_000))
        nodes["carol"].send(cmd="send_file", to="#general", path=str(report))
        alice.wait_for(lambda e: e.get("event") == "file_offer")
        with sync_playwright() as p:
            browser = launch_chromium(p)
            ctx = browser.new_context(viewport={"width": 1280, "height": 800})
            page = open_page(ctx, alice)
            message(page, "bring the slides").wait_for(timeout=10_000)
            page.locator("[data-testid=offer]").first.wait_for(timeout=10_000)
            page.locator("[data-testid=peer]").nth(1).wait_for(timeout=10_000)
            # A private message while the page is open: its conversation shows unread.
            nodes["bob"].send(cmd="dm", to=alice.peer_id, text="can you review my PR today?")
            page.locator("[data-testid=room][data-room^='@'] [data-testid=unread-count]").wait_for(
                timeout=10_000
            )
            page.screenshot(path=str(ROOT / "docs" / "web-desktop.png"))
            page.emulate_media(color_scheme="dark")
            page.screenshot(path=str(ROOT / "docs" / "web-desktop-dark.png"))
            page.emulate_media(color_scheme="light")
            page.set_viewport_size({"width": 360, "height": 740})
            page.locator("[data-testid=files] [data-testid=dismiss]").first.click()
            page.screenshot(path=str(ROOT / "docs" / "web-phone.png"))
            page.click("[data-testid=drawer-rooms-button]")
            page.wait_for_function(
                "() => document.querySelector('[data-testid=rooms-drawer]')"
                ".getBoundingClientRect().x >= 0"
            )
            page.wait_for_timeout(300)  # the drawer's slide-in transition, for the picture
            page.screenshot(path=str(ROOT / "docs" / "web-phone-drawer.png"))
            ctx.close()
            browser.close()
    finally:
        for node in nodes.values():
            node.stop()
    print("wrote docs/web-desktop.png, web-desktop-dark.png, web-phone.png, web-phone-drawer.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

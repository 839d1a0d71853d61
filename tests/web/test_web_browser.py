"""The web page in a real browser: Chromium (Playwright) against real chinwag nodes.

Every test starts its own `chinwag --json --web` processes on loopback and drives
their pages; the browser is shared by the module. Waits are for page conditions
or node events with timeouts, never sleeps.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest
from web_support import PROMPT_S, XSS, WebNode, message, open_page

pytestmark = pytest.mark.browser

MS = PROMPT_S * 1000
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}


def pair(tmp_path: Path, nodes: list[WebNode]) -> tuple[WebNode, WebNode]:
    """Start alice and bob (bob dials alice) and wait until they are connected."""
    a = WebNode(tmp_path / "alice", "alice")
    nodes.append(a)
    a.start()
    b = WebNode(tmp_path / "bob", "bob", "--peer", f"127.0.0.1:{a.port}")
    nodes.append(b)
    b.start()
    a.connected(b)
    b.connected(a)
    return a, b


def type_and_send(page: Any, text: str) -> None:
    page.fill("[data-testid=composer]", text)
    page.keyboard.press("Enter")


def wait_text(page: Any, selector: str, text: str) -> None:
    """Wait until the element matching selector (looked up anew each time) contains text."""
    page.locator(selector, has_text=text).first.wait_for(timeout=MS)


def shown(page: Any, title: str) -> None:
    """Wait until the page shows a room (its title and messages render in the same frame)."""
    page.wait_for_function(
        "t => document.querySelector('[data-testid=room-title]').textContent === t",
        arg=title,
        timeout=MS,
    )


def assert_unique_messages(page: Any) -> None:
    ids = page.eval_on_selector_all(
        "[data-testid=message]", "nodes => nodes.map(n => n.dataset.msgid)"
    )
    assert len(ids) == len(set(ids)), "a message is shown twice"


def test_two_pages_chat_both_ways(browser: Any, tmp_path: Path, nodes: list[WebNode]) -> None:
    a, b = pair(tmp_path, nodes)
    ctx_a = browser.new_context(viewport=DESKTOP)
    ctx_b = browser.new_context(viewport=DESKTOP, color_scheme="dark")
    errors: list[str] = []
    page_a = open_page(ctx_a, a, errors)
    page_b = open_page(ctx_b, b, errors)

    type_and_send(page_a, "hello bob")
    message(page_b, "hello bob").wait_for(timeout=MS)
    type_and_send(page_b, "hi alice\nsecond line")
    page_b.keyboard.press("Shift+Enter")  # Shift+Enter in an empty composer sends nothing
    got = message(page_a, "second line")
    got.wait_for(timeout=MS)
    assert got.locator("[data-testid=message-text]").inner_text() == "hi alice\nsecond line"
    # Our own message gets a delivery mark once bob's receipt arrives.
    wait_text(page_a, "[data-testid=message]:has-text('hello bob') [data-testid=delivery]", "1/1")
    # The peer list shows bob with the path to him.
    peer = page_a.locator(f"[data-testid=peer][data-peer='{b.peer_id}']")
    peer.wait_for(timeout=MS)
    assert "127.0.0.1" in peer.locator("[data-testid=peer-path]").inner_text()
    # Both nodes stored both messages (the page went through the node's API).
    b.wait_for(lambda e: e.get("event") == "message" and e.get("text") == "hello bob")
    a.wait_for(lambda e: e.get("event") == "message" and e.get("text") == "hi alice\nsecond line")
    assert page_b.locator("[data-testid=day-separator]").count() == 1
    # The theme follows the system's: bob's browser prefers dark.
    background = "getComputedStyle(document.body).backgroundColor"
    assert page_a.evaluate(background) != page_b.evaluate(background)
    assert_unique_messages(page_a)
    assert_unique_messages(page_b)
    assert errors == []
    ctx_a.close()
    ctx_b.close()


def test_a_member_beyond_a_peer_is_listed_and_completed(
    browser: Any, tmp_path: Path, nodes: list[WebNode]
) -> None:
    """alice - bob - carol: alice's page lists carol (dimmed) by her presence record alone."""
    a, b = pair(tmp_path, nodes)
    c = WebNode(tmp_path / "carol", "carol", "--peer", f"127.0.0.1:{b.port}")
    nodes.append(c)
    c.start()
    c.connected(b)
    ctx = browser.new_context(viewport=DESKTOP)
    errors: list[str] = []
    page = open_page(ctx, a, errors)
    far = page.locator(f"[data-testid=peer][data-peer='{c.peer_id}']")
    far.wait_for(timeout=MS)
    assert far.get_attribute("data-online") == "true"
    assert far.locator("[data-testid=peer-path]").inner_text() == "member · online"
    page.fill("[data-testid=composer]", "hi ca")
    page.keyboard.press("Tab")
    assert page.input_value("[data-testid=composer]") == "hi carol "
    assert errors == []
    ctx.close()


def test_unread_counts_and_slash_commands(
    browser: Any, tmp_path: Path, nodes: list[WebNode]
) -> None:
    a, b = pair(tmp_path, nodes)
    ctx = browser.new_context(viewport=DESKTOP)
    page = open_page(ctx, a)
    # Tab completes commands and nicks, as in the terminal UI.
    page.fill("[data-testid=composer]", "/jo")
    page.keyboard.press("Tab")
    page.keyboard.type("lunch, hi @b")
    page.keyboard.press("Tab")
    assert page.input_value("[data-testid=composer]") == "/join lunch, hi @bob "
    # A composer line starting with '/' runs through the line UI's command layer.
    type_and_send(page, "/join lunch")
    page.locator("[data-testid=room][data-room='lunch']").wait_for(timeout=MS)
    page.wait_for_function("() => window.chinwag.state.current === 'lunch'", timeout=MS)
    type_and_send(page, "/help")
    page.locator("[data-testid=system]", has_text="/whois WHO").first.wait_for(timeout=MS)
    # bob writes in #general while alice reads #lunch: an unread count, and a mention mark.
    b.send(cmd="send", text="anyone there?")
    b.send(cmd="send", text="alice: lunch at noon?")
    general = page.locator("[data-testid=room][data-room='general']")
    wait_text(page, "[data-room='general'] [data-testid=unread-count]", "2")
    assert general.locator("[data-testid=mention-mark]").count() == 1
    page.keyboard.press("Alt+ArrowUp")  # the room above #lunch in the list
    shown(page, "#general")
    message(page, "alice: lunch at noon?").wait_for(timeout=MS)
    assert general.locator("[data-testid=unread-count]").count() == 0
    # Nick change through the button and dialog.
    page.click("[data-testid=nick-button]")
    page.fill("[data-testid=dialog-input-nick]", "alicia")
    page.click("[data-testid=dialog-submit]")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=own-nick]').textContent === 'alicia'",
        timeout=MS,
    )
    b.wait_for(lambda e: e.get("event") == "nick" and e.get("nick") == "alicia")
    ctx.close()


def test_private_message(browser: Any, tmp_path: Path, nodes: list[WebNode]) -> None:
    a, b = pair(tmp_path, nodes)
    ctx_a = browser.new_context(viewport=DESKTOP)
    ctx_b = browser.new_context(viewport=DESKTOP)
    page_a = open_page(ctx_a, a)
    page_b = open_page(ctx_b, b)
    # alice opens a private conversation from bob's entry in the peer list.
    page_a.click(f"[data-testid=peer][data-peer='{b.peer_id}']")
    page_a.click("[data-testid=peer-dm]")
    page_a.wait_for_function(f"() => window.chinwag.state.current === '@{b.peer_id}'", timeout=MS)
    type_and_send(page_a, "just between us")
    b.wait_for(lambda e: e.get("event") == "dm" and e.get("text") == "just between us")
    # bob's page lists the conversation with an unread count; opening it shows the message.
    row = page_b.locator(f"[data-testid=room][data-room='@{a.peer_id}']")
    row.wait_for(timeout=MS)
    assert row.locator("[data-testid=unread-count]").inner_text() == "1"
    assert row.locator("[data-testid=mention-mark]").count() == 1
    assert message(page_b, "just between us").count() == 0  # not in #general
    row.click()
    message(page_b, "just between us").wait_for(timeout=MS)
    type_and_send(page_b, "sure")
    message(page_a, "sure").wait_for(timeout=MS)
    a.wait_for(lambda e: e.get("event") == "dm" and e.get("text") == "sure")
    # The private text never shows in the public room.
    page_a.click("[data-testid=room][data-room='general']")
    shown(page_a, "#general")
    assert message(page_a, "sure").count() == 0
    ctx_a.close()
    ctx_b.close()


#: Ask for `rooms` now, and hand its answer to the page only after the given event
#: (as a slow answer would come), to check that a stale list does not undo a join or leave.
HOLD_ROOMS_ANSWER = """name => { const c = window.chinwag.conn; const on = c.onEvent;
  let held = null; window.__released = false;
  c.onEvent = (e) => {
    if (e.event === 'rooms' && !held && !window.__released) { held = e; return; }
    on(e);
    if (e.event === name && held) {
      on(held); held = null; window.__released = true;
      window.__roomsAfter = [...window.chinwag.state.rooms.keys()];
      window.__currentAfter = window.chinwag.state.current; } };
  c.send({cmd: 'rooms'}); window.chinwag.state.roomsAsked += 1; }"""


def test_private_room_with_passphrase(browser: Any, tmp_path: Path, nodes: list[WebNode]) -> None:
    a, b = pair(tmp_path, nodes)
    ctx_a = browser.new_context(viewport=DESKTOP)
    ctx_b = browser.new_context(viewport=DESKTOP)
    page_a = open_page(ctx_a, a)
    page_b = open_page(ctx_b, b)
    # alice's page gets the answer to a `rooms` asked for before her join only after the
    # `joined` event (as a slow answer would come): it must not drop the room again.
    page_a.evaluate(HOLD_ROOMS_ANSWER, "joined")
    for page in (page_a, page_b):
        page.click("[data-testid=join-button]")
        page.fill("[data-testid=dialog-input-room]", "hideout")
        page.fill("[data-testid=dialog-input-passphrase]", "correct horse battery")
        page.click("[data-testid=dialog-submit]")
        page.locator("[data-testid=room][data-room='hideout']").wait_for(timeout=MS)
        page.wait_for_function("() => window.chinwag.state.current === 'hideout'", timeout=MS)
    a.wait_for(lambda e: e.get("event") == "joined" and e.get("private") is True)
    page_a.wait_for_function("() => window.__released === true", timeout=MS)
    assert "hideout" in page_a.evaluate("window.__roomsAfter")
    assert page_a.evaluate("window.__currentAfter") == "hideout"
    type_and_send(page_a, "the eagle has landed")
    message(page_b, "the eagle has landed").wait_for(timeout=3 * MS)
    ev = b.wait_for(lambda e: e.get("event") == "message" and e.get("room") == "hideout")
    assert ev["text"] == "the eagle has landed"
    # Leaving takes the room off the list and goes back to #general.
    page_b.evaluate(HOLD_ROOMS_ANSWER, "left")
    page_b.click("[data-testid=leave-button]")
    page_b.wait_for_function("() => window.chinwag.state.current === 'general'", timeout=MS)
    page_b.locator("[data-testid=room][data-room='hideout']").wait_for(state="detached", timeout=MS)
    b.wait_for(lambda e: e.get("event") == "left" and e.get("room") == "hideout")
    # Likewise on bob's page an answer asked for before his leave, arriving after it,
    # does not bring the room back.
    page_b.wait_for_function("() => window.__released === true", timeout=MS)
    assert "hideout" not in page_b.evaluate("window.__roomsAfter")
    assert page_b.locator("[data-testid=room][data-room='hideout']").count() == 0
    ctx_a.close()
    ctx_b.close()


def test_file_offered_from_the_page_arrives_with_progress(
    browser: Any, tmp_path: Path, nodes: list[WebNode]
) -> None:
    a, b = pair(tmp_path, nodes)
    ctx_a = browser.new_context(viewport=DESKTOP)
    ctx_b = browser.new_context(viewport=DESKTOP)
    page_a = open_page(ctx_a, a)
    page_b = open_page(ctx_b, b)
    data = bytes(range(256)) * 8192  # 2 MiB
    src = tmp_path / "report.bin"
    src.write_bytes(data)
    # Offered with the picker (the 📎 button's file input).
    page_a.set_input_files("[data-testid=file-input]", str(src))
    offer = page_b.locator("[data-testid=offer]", has_text="report.bin")
    offer.wait_for(timeout=3 * MS)
    # The offer's message carries a chip that brings its card back once hidden.
    offer.locator("[data-testid=dismiss]").click()
    offer.wait_for(state="detached", timeout=MS)
    page_b.locator("[data-testid=file-chip]", has_text="report.bin").click()
    offer.wait_for(timeout=MS)
    # Record every progress value bob's page shows, however fast the transfer is.
    page_b.evaluate(
        """() => { window.__progress = [];
        new MutationObserver(() => { for (const p of document.querySelectorAll(
          '[data-testid=progress]')) window.__progress.push(p.getAttribute('aria-valuenow')); })
          .observe(document.body, {subtree: true, childList: true, attributes: true}); }"""
    )
    offer.locator("[data-testid=accept]").click()
    done = page_b.locator("[data-testid=offer][data-state=done]", has_text="report.bin")
    done.wait_for(timeout=6 * MS)
    assert done.locator("[data-testid=progress]").get_attribute("aria-valuenow") == "100"
    assert "saved at" in done.locator("[data-testid=file-status]").inner_text()
    assert page_b.evaluate("window.__progress.length") > 0
    ev = b.wait_for(lambda e: e.get("event") == "file_done")
    assert Path(ev["path"]).parent == b.data_dir / "downloads"
    assert hashlib.sha256(Path(ev["path"]).read_bytes()).digest() == hashlib.sha256(data).digest()
    assert done.locator("[data-testid=open-folder]").count() == 1

    # Dropped onto the message pane (a synthetic drop with a DataTransfer).
    page_a.evaluate(
        """() => { const dt = new DataTransfer();
        dt.items.add(new File(['dropped bytes'], 'dropped.txt', {type: 'text/plain'}));
        document.getElementById('messages').dispatchEvent(
          new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); }"""
    )
    dropped = page_b.locator("[data-testid=offer]", has_text="dropped.txt")
    dropped.wait_for(timeout=3 * MS)
    dropped.locator("[data-testid=reject]").click()
    page_b.locator("[data-testid=offer][data-state=failed]", has_text="dropped.txt").wait_for(
        timeout=MS
    )
    # In a private conversation the file is offered to that peer alone.
    page_a.click(f"[data-testid=peer][data-peer='{b.peer_id}']")
    page_a.click("[data-testid=peer-dm]")
    shown(page_a, "@bob")
    note = tmp_path / "for-bob.txt"
    note.write_text("only for you")
    page_a.set_input_files("[data-testid=file-input]", str(note))
    private = page_b.locator("[data-testid=offer]", has_text="for-bob.txt")
    private.wait_for(timeout=3 * MS)
    assert "private, to you" in private.inner_text()
    offer_ev = b.wait_for(
        lambda e: e.get("event") == "file_offer" and e.get("name") == "for-bob.txt"
    )
    assert offer_ev["room"] == ""
    ctx_a.close()
    ctx_b.close()


def test_phone_layout(browser: Any, tmp_path: Path, nodes: list[WebNode]) -> None:
    a, b = pair(tmp_path, nodes)
    ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = open_page(ctx, a)
    b.send(cmd="send", text="x" * 300)  # one long unbroken word must wrap, not scroll sideways
    message(page, "xxxx").wait_for(timeout=MS)

    def on_screen(testid: str) -> bool:
        box = page.locator(f"[data-testid={testid}]").bounding_box()
        return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]

    assert not on_screen("rooms-drawer")
    assert not on_screen("peers-drawer")
    composer = page.locator("[data-testid=composer]").bounding_box()
    assert composer is not None and composer["y"] + composer["height"] <= PHONE["height"]
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.evaluate("document.getElementById('messages').scrollWidth") <= PHONE["width"]

    page.click("[data-testid=drawer-rooms-button]")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=rooms-drawer]').getBoundingClientRect().x >= 0",
        timeout=MS,
    )
    page.click("[data-testid=drawer-backdrop]", position={"x": 340, "y": 400})
    page.wait_for_function(
        "() => document.querySelector('[data-testid=rooms-drawer]')"
        ".getBoundingClientRect().right <= 0",
        timeout=MS,
    )
    page.click("[data-testid=drawer-peers-button]")
    page.locator(f"[data-testid=peer][data-peer='{b.peer_id}']").wait_for(timeout=MS)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=peers-drawer]')"
        ".getBoundingClientRect().right <= 360",
        timeout=MS,
    )
    page.click("[data-testid=drawer-backdrop]", position={"x": 20, "y": 400})
    # Choosing a room in the drawer closes it.
    page.click("[data-testid=drawer-rooms-button]")
    page.click("[data-testid=room][data-room='general']")
    page.wait_for_function("() => !document.body.classList.contains('rooms-open')", timeout=MS)
    # The on-screen keyboard takes the lower half: the composer stays on screen above it.
    page.focus("[data-testid=composer]")
    page.set_viewport_size({"width": 360, "height": 400})
    page.wait_for_function(
        "() => { const r = document.querySelector('[data-testid=composer]')"
        ".getBoundingClientRect(); return r.bottom <= 400 && r.top > 200; }",
        timeout=MS,
    )
    type_and_send(page, "from my phone")
    b.wait_for(lambda e: e.get("event") == "message" and e.get("text") == "from my phone")
    ctx.close()


NOTIFY_SPY = """
Object.defineProperty(Document.prototype, 'hidden', {get: () => true});
Object.defineProperty(Document.prototype, 'visibilityState', {get: () => 'hidden'});
window.__notes = [];
const Real = window.Notification;
window.Notification = class extends Real {
  constructor(title, options) { super(title, options);
    window.__notes.push({title, body: options && options.body}); }
};
"""


def test_notification_when_tab_hidden(browser: Any, tmp_path: Path, nodes: list[WebNode]) -> None:
    a, b = pair(tmp_path, nodes)
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.grant_permissions(["notifications"], origin=a.origin)
    ctx.add_init_script(NOTIFY_SPY)
    page = open_page(ctx, a)
    assert page.evaluate("Notification.permission") == "granted"
    b.send(cmd="send", text="just chatting")  # neither private nor a mention: no notification
    b.send(cmd="dm", to=a.peer_id, text="psst, private")
    b.send(cmd="send", text="hey @alice, look")
    page.wait_for_function("() => window.__notes.length >= 2", timeout=MS)
    notes = page.evaluate("window.__notes")
    assert [n["body"] for n in notes] == ["psst, private", "hey @alice, look"]
    assert "bob" in notes[0]["title"]
    ctx.close()
    # A visible tab shows the message and raises no notification.
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.grant_permissions(["notifications"], origin=a.origin)
    ctx.add_init_script(
        "window.__notes = []; const R = window.Notification; window.Notification = class "
        "extends R { constructor(t, o) { super(t, o); window.__notes.push(t); } };"
    )
    page = open_page(ctx, a)
    b.send(cmd="dm", to=a.peer_id, text="are you there?")
    page.locator(f"[data-testid=room][data-room='@{b.peer_id}']").wait_for(timeout=MS)
    assert page.evaluate("document.hidden") is False
    assert page.evaluate("window.__notes") == []
    ctx.close()


def test_script_injection_is_shown_as_text(
    browser: Any, tmp_path: Path, nodes: list[WebNode]
) -> None:
    a, b = pair(tmp_path, nodes)
    ctx = browser.new_context(viewport=DESKTOP)
    page = open_page(ctx, a)
    # What a peer can really send: message text, a private message, a file name.
    b.send(cmd="send", text=XSS)
    b.send(cmd="dm", to=a.peer_id, text=XSS)
    evil = tmp_path / XSS
    evil.write_bytes(b"boo")
    b.send(cmd="send_file", to=a.peer_id, path=str(evil))
    page.locator("[data-testid=offer]", has_text=XSS).wait_for(timeout=MS)
    message(page, XSS).wait_for(timeout=MS)
    # Nicks and room names are validated by the nodes, so feed the page's event handler
    # directly with a hostile nick, room, address, reason and file name in every event.
    # The page's own requests (rooms, peers) would overwrite the fed state: hold them.
    page.evaluate("() => { window.chinwag.conn.send = () => {}; }")
    page.evaluate(
        """xss => { const on = window.chinwag.conn.onEvent;
        const pid = 'x'.repeat(52);
        on({event: 'peer_joined', peer_id: pid, nick: xss, address: xss, seq: 0});
        on({event: 'peers', peers: [{peer_id: pid, nick: xss, address: xss, since: 0,
            rtt_ms: 1}], relayed: [{peer_id: 'y'.repeat(52), nick: xss, via: pid, seen: 0}]});
        on({event: 'rooms', rooms: [{name: 'general', members: 1, joined: true},
            {name: xss, members: 2, joined: false}]});
        on({event: 'message', id: 'f'.repeat(32), room: 'general', peer_id: pid, nick: xss,
            ts: Date.now() / 1000, text: xss, own: false, author_seq: 1, seq: 0});
        on({event: 'joined', room: xss, private: false});
        on({event: 'message', id: 'e'.repeat(32), room: xss, peer_id: pid, nick: xss,
            ts: Date.now() / 1000, text: xss, own: false, author_seq: 2, seq: 0});
        on({event: 'nick', peer_id: pid, nick: xss, old: xss, own: false, seq: 0});
        on({event: 'file_offer', id: 'd'.repeat(16), peer_id: pid, nick: xss, name: xss,
            size: 3, sha256: '0'.repeat(64), room: xss, own: false, seq: 0});
        on({event: 'file_failed', id: 'd'.repeat(16), reason: xss, seq: 0});
        on({event: 'warning', message: xss, peer_id: pid, seq: 0});
        on({event: 'dm_held', id: 1, nick: xss, peer_id: pid, old_peer_id: 'y'.repeat(52),
            text: xss, ts: 1, seq: 0});
        on({event: 'line', text: xss, seq: 0});
        on({event: 'error', message: xss, seq: 0});
        on({event: 'peer_left', peer_id: pid, nick: xss, reason: xss, seq: 0});
        on({event: 'search', text: xss, messages: [{event: 'message', id: 'c'.repeat(32),
            room: 'general', peer_id: pid, nick: xss, ts: 1, text: xss, own: false, seq: 3}]});
        }""",
        XSS,
    )
    page.locator("[data-testid=search-result]", has_text=XSS).wait_for(timeout=MS)
    page.keyboard.press("Escape")
    page.locator("[data-testid=room]", has_text=XSS).wait_for(timeout=MS)
    page.locator("[data-testid=net-room]", has_text=XSS).wait_for(timeout=MS)
    # Whois and message info dialogs with hostile fields.
    page.evaluate(
        """xss => { const st = window.chinwag.state;
        st.wantWhois = {who: 'x'.repeat(52), then: 'show'};
        window.chinwag.conn.onEvent({event: 'whois', peer_id: 'x'.repeat(52), nick: xss,
          fingerprint: xss, verified: false, safety_number: xss, blocked: false, online: true,
          seq: 0}); }""",
        XSS,
    )
    page.locator("[data-testid=safety-number]", has_text=XSS).wait_for(timeout=MS)
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.getElementById('dialog').open", timeout=MS)
    page.locator("[data-testid=peer]", has_text=XSS).first.wait_for(timeout=MS)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("[data-testid=message-text]", has_text=XSS).count() == 1  # in #XSS
    page.click("[data-testid=room][data-room='general']")
    shown(page, "#general")
    # The real message and the fed one, shown literally.
    texts = page.eval_on_selector_all(
        "[data-testid=message-text]", "ns => ns.map(n => n.textContent)"
    )
    assert texts.count(XSS) == 2
    assert page.evaluate("window.__pwned") is None
    ctx.close()


def test_history_loads_as_you_scroll_up(browser: Any, tmp_path: Path, nodes: list[WebNode]) -> None:
    a, _b = pair(tmp_path, nodes)
    for i in range(1, 251):
        a.send(cmd="send", text=f"old message {i:03d}")
    a.wait_for(lambda e: e.get("event") == "message" and e.get("text") == "old message 250")
    ctx = browser.new_context(viewport=DESKTOP)
    page = open_page(ctx, a)
    message(page, "old message 250").wait_for(timeout=MS)
    # Only the last page is loaded at first, not all 250.
    assert page.locator("[data-testid=message]").count() < 250
    for _ in range(20):
        if message(page, "old message 001").count():
            break
        page.evaluate("document.getElementById('messages').scrollTop = 0")
        page.wait_for_function(
            "() => { const r = window.chinwag.state.rooms.get('general'); return !r.loading; }",
            timeout=MS,
        )
    message(page, "old message 001").wait_for(timeout=MS)
    texts = page.eval_on_selector_all(
        "[data-testid=message-text]", "ns => ns.map(n => n.textContent)"
    )
    olds = [t for t in texts if t.startswith("old message")]
    assert olds == [f"old message {i:03d}" for i in range(1, 251)]
    ctx.close()


def test_reconnects_and_catches_up_without_duplicates(
    browser: Any, tmp_path: Path, nodes: list[WebNode]
) -> None:
    a, b = pair(tmp_path, nodes)
    ctx = browser.new_context(viewport=DESKTOP)
    page = open_page(ctx, a)
    b.send(cmd="send", text="before the drop")
    message(page, "before the drop").wait_for(timeout=MS)
    # Cut the socket and keep it from coming back until bob has written more.
    page.evaluate(
        """() => { const c = window.chinwag.conn; window.__connect = c.connect.bind(c);
        c.connect = () => {}; c.drop(); }"""
    )
    page.wait_for_selector("[data-testid=status][data-state=offline]", timeout=MS)
    for i in range(5):
        b.send(cmd="send", text=f"while away {i}")
    a.wait_for(lambda e: e.get("event") == "message" and e.get("text") == "while away 4")
    page.evaluate(
        "() => { const c = window.chinwag.conn; c.connect = window.__connect; c.connect(); }"
    )
    page.wait_for_selector("[data-testid=status][data-state=online]", timeout=MS)
    message(page, "while away 4").wait_for(timeout=MS)
    for i in range(5):
        assert message(page, f"while away {i}").count() == 1
    assert message(page, "before the drop").count() == 1
    assert_unique_messages(page)
    ctx.close()


def test_server_restart_logs_out_then_resyncs(
    browser: Any, tmp_path: Path, nodes: list[WebNode]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        web_port = s.getsockname()[1]
    a = WebNode(tmp_path / "alice", "alice", "--web-port", str(web_port))
    nodes.append(a)
    a.start()
    a.send(cmd="send", text="before the restart")
    ctx = browser.new_context(viewport=DESKTOP)
    page = open_page(ctx, a)
    message(page, "before the restart").wait_for(timeout=MS)
    a.stop()
    page.wait_for_selector("[data-testid=status][data-state=offline]", timeout=MS)
    again = WebNode(tmp_path / "alice", "alice", "--web-port", str(web_port))
    nodes.append(again)
    again.start()
    again.send(cmd="send", text="after the restart")
    again.wait_for(lambda e: e.get("event") == "message" and e.get("text") == "after the restart")
    # Sessions live in the server's memory: the old cookie no longer works, and the page
    # says what to do instead of spinning.
    page.wait_for_selector("[data-testid=status][data-state=loggedout]", timeout=3 * MS)
    # Logging in again (in another tab) brings the first tab back: it resyncs.
    open_page(ctx, again).close()
    page.wait_for_selector("[data-testid=status][data-state=online]", timeout=3 * MS)
    message(page, "after the restart").wait_for(timeout=MS)
    assert message(page, "before the restart").count() == 1
    assert_unique_messages(page)
    ctx.close()


def test_verify_search_info_and_block(browser: Any, tmp_path: Path, nodes: list[WebNode]) -> None:
    a, b = pair(tmp_path, nodes)
    ctx = browser.new_context(viewport=DESKTOP)
    page = open_page(ctx, a)
    # Verify: the page shows the same safety number bob's node computes.
    b.send(cmd="verify", who=a.peer_id)
    number = b.wait_for(lambda e: e.get("event") == "whois")["safety_number"]
    page.click(f"[data-testid=peer][data-peer='{b.peer_id}']")
    page.click("[data-testid=peer-verify]")
    assert page.locator("[data-testid=safety-number]").inner_text() == number
    page.click("[data-testid=verify-confirm]")
    page.locator(f"[data-peer='{b.peer_id}'] [data-testid=verified-mark]").wait_for(timeout=MS)
    a.send(cmd="whois", who=b.peer_id)
    assert a.wait_for(lambda e: e.get("event") == "whois")["verified"] is True
    # Message info: click our own message once bob holds it.
    type_and_send(page, "who has this?")
    wait_text(page, "[data-testid=message]:has-text('who has this?') [data-testid=delivery]", "1/1")
    message(page, "who has this?").click()
    info = page.locator("[data-testid=message-info]")
    info.wait_for(timeout=MS)
    assert "bob" in info.inner_text()
    page.keyboard.press("Escape")
    # Search.
    b.send(cmd="send", text="the quarterly numbers are in")
    message(page, "quarterly numbers").wait_for(timeout=MS)
    page.click("[data-testid=search-button]")
    page.fill("[data-testid=dialog-input-text]", "QUARTERLY")
    page.click("[data-testid=dialog-submit]")
    result = page.locator("[data-testid=search-result]")
    result.wait_for(timeout=MS)
    assert result.count() == 1
    assert "the quarterly numbers are in" in result.inner_text()
    result.click()  # shows the message in its room
    page.locator("[data-testid=message].flash", has_text="quarterly numbers").wait_for(timeout=MS)
    # Block from the whois card.
    page.click(f"[data-testid=peer][data-peer='{b.peer_id}']")
    page.click("[data-testid=peer-whois]")
    page.click("[data-testid=block-toggle]")
    # The page's next whois goes over the same socket after the block, so its card says
    # "Unblock" once the block is done; only then ask the node over its own stdin.
    page.click(f"[data-testid=peer][data-peer='{b.peer_id}']")
    page.click("[data-testid=peer-whois]")
    page.locator("[data-testid=block-toggle]", has_text="Unblock").wait_for(timeout=MS)
    a.send(cmd="whois", who=b.peer_id)
    a.wait_for(lambda e: e.get("event") == "whois" and e.get("blocked") is True)
    ctx.close()


def test_marks_of_messages_delivered_before_the_page_opened(
    browser: Any, tmp_path: Path, nodes: list[WebNode]
) -> None:
    a, b = pair(tmp_path, nodes)
    a.send(cmd="send", text="sent before the page")
    own = a.wait_for(
        lambda e: e.get("event") == "message" and e.get("text") == "sent before the page"
    )
    a.wait_for(lambda e: e.get("event") == "delivered" and e.get("id") == own["id"])
    b.send(cmd="send", text="bob wrote this")
    a.wait_for(lambda e: e.get("event") == "message" and e.get("text") == "bob wrote this")
    ctx = browser.new_context(viewport=DESKTOP)
    page = open_page(ctx, a)
    # The history answer brings the mark: no `delivered` event reached this page.
    mark = "[data-testid=message]:has-text('sent before the page') [data-testid=delivery]"
    wait_text(page, mark, "\u2713 1/1")
    assert page.locator(mark).inner_text() == "\u2713 1/1"
    assert message(page, "bob wrote this").locator("[data-testid=delivery]").count() == 0
    # A later receipt still updates it: carol catches up and holds it too.
    c = WebNode(tmp_path / "carol", "carol", "--peer", f"127.0.0.1:{a.port}")
    nodes.append(c)
    c.start()
    c.wait_for(lambda e: e.get("event") == "message" and e.get("id") == own["id"])
    wait_text(page, mark, "\u2713 2/2")
    ctx.close()


def test_resync_refreshes_marks_of_messages_shown(
    browser: Any, tmp_path: Path, nodes: list[WebNode]
) -> None:
    a, _b = pair(tmp_path, nodes)
    ctx = browser.new_context(viewport=DESKTOP)
    page = open_page(ctx, a)
    type_and_send(page, "seen live")
    mark = "[data-testid=message]:has-text('seen live') [data-testid=delivery]"
    wait_text(page, mark, "\u2713 1/1")
    own = a.wait_for(lambda e: e.get("event") == "message" and e.get("text") == "seen live")
    # Offline, and back with a server run the node does not know: it answers resync, so
    # the `delivered` event carol causes meanwhile is never replayed to the page.
    page.evaluate(
        """() => { const c = window.chinwag.conn; window.__connect = c.connect.bind(c);
        c.connect = () => {}; c.drop(); }"""
    )
    page.wait_for_selector("[data-testid=status][data-state=offline]", timeout=MS)
    c = WebNode(tmp_path / "carol", "carol", "--peer", f"127.0.0.1:{a.port}")
    nodes.append(c)
    c.start()
    a.wait_for(
        lambda e: e.get("event") == "delivered" and e.get("id") == own["id"] and e["count"] == 2
    )
    page.evaluate(
        """() => { const c = window.chinwag.conn; c.serverRun = "0000000000000000";
        c.connect = window.__connect; c.connect(); }"""
    )
    page.wait_for_selector("[data-testid=status][data-state=online]", timeout=MS)
    wait_text(page, mark, "\u2713 2/2")
    assert message(page, "seen live").count() == 1
    ctx.close()

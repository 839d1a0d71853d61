"""The TUI driven headless by Textual's pilot, over a real Node (loopback, no discovery)."""

from __future__ import annotations

from pathlib import Path

from textual import events
from tui_support import (
    BOB,
    CAROL,
    CAROL2,
    AppFactory,
    dm,
    enter,
    feed,
    make_node,
    message,
    shown,
    started,
    texts,
    until,
)

from chinwag.ui.tui_widgets import ChatInput, HelpScreen, RoomList, SecretScreen


async def test_typing_sends_a_message_to_the_room(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await pilot.press(*"hello world", "enter")
        await until(pilot, lambda: shown(a, "me: hello world"))
        assert [m.text for m in a.node.history("general").messages] == ["hello world"]
        assert a.query_one(ChatInput).value == ""
        # `//` escapes a leading slash.
        await pilot.press(*"//shrug", "enter")
        await until(pilot, lambda: shown(a, "me: /shrug"))


async def test_line_commands_run_and_errors_are_lines(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await enter(pilot, "/id")
        await until(pilot, lambda: shown(a, f"peer id {a.node.identity.peer_id}"))
        await enter(pilot, "/bogus")
        await until(pilot, lambda: shown(a, "error: unknown command /bogus; try /help"))
        await enter(pilot, "/help")
        await until(pilot, lambda: shown(a, "/bell [on|off]"))
        await enter(pilot, "/nick meg")
        await until(pilot, lambda: shown(a, "you are now known as meg"))
        assert a.node.nick == "meg"


async def test_join_switch_leave_drive_the_current_room(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        assert a.current == "general"
        await enter(pilot, "/join dev")
        await until(pilot, lambda: a.current == "dev")
        await enter(pilot, "in dev")
        await until(pilot, lambda: shown(a, "me: in dev", "dev"))
        assert not shown(a, "in dev", "general")
        await pilot.press("ctrl+n")
        assert a.current == "general"
        await enter(pilot, "/switch #dev")
        await until(pilot, lambda: a.current == "dev")
        await enter(pilot, "/switch nowhere")
        await until(pilot, lambda: shown(a, "you are not in #nowhere"))
        await enter(pilot, "/leave dev")
        await until(pilot, lambda: "dev" not in a.views and a.current == "general")
        await enter(pilot, "/join secret --passphrase")
        await until(pilot, lambda: isinstance(a.screen, SecretScreen))
        await enter(pilot, "open sesame")
        await until(pilot, lambda: a.current == "secret", timeout=10)


async def test_tab_completes_commands_rooms_and_nicks(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        feed(a, message("hi", BOB, "bob"), message("yo", CAROL, "carol"))
        await until(pilot, lambda: shown(a, "carol: yo"))
        box = a.query_one(ChatInput)
        await pilot.press(*"/jo", "tab")
        assert box.value == "/join "
        await pilot.press(*"gen", "tab")
        assert box.value == "/join general "
        box.value = ""
        await pilot.press("b", "tab")
        assert box.value == "bob: "
        box.value = ""
        await pilot.press(*"hi @ca", "tab")
        assert box.value == "hi @carol "
        box.value = ""
        await pilot.press(*"/se", "tab")  # /search and /send: Tab again cycles
        assert box.value == "/search"
        await pilot.press("tab")
        assert box.value == "/send"
        await pilot.press("tab")
        assert box.value == "/search"


async def test_up_and_down_recall_earlier_input(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        for line in ("one", "two"):
            await pilot.press(*line, "enter")
        box = a.query_one(ChatInput)
        await pilot.press(*"dra")
        await pilot.press("up")
        assert box.value == "two"
        await pilot.press("up", "up")
        assert box.value == "one"
        await pilot.press("down", "down")
        assert box.value == "dra"


async def test_multi_line_paste_is_one_message_or_refused(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        box = a.query_one(ChatInput)
        box.post_message(events.Paste("first line\nsecond line\n"))
        await until(pilot, lambda: len(a.node.history("general").messages) == 1)
        assert a.node.history("general").messages[0].text == "first line\nsecond line"
        box.post_message(events.Paste("x" * 5000 + "\ny"))
        await until(pilot, lambda: shown(a, "paste not sent: 5002 bytes"))
        assert len(a.node.history("general").messages) == 1


async def test_private_messages_and_mentions_are_counted_and_ring(app: AppFactory) -> None:
    a = app(bell=True)
    rings: list[int] = []
    a.bell = lambda: rings.append(1)  # type: ignore[method-assign]
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await enter(pilot, "/join dev")
        await until(pilot, lambda: a.current == "dev")
        feed(a, message("nothing for you", room="general"))
        feed(a, message("hey @me look", room="general"))
        await until(pilot, lambda: a.rooms["general"].unread == 2)
        assert a.rooms["general"].mentions == 1
        assert len(rings) == 1
        me = a.node.identity.peer_id
        a._last_bell = 0.0
        feed(a, dm("psst", to=me))
        name = "@" + BOB[:8]
        await until(pilot, lambda: name in a.rooms and a.rooms[name].mentions == 1)
        assert len(rings) == 2
        assert "!" in str(a.query_one(RoomList).render())
        await pilot.press("ctrl+o")  # jump to a room with mentions
        assert a.current == "general" and a.rooms["general"].unread == 0
        await pilot.press("ctrl+o")
        assert a.current == name
        assert shown(a, "bob: psst")
        # In the conversation, what we type is a private message to bob.
        await enter(pilot, "just between us")
        await until(pilot, lambda: shown(a, "me: just between us", name))
        sent = a.node.history("@" + BOB).messages
        assert [(m.text, m.to) for m in sent if m.own] == [("just between us", BOB)]
        assert not shown(a, "just between us", "general")
        assert not shown(a, "just between us", "dev")
        await enter(pilot, "/bell off")
        await until(pilot, lambda: not a.bell_on)
        a._last_bell = 0.0
        feed(a, message("me again?", room="general"))
        await until(pilot, lambda: a.rooms["general"].mentions == 1)
        assert len(rings) == 2


async def test_nicks_that_collide_show_short_ids(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(100, 24)) as pilot:
        await started(pilot)
        feed(a, message("first", CAROL, "carol"))
        await until(pilot, lambda: shown(a, "carol: first"))
        feed(a, message("second", CAROL2, "carol"))
        await until(pilot, lambda: shown(a, f"carol {CAROL2[:8]}: second"))
        assert shown(a, f"carol {CAROL[:8]}: first")


async def test_key_screen_opens_and_closes(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await pilot.press("f1")
        assert isinstance(a.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(a.screen, HelpScreen)
        await enter(pilot, "/keys")
        await until(pilot, lambda: isinstance(a.screen, HelpScreen))


async def test_quit_stops_the_node(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await enter(pilot, "/quit")
        await until(pilot, lambda: a.node.stopped.is_set())
    assert a.return_code == 0


async def test_ctrl_c_quits_and_stops_the_node(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await pilot.press("ctrl+c")
        await until(pilot, lambda: a.node.stopped.is_set())
    assert a.return_code == 0


async def test_resizing_keeps_working(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        feed(a, *(message(f"line {i} " + "word " * 20) for i in range(50)))
        await until(pilot, lambda: shown(a, "line 49"))
        await pilot.resize_terminal(60, 20)
        await until(pilot, lambda: a.screen.has_class("-narrow"))
        await pilot.resize_terminal(160, 48)
        await until(pilot, lambda: a.screen.has_class("-wide"))
        view = a.views["general"]
        assert view.scroll_y == view.max_scroll_y  # still following the newest line
        assert len(texts(a)) >= 51


async def test_unread_while_scrolled_up_clears_at_the_bottom(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        feed(a, *(message(f"old {i}") for i in range(60)))
        await until(pilot, lambda: shown(a, "old 59"))
        await pilot.press("pageup")
        feed(a, message("while you were away"))
        await until(pilot, lambda: a.rooms["general"].unread == 1)
        await pilot.press("pagedown", "pagedown")
        await until(pilot, lambda: a.rooms["general"].unread == 0)


async def test_a_locked_data_dir_ends_the_app_with_a_reason(
    app: AppFactory, tmp_path: Path
) -> None:
    first = make_node(tmp_path / "me", "me")
    await first.start()
    try:
        a = app()
        async with a.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: a.start_error)
        assert a.return_code == 1
        assert "is in use by another chinwag" in a.start_error
    finally:
        await first.stop()


# --- hardening: impossible timestamps ---------------------------------------------------


def store_message_dated(data_dir: Path, ts_ms: int, text: str) -> None:
    """Store a signed message by bob with any ts, as a node before the receipt check did."""
    from chinwag.crypto.identity import Identity
    from chinwag.protocol.chat import make_message
    from chinwag.store.db import NewMessage, Store

    bob = Identity.from_seed(b"b" * 32)
    msg = make_message(bob, "general", "bob", ts_ms, 1, text)
    store = Store(data_dir / "chinwag.db")
    try:
        store.insert_messages(
            [
                NewMessage(
                    msg.id,
                    "general",
                    bob.peer_id,
                    1,
                    ts_ms,
                    "bob",
                    text,
                    msg.raw_body,
                    msg.sig,
                    False,
                    True,
                )
            ]
        )
    finally:
        store.close()


async def test_a_stored_message_dated_past_year_9999_does_not_kill_the_app(
    app: AppFactory, tmp_path: Path
) -> None:
    # Stored by an older version: the app died rendering its date, at every start.
    (tmp_path / "me").mkdir()
    store_message_dated(tmp_path / "me", 2**62, "from the far future")
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await until(pilot, lambda: shown(a, "bob: from the far future"))
        # A live one too (a buggy peer, or a UI fed by something else).
        feed(a, message("also far", ts=1e18), message("before time", ts=-1e18))
        feed(a, message("not a number", ts=float("nan")))
        await until(pilot, lambda: shown(a, "bob: not a number"))
        assert shown(a, "bob: also far") and shown(a, "bob: before time")
        await pilot.press(*"still alive", "enter")
        await until(pilot, lambda: shown(a, "me: still alive"))
    assert a.return_code in (None, 0)

"""Long messages wrap at word boundaries in the message view (never cut at the width)."""

from __future__ import annotations

import bisect
from pathlib import Path

from rich.cells import cell_len
from textual.pilot import Pilot
from tui_support import BOB, CAROL, AppFactory, feed, message, started, until

from chinwag.store.db import NewMessage, Store
from chinwag.ui.tui import PAGE, ChinwagApp
from chinwag.ui.tui_view import MessageView, wrap_spans

T0 = 1_790_000_000_000
#: 75 distinct words: a 600-character message.
WORDS = [f"word{i:03d}" for i in range(74)] + ["lastword"]
LONG = " ".join(WORDS)
assert len(LONG) == 600


def long_text(tag: int) -> str:
    """Return a ~600-character message whose words all carry `tag`."""
    return " ".join(f"m{tag}w{i:02d}" for i in range(100))[:600].rsplit(" ", 1)[0]


def on_screen(view: MessageView) -> list[str]:
    return view.screen_lines()


def rows_of(view: MessageView, needle: str) -> list[str]:
    """Return the screen rows of the message containing needle (all on screen; no date line)."""
    index = next(i for i, e in enumerate(view.entries) if e.text and needle in e.text.plain)
    entry = view.entries[index]
    top = view._cum[index] - round(view.scroll_y) + entry.sep
    return on_screen(view)[top : view._cum[index + 1] - round(view.scroll_y)]


async def long_message_scene(pilot: Pilot[int], text: str = LONG) -> tuple[ChinwagApp, MessageView]:
    app = await started(pilot)
    feed(app, message(text, BOB, "bob"))
    view = app.views["general"]
    await until(pilot, lambda: any("lastword" in t for t in view.plain_lines()))
    await pilot.pause()
    return app, view


def check_wrapped(view: MessageView, rows: list[str], hang: int) -> None:
    """All words whole and in order, no row wider than the view, continuations indented."""
    width = view.scrollable_content_region.width
    assert len(rows) > 1
    assert all(cell_len(row) <= width for row in rows)
    words = " ".join(rows).split()
    assert words[words.index("bob:") + 1 :] == WORDS
    for row in rows[1:]:
        assert row[:hang] == " " * hang and row[hang] != " ", row


def test_wrap_spans_breaks_at_words_and_hard_breaks_long_words() -> None:
    def rows(text: str, first: int, rest: int) -> list[str]:
        return [text[a:b] for a, b in wrap_spans(text, first, rest)]

    assert rows("hello world, how are you", 12, 8) == ["hello world,", "how are", "you"]
    assert rows("tiny", 10, 10) == ["tiny"]
    assert rows("a " + "x" * 12 + " b", 6, 5) == ["a", "xxxxx", "xxxxx", "xx b"]
    assert rows("  code that wraps", 8, 8) == ["  code", "that", "wraps"]
    # Wide characters count two cells; an emoji with a modifier stays whole.
    assert rows("中文字符测试 ok", 5, 5) == ["中文", "字符", "测试", "ok"]
    assert rows("👍🏽👍🏽👍🏽", 4, 4) == ["👍🏽👍🏽", "👍🏽"]
    assert rows("", 5, 5) == [""]


async def test_a_600_character_message_wraps_across_several_lines_at_80x24(
    app: AppFactory,
) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        _, view = await long_message_scene(pilot)
        hang = len("14:13 bob: ")
        rows = rows_of(view, "word000")
        assert len(rows) >= 600 // view.scrollable_content_region.width
        check_wrapped(view, rows, hang)
        # The newest line is on screen: the view follows the bottom.
        assert view.scroll_y == view.max_scroll_y
        assert on_screen(view)[-1] == rows[-1]


async def test_multi_line_and_wide_messages_show_every_line(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        app_ = await started(pilot)
        text = "first line\n  indented second\n" + "中文" * 30 + "\nlast 👍🏽"
        feed(app_, message(text, BOB, "bob"))
        view = app_.views["general"]
        await until(pilot, lambda: any("last" in t for t in view.plain_lines()))
        await pilot.pause()
        rows = rows_of(view, "first line")
        hang = len("14:13 bob: ")
        width = view.scrollable_content_region.width
        assert rows[0].endswith("bob: first line")
        assert rows[1] == " " * hang + "  indented second"
        cjk = [r.strip() for r in rows[2:-1]]
        assert "".join(cjk) == "中文" * 30
        assert all(cell_len(r) <= width for r in rows)
        assert len(cjk) == -(-120 // (width - hang))
        assert rows[-1] == " " * hang + "last 👍🏽"


async def test_resize_rewraps(app: AppFactory) -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        _, view = await long_message_scene(pilot)
        hang = len("14:13 bob: ")
        narrow = rows_of(view, "word000")
        await pilot.resize_terminal(160, 40)
        await until(pilot, lambda: view.scrollable_content_region.width > 100)
        await pilot.pause()
        wide = rows_of(view, "word000")
        check_wrapped(view, wide, hang)
        assert len(wide) < len(narrow)
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: view.scrollable_content_region.width < 60)
        await pilot.pause()
        assert rows_of(view, "word000") == narrow
        assert view.scroll_y == view.max_scroll_y


def fill_long(data_dir: Path, count: int) -> None:
    """Store `count` long messages (about 600 characters each) in #general."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir / "chinwag.db")
    try:
        store.insert_messages(
            [
                NewMessage(
                    id=f"{i:064x}",
                    room="general",
                    author=(BOB, CAROL)[i % 2],
                    seq=i // 2 + 1,
                    ts=T0 + i * 1000,
                    nick=("bob", "carol")[i % 2],
                    text=long_text(i),
                    body=b"",
                    sig=b"",
                    late=False,
                    verified=True,
                )
                for i in range(count)
            ]
        )
    finally:
        store.close()


async def test_scrolling_through_wrapped_messages_stays_sane(
    app: AppFactory, tmp_path: Path
) -> None:
    fill_long(tmp_path / "me", PAGE + 40)
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        view = a.views["general"]
        await pilot.pause()
        height = view.scrollable_content_region.height
        # At the bottom: the end of the newest message is on screen (the welcome notice below).
        assert view.scroll_y == view.max_scroll_y
        assert on_screen(view)[-1].endswith("for keys")
        assert any(long_text(PAGE + 39).split()[-1] in line for line in on_screen(view))
        # Every entry's height is the number of rows it draws.
        for entry in view.entries[-5:]:
            assert view._height(entry) == len(view._entry_strips(entry))
        assert view._cum[-1] > 10 * len(view.entries)

        # Page up: the screen moves by a page less one line, and is always full.
        before = on_screen(view)
        await pilot.press("pageup")
        assert view.scroll_y == view.max_scroll_y - (height - 1)
        after = on_screen(view)
        assert after[-1] == before[0]
        assert all(line.strip() for line in after)

        # A message arriving while scrolled up counts as unread; reading to the bottom clears it.
        feed(a, message(LONG, BOB, "bob", ts=T0 / 1000 + 10_000))
        await until(pilot, lambda: a.rooms["general"].unread == 1)
        assert on_screen(view) == after
        view.scroll_to(y=view.max_scroll_y, animate=False, force=True)
        await until(pilot, lambda: a.rooms["general"].unread == 0)
        assert on_screen(view)[-1].split()[-1] == WORDS[-1]

        # Resizing while scrolled up keeps the same message at the top.
        await pilot.press("pageup", "pageup", "pageup")
        top_entry = view.entries[bisect.bisect_right(view._cum, round(view.scroll_y)) - 1]
        await pilot.resize_terminal(120, 30)
        await until(pilot, lambda: view.scrollable_content_region.width > 60)
        await pilot.pause()
        index = view.entries.index(top_entry)
        assert view._cum[index] <= round(view.scroll_y) < view._cum[index + 1]

        # Older history loads at the top and the view stays anchored on what was there.
        view.scroll_to(y=0, animate=False, force=True)
        before = on_screen(view)
        old_top = view.entries[0]
        assert old_top.sep and before[0].startswith("──")
        await until(pilot, lambda: not view.has_older)
        await pilot.pause()
        assert len(view.entries) == PAGE + 40 + 2  # the welcome notice, the new message
        assert view._cum[view.entries.index(old_top)] == view.scroll_y
        # The same rows, but for its date line: older messages of its day now precede it.
        assert not old_top.sep
        assert on_screen(view)[: len(before) - 1] == before[1:]

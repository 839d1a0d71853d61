"""Defects found by using the TUI in a real terminal (tmux), each pinned by a pilot test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from textual import events
from textual.containers import VerticalScroll
from tui_support import (
    BOB,
    AppFactory,
    enter,
    feed,
    make_node,
    message,
    shown,
    started,
    texts,
    until,
)

from chinwag import events as ev
from chinwag.node import Node
from chinwag.ui.tui import ChinwagApp
from chinwag.ui.tui_widgets import ChatInput, HelpScreen


@pytest.fixture
async def bob_node(tmp_path: Path) -> AsyncIterator[list[Node]]:
    """Holder for a second node started by the test (stopped at teardown)."""
    made: list[Node] = []
    yield made
    for node in made:
        await node.stop()


def files_rows(app: ChinwagApp) -> list[str]:
    return str(app._w_files.render()).split("\n")


async def test_page_keys_scroll_the_key_screen_and_rooms_stay(app: AppFactory) -> None:
    """PageUp/PageDown and Ctrl+N/P/O are app-wide priority keys: over the key screen they
    scrolled the messages behind it (the screen's lower half was out of reach at 80x24)
    and switched rooms unseen."""
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await enter(pilot, "/join dev")
        await until(pilot, lambda: a.current == "dev")
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(a.screen, HelpScreen))
        scroll = a.screen.query_one(VerticalScroll)
        await pilot.press("pagedown")
        await until(pilot, lambda: scroll.scroll_y > 0)
        await pilot.press("ctrl+n")
        await pilot.press("ctrl+p")
        await pilot.press("ctrl+p")
        assert a.current == "dev"
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(a.screen, HelpScreen))
        await pilot.press("ctrl+n")
        assert a.current == "general"


async def test_paste_of_one_line_is_inserted_once_and_cr_lines_are_one_message(
    app: AppFactory,
) -> None:
    """A one-line paste was inserted twice (our handler and Input's both ran); terminals
    send a paste's line breaks as CR, so a real multi-line paste lost all but its first line."""
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        box = a.query_one(ChatInput)
        box.post_message(events.Paste("single"))
        await until(pilot, lambda: box.value != "")
        await pilot.pause()
        assert box.value == "single"
        box.post_message(events.Paste("one\rtwo\r\nthree"))
        await until(pilot, lambda: len(a.node.history("general").messages) == 1)
        assert a.node.history("general").messages[0].text == "singleone\ntwo\nthree"
        assert box.value == ""


async def test_view_keeps_its_newest_line_when_its_height_changes(app: AppFactory) -> None:
    """The files panel appearing (or the terminal shrinking) left a view that was at its
    bottom scrolled up: new messages arrived out of sight and were counted unread."""
    a = app()
    async with a.run_test(size=(200, 50)) as pilot:
        await started(pilot)
        view = a.views["general"]
        feed(a, *(message(f"line {i}") for i in range(80)))
        await until(pilot, lambda: shown(a, "bob: line 79"))
        await until(pilot, lambda: "bob: line 79" in view.screen_lines()[-1])
        offer = ev.FileOffer(
            id="f" * 64, peer_id=BOB, nick="bob", name="a.bin", size=10, sha256="0" * 64
        )
        feed(a, offer)
        await until(pilot, lambda: a._w_files.display and a._w_files.size.height > 0)
        feed(a, message("after the panel"))
        await until(pilot, lambda: shown(a, "bob: after the panel"))
        await until(pilot, lambda: "after the panel" in view.screen_lines()[-1])
        assert a.rooms["general"].unread == 0
        await pilot.resize_terminal(60, 20)
        await until(pilot, lambda: view.scrollable_content_region.width < 60)
        await until(pilot, lambda: "after the panel" in view.screen_lines()[-1])
        # Scrolled up by the user, it stays where it is and counts what arrives.
        await pilot.press("pageup")
        feed(a, message("while reading"))
        await until(pilot, lambda: a.rooms["general"].unread == 1)
        assert "while reading" not in "".join(view.screen_lines())


async def test_room_and_file_rows_never_wrap(app: AppFactory) -> None:
    """A long room name with an unread count wrapped in the room list (the count on a row
    of its own, every row below it one off for clicks); file rows wrapped at 80x24."""
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await enter(pilot, "/join averyveryverylongroomname")
        await until(pilot, lambda: a.current == "averyveryverylongroomname")
        await pilot.press("ctrl+n")
        feed(a, *(message(f"m{i}", room="averyveryverylongroomname") for i in range(1000)))
        await until(pilot, lambda: a.rooms["averyveryverylongroomname"].unread == 1000)
        rooms = a._w_rooms
        width = rooms.content_region.width
        await until(pilot, lambda: "1000" in str(rooms.render()))
        rows = str(rooms.render()).rstrip("\n").split("\n")
        assert len(rows) == len(rooms.rows) == 2
        assert rows[0].endswith("… 1000") and len(rows[0]) <= width
        offer = ev.FileOffer(
            id="f" * 64,
            peer_id=BOB,
            nick="bob",
            name="the quarterly report of the whole company.pdf",
            size=4_000_000,
            sha256="0" * 64,
        )
        moving = ev.FileOffer(
            id="e" * 64, peer_id=BOB, nick="bob", name="talk.mp4", size=80_000_000, sha256="1" * 64
        )
        feed(a, offer, moving)
        await until(pilot, lambda: moving.id in a.transfers)
        a.transfers[moving.id].state = "accepted"
        feed(a, ev.FileProgress(id=moving.id, bytes=20_000_000, total=80_000_000, rate=2_000_000))
        await until(pilot, lambda: "25%" in str(a._w_files.render()))
        width = a._w_files.content_region.width
        rows = files_rows(a)
        assert len(rows) == 2, rows
        assert all(len(row) <= width for row in rows), rows
        assert rows[0].startswith("⇩ the quarterly") and rows[0].endswith("[accept] [reject]")
        assert rows[1].endswith("25% 2.0 MB/s, 0:30 left")
        # Wider, the rows are drawn again to the new width.
        await pilot.resize_terminal(200, 40)
        await until(pilot, lambda: "whole company.pdf" in str(a._w_files.render()))


async def test_own_offers_and_our_rejections_read_right(app: AppFactory) -> None:
    """Our own offer got no word, its delivery read "received", and rejecting or cancelling
    a file showed a red "transfer failed" error."""
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        me = a.node.identity.peer_id
        own = ev.FileOffer(
            id="a" * 64, peer_id=me, nick="me", name="mine.txt", size=5, sha256="0" * 64, own=True
        )
        feed(a, own)
        await until(pilot, lambda: shown(a, "offered mine.txt [file aaaaaaaa]"))
        feed(a, ev.FileDone(id=own.id, path="/somewhere/mine.txt", sha256="0" * 64))
        await until(pilot, lambda: shown(a, "mine.txt delivered: the recipient has it"))
        assert not shown(a, "received")
        theirs = ev.FileOffer(
            id="b" * 64, peer_id=BOB, nick="bob", name="theirs.txt", size=5, sha256="0" * 64
        )
        feed(a, theirs)
        await until(pilot, lambda: theirs.id in a.transfers)
        a.transfers[theirs.id].state = "rejected"  # as our reject action leaves it
        feed(a, ev.FileFailed(id=theirs.id, reason="rejected"))
        other = ev.FileOffer(
            id="c" * 64, peer_id=BOB, nick="bob", name="other.txt", size=5, sha256="0" * 64
        )
        feed(a, other, ev.FileFailed(id=other.id, reason="cancelled"))
        await until(pilot, lambda: shown(a, "other.txt: cancelled"))
        assert not any(t.startswith("error") or "transfer failed" in t for t in texts(a))
        # A failure that is not our doing stays an error.
        feed(a, ev.FileFailed(id=own.id, reason="rejected by bob"))
        await until(pilot, lambda: shown(a, "mine.txt: transfer failed: rejected by bob"))


async def test_verify_shows_the_mark_in_the_peer_list(
    app: AppFactory, tmp_path: Path, bob_node: list[Node]
) -> None:
    """`/verify bob yes` said "verified" but the peer list showed no ✓ until a reconnect."""
    a = app()
    async with a.run_test(size=(100, 30)) as pilot:
        await started(pilot)
        b = make_node(tmp_path / "bob", "bob", peers=[("127.0.0.1", a.node.port)])
        bob_node.append(b)
        await b.start()
        pid = b.identity.peer_id
        await until(pilot, lambda: pid in a.peers and a.peers[pid].online)
        assert "bob ✓" not in str(a._w_peers.render())
        await enter(pilot, "/verify bob yes")
        await until(pilot, lambda: shown(a, "is verified"))
        await until(pilot, lambda: "bob ✓" in str(a._w_peers.render()))

"""States as data: file transfer states, directions and room kinds (docs/files.md, "States").

The tables in docs/files.md are parsed and compared with protocol/transfer.py's,
so the page and the code cannot drift apart; an illegal move raises the
protocol's local error, in the table and in FileShare.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from chinwag.crypto import box
from chinwag.crypto.identity import Identity
from chinwag.errors import LocalProtocolError
from chinwag.files import FileShare
from chinwag.protocol.kinds import RoomKind, kind_of_wire, room_kind
from chinwag.protocol.transfer import (
    INITIAL,
    STATES,
    TRANSITIONS,
    Direction,
    FileState,
    digest_root,
    encode_offer,
    move,
    new_offer,
    row_state,
)
from chinwag.rooms import RoomBook
from chinwag.store.db import FileRow, Store

DOC = Path(__file__).parents[2] / "docs" / "files.md"
ME = Identity.from_seed(b"z" * 32)
ALICE = Identity.from_seed(b"a" * 32)


def doc_section(title: str) -> str:
    """Return the text of one `## title` section of docs/files.md."""
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def table_rows(text: str, header: str) -> list[list[str]]:
    """Return the cells of the rows of the markdown table whose header row starts with header."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[first + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def states_in(cell: str) -> set[str]:
    """Return the `quoted` states named in a cell (notes in parentheses are not states)."""
    return set(re.findall(r"`([a-z]+)`", re.sub(r"\([^)]*\)", "", cell)))


def test_the_docs_state_table_lists_exactly_the_codes_states() -> None:
    documented: set[tuple[str, str]] = set()
    for direction, states, _meaning in table_rows(doc_section("States"), "| direction | state"):
        documented |= {(direction, s) for s in states_in(states)}
    in_code = {(str(d), str(s)) for d, states in STATES.items() for s in states}
    assert documented == in_code


def test_the_docs_transition_table_is_the_codes_table() -> None:
    documented: dict[tuple[str, str], set[str]] = {}
    for direction, old, new in table_rows(doc_section("States"), "| direction | from"):
        (state,) = states_in(old)
        documented[(direction, state)] = states_in(new)
    in_code = {(str(d), str(s)): {str(t) for t in to} for (d, s), to in TRANSITIONS.items()}
    assert documented == in_code


def test_the_table_is_closed_and_new_rows_start_in_a_known_state() -> None:
    """Every target is a state of its direction, and every state is reachable from the start."""
    for (direction, _old), targets in TRANSITIONS.items():
        assert targets <= STATES[direction]
    for direction in Direction:
        seen, todo = set(), [INITIAL[direction]]
        while todo:
            state = todo.pop()
            if state not in seen:
                seen.add(state)
                todo.extend(TRANSITIONS[(direction, state)])
        assert seen == STATES[direction], direction


@pytest.mark.parametrize(
    ("direction", "old", "new"),
    [
        ("in", "done", "transferring"),  # accept refuses a saved file
        ("in", "offered", "sharing"),  # an outgoing state
        ("out", "sharing", "transferring"),
        ("out", "cancelled", "sharing"),  # a withdrawn offer stays withdrawn
        ("in", "offered", "offered"),  # no move to itself
        ("in", "offered", "paused"),  # no such state
        ("sideways", "offered", "done"),  # no such direction
    ],
)
def test_an_illegal_move_raises_the_local_protocol_error(
    direction: str, old: str, new: str
) -> None:
    with pytest.raises(LocalProtocolError):
        move(direction, old, new)


def test_legal_moves_return_the_enum() -> None:
    assert move("in", "offered", "transferring") is FileState.TRANSFERRING
    assert move(Direction.OUT, FileState.SHARING, FileState.DONE) is FileState.DONE
    assert row_state("out", "sharing") == (Direction.OUT, FileState.SHARING)
    with pytest.raises(LocalProtocolError):
        row_state("out", "stalled")


def offer_row(state: str, direction: str = "in") -> FileRow:
    data = b"some bytes"
    offer = new_offer(
        ALICE.public,
        os.urandom(16),
        "a.bin",
        len(data),
        hashlib.sha256(data).hexdigest(),
        digest_root(hashlib.sha256(data).digest()),
    )
    return FileRow(
        fid=offer.fid,
        direction=direction,
        state=state,
        room="general",
        author=ALICE.peer_id,
        nick="alice",
        offer=encode_offer(offer)[len("\x1ffile:") :],
        created=1.0,
    )


def make_share(store: Store, tmp_path: Path) -> FileShare:
    return FileShare(
        store,
        ME.peer_id,
        cast(Any, SimpleNamespace(peers={}, want=lambda _peer: None)),
        lambda _event: None,
        tmp_path / "dl",
        0,
        lambda _: False,
        lambda _peer, _room: True,
        lambda _room: False,
    )


async def test_fileshare_refuses_an_illegal_move_and_keeps_the_row(tmp_path: Path) -> None:
    """A bug that tried to move an incoming offer to `sharing` raises, and nothing is saved."""
    store = Store(tmp_path / "me.db")
    row = offer_row("offered")
    store.save_file(row)
    share = make_share(store, tmp_path)
    try:
        share.load()
        t = share.transfers[row.fid]
        assert t.row.state is FileState.OFFERED and t.row.direction is Direction.IN
        with pytest.raises(LocalProtocolError):
            share.offers.set_state(t, FileState.SHARING)
        assert t.row.state is FileState.OFFERED
        assert [r.state for r in store.file_rows()] == ["offered"]
    finally:
        await share.close()
        store.close()


async def test_a_stored_row_in_no_known_state_is_dropped_at_load(tmp_path: Path) -> None:
    store = Store(tmp_path / "me.db")
    good, bad, wrong = offer_row("done"), offer_row("paused"), offer_row("stalled", "out")
    for row in (good, bad, wrong):
        store.save_file(row)
    share = make_share(store, tmp_path)
    try:
        share.load()
        assert set(share.transfers) == {good.fid}
    finally:
        await share.close()
        store.close()


def test_room_kinds_follow_from_the_wire_name() -> None:
    assert kind_of_wire("general") is RoomKind.PUBLIC
    assert kind_of_wire(box.private_room_id("secret")) is RoomKind.PRIVATE
    assert kind_of_wire(box.dm_room(ME.peer_id, ALICE.peer_id)) is RoomKind.DM
    assert room_kind("dm", box.dm_room(ME.peer_id, ALICE.peer_id)) is RoomKind.DM
    for kind, wire in [("public", "p.abc"), ("private", "general"), ("lobby", "general")]:
        with pytest.raises(LocalProtocolError):
            room_kind(kind, wire)


def test_a_stored_room_of_no_known_kind_is_dropped_at_load(tmp_path: Path) -> None:
    store = Store(tmp_path / "me.db")
    try:
        store.join_room("lobby", "lobby", "public", None, None)
        store.join_room("odd", "odd", "sideways", None, None)
        store.join_room("p.123", "fake", "public", None, None)
        book = RoomBook(store, ME)
        book.load()
        assert "odd" not in book.joined and "p.123" not in book.joined
        assert book.joined["lobby"].kind is RoomKind.PUBLIC
    finally:
        store.close()

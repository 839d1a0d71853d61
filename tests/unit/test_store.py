"""store/db.py: the SQLite message store, on a real database file in tmp_path.

The last section drives history.py's History (store + SyncState) with fake
connections, for bugs found while testing protocol/sync.py that live in how
history.py uses it.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from unit_support import ALICE, BOB, CAROL, MALLORY, ME, ROOM, TS, FakeConn, FakeManager, chat, new

from chinwag import limits
from chinwag.events import NodeEvent
from chinwag.history import History
from chinwag.protocol import messages as m
from chinwag.rooms import RoomBook
from chinwag.store import db as db_module
from chinwag.store.db import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    FileRow,
    Insert,
    Row,
    Store,
    StoreError,
    _Checkpointer,
)


def key(r: Row) -> tuple[int, str, int]:
    return (r.ts, r.author, r.seq)


# --- schema ----------------------------------------------------------------


def test_schema_created_with_wal(tmp_path: Path) -> None:
    path = tmp_path / "chinwag.db"
    s = Store(path)
    try:
        db = s.db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert {"messages", "floors", "peers", "peer_vectors", "messages_display"} <= names
    finally:
        s.close()
    # A second connection sees the marks on disk.
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def in_main_file(store: Store, needle: str) -> bool:
    """Whether the database file itself (not its WAL) holds needle: a checkpoint copied it."""
    return needle.encode() in store.path.read_bytes()


def wait_checkpointed(store: Store, needle: str, timeout: float = 10.0) -> None:
    """Block until needle reached the database file (the checkpointer runs in a thread)."""
    deadline = time.monotonic() + timeout
    while not in_main_file(store, needle):
        assert time.monotonic() < deadline, f"{needle!r} never checkpointed"
        threading.Event().wait(0.01)


def test_checkpointer_starts_and_stops(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "CHECKPOINT_INTERVAL_S", 0.01)
    assert store.insert_messages([new(ALICE, 1, "checkpoint-me-1")]) == [Insert.NEW]
    assert not in_main_file(store, "checkpoint-me-1")  # only in the WAL so far
    store.start_checkpointer()
    thread = store._checkpointer
    assert thread is not None and thread.is_alive()
    wait_checkpointed(store, "checkpoint-me-1")  # while the store is open: the thread did it
    assert store.check_checkpointer() is None
    store.close()  # stops the thread; the fixture's second close must be harmless too
    assert not thread.is_alive()
    wal = store.path.with_name(store.path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_checkpointer_logs_failures_and_keeps_going(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(limits, "CHECKPOINT_INTERVAL_S", 0.01)
    monkeypatch.setattr(limits, "CHECKPOINT_FAILURES_REPORTED", 2)
    real = _Checkpointer._checkpoint
    calls = []

    def flaky(self: _Checkpointer) -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise sqlite3.OperationalError("disk I/O error")
        real(self)

    monkeypatch.setattr(_Checkpointer, "_checkpoint", flaky)
    caplog.set_level("WARNING", logger="chinwag.store.db")
    store.start_checkpointer()
    store.insert_messages([new(ALICE, 1, "checkpoint-me-2")])
    wait_checkpointed(store, "checkpoint-me-2")
    assert "WAL checkpoint failed (1 in a row): OperationalError: disk I/O error" in caplog.text
    assert "(2 in a row)" in caplog.text


def test_a_dead_checkpointer_is_restarted_and_reported(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "CHECKPOINT_INTERVAL_S", 0.01)
    store.start_checkpointer()
    dead = store._checkpointer
    assert dead is not None
    dead.stop()  # as if the thread had died
    store.insert_messages([new(ALICE, 1, "checkpoint-me-3")])
    problem = store.check_checkpointer()
    assert problem is not None and "restarted" in problem
    assert store._checkpointer is not dead and store._checkpointer.is_alive()
    wait_checkpointed(store, "checkpoint-me-3")


def test_a_run_cut_short_by_a_machine_restart_is_noticed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chinwag.db"
    monkeypatch.setattr(db_module, "boot_id", lambda: "boot-1")
    first = Store(path)
    assert first.created and not first.tail_may_be_lost
    first.db.close()  # the process dies: the store is never closed
    same_boot = Store(path)  # a killed process loses nothing (WAL, synchronous=NORMAL)
    assert not same_boot.created and not same_boot.tail_may_be_lost
    same_boot.db.close()
    monkeypatch.setattr(db_module, "boot_id", lambda: "boot-2")
    after_power_cut = Store(path)
    assert after_power_cut.tail_may_be_lost
    after_power_cut.close()  # a clean close
    clean = Store(path)
    assert not clean.tail_may_be_lost and not clean.created
    clean.close()


# --- insert_messages -------------------------------------------------------


def test_insert_outcomes_within_one_batch(store: Store) -> None:
    a1 = new(ALICE, 1, "first")
    a1_other = new(ALICE, 1, "second")  # same (room, author, seq), other content
    a2 = new(ALICE, 2)
    b1 = new(BOB, 1)  # same seq, another author
    a1_dev = new(ALICE, 1, room="dev")  # same seq, another room
    assert a1.id != a1_other.id
    results = store.insert_messages([a1, a1, a1_other, a2, b1, a1_dev, a2])
    assert results == [
        Insert.NEW,
        Insert.DUPLICATE,
        Insert.EQUIVOCATION,
        Insert.NEW,
        Insert.NEW,
        Insert.NEW,
        Insert.DUPLICATE,
    ]
    assert store.get(a1_other.id) is None  # the equivocating copy is not stored
    row = store.get(a1.id)
    assert row is not None and row.text == "first"


def test_insert_outcomes_across_batches(store: Store) -> None:
    a1, a2 = new(ALICE, 1, "first"), new(ALICE, 2)
    assert store.insert_messages([a1]) == [Insert.NEW]  # the single-message path
    assert store.insert_messages([a1]) == [Insert.DUPLICATE]
    assert store.insert_messages([new(ALICE, 1, "liar")]) == [Insert.EQUIVOCATION]
    assert store.insert_messages([a2, a1, new(ALICE, 2, "liar")]) == [
        Insert.NEW,
        Insert.DUPLICATE,
        Insert.EQUIVOCATION,
    ]
    assert store.insert_messages([]) == []
    assert store.author_stats() == [(ROOM, ALICE.peer_id, 1, 2, 2)]


def test_insert_keeps_the_flags(store: Store) -> None:
    msg = new(ALICE, 1, late=True, verified=False)
    store.insert_messages([msg])
    row = store.get(msg.id)
    assert row == Row(msg.id, ROOM, ALICE.peer_id, 1, TS, "nick", "hello", True)
    assert store.db.execute("SELECT verified FROM messages").fetchone()[0] == 0
    store.mark_verified([msg.id])
    assert store.db.execute("SELECT verified FROM messages").fetchone()[0] == 1
    store.delete([msg.id])
    assert store.get(msg.id) is None


# --- reading ---------------------------------------------------------------


def test_history_in_display_order_with_limit(store: Store) -> None:
    # Ties on ts are broken by author, then seq; another room never shows up.
    msgs = [
        new(ALICE, 1, ts=TS + 5),
        new(ALICE, 2, ts=TS + 5),
        new(BOB, 1, ts=TS + 5),
        new(BOB, 2, ts=TS + 1),  # an earlier clock: shown earlier, though seq 2
        new(CAROL, 1, ts=TS + 9),
        new(CAROL, 2, ts=TS),
        new(ALICE, 3, ts=TS + 9),
        new(ALICE, 1, room="dev", ts=TS),
    ]
    shuffled = msgs[:]
    random.Random(3).shuffle(shuffled)
    store.insert_messages(shuffled)
    expected = sorted(
        ((x.ts, x.author, x.seq) for x in msgs if x.room == ROOM),
    )
    rows = store.history(ROOM, 100)
    assert [key(r) for r in rows] == expected
    assert all(r.room == ROOM for r in rows)
    assert [key(r) for r in store.history(ROOM, 3)] == expected[-3:]
    assert [key(r) for r in store.history(ROOM, 1)] == expected[-1:]
    assert store.history("nowhere", 10) == []
    assert store.last_key(ROOM) == expected[-1]
    assert store.last_key("nowhere") is None
    assert store.rooms() == ["dev", ROOM]


def test_history_before_pages_back_through_the_room(store: Store) -> None:
    # Paging with `before` = the oldest key shown walks the room without gaps or repeats.
    msgs = [new(ALICE, i, ts=TS + i // 3) for i in range(1, 31)]
    msgs += [new(BOB, i, ts=TS + i // 2) for i in range(1, 21)]
    msgs.append(new(ALICE, 1, room="dev", ts=TS))
    store.insert_messages(msgs)
    expected = sorted((x.ts, x.author, x.seq) for x in msgs if x.room == ROOM)
    pages: list[tuple[int, str, int]] = []
    page = store.history(ROOM, 7)
    while page:
        pages[:0] = [key(r) for r in page]
        page = store.history(ROOM, 7, before=key(page[0]))
    assert pages == expected
    assert store.history(ROOM, 5, before=expected[0]) == []


def test_history_before_uses_the_display_index(store: Store) -> None:
    plan = store.db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE room=? AND (ts, author, seq) < (?, ?, ?) "
        "ORDER BY ts DESC, author DESC, seq DESC LIMIT ?",
        (ROOM, TS, ALICE.peer_id, 1, 10),
    ).fetchall()
    text = " ".join(str(row[-1]) for row in plan)
    assert "messages_display" in text and "TEMP B-TREE" not in text


def test_search_escapes_like_wildcards_and_ignores_case(store: Store) -> None:
    texts = ["50% off", "fifty percent", "a_b", "axb", "back\\slash", "Hello World", "plain"]
    msgs = [new(ALICE, i + 1, t, ts=TS + i) for i, t in enumerate(texts)]
    msgs.append(new(BOB, 1, "HELLO from dev", room="dev", ts=TS + 100))
    store.insert_messages(msgs)

    def found(text: str, limit: int = 100) -> list[str]:
        return [r.text for r in store.search(text, limit)]

    assert found("%") == ["50% off"]
    assert found("0%") == ["50% off"]
    assert found("_") == ["a_b"]
    assert found("a_b") == ["a_b"]
    assert found("\\") == ["back\\slash"]
    assert found("hello") == ["Hello World", "HELLO from dev"]  # any room, oldest first
    assert found("WORLD") == ["Hello World"]
    assert found("nothing like it") == []
    assert found("l", limit=2) == ["plain", "HELLO from dev"]  # the newest two


def test_get_and_find_ids(store: Store) -> None:
    msgs = [new(ALICE, i) for i in range(1, 40)]
    store.insert_messages(msgs)
    target = msgs[7]
    row = store.get(target.id)
    assert row is not None and (row.author, row.seq) == (ALICE.peer_id, 8)
    assert store.get("0" * 32) is None
    assert target.id in store.find_ids(target.id[:6])
    assert store.find_ids(target.id[:6].upper()) == store.find_ids(target.id[:6])
    assert store.find_ids(target.id) == [target.id]
    ids = {x.id for x in msgs}
    for prefix_len in (1, 2):
        prefix = target.id[:prefix_len]
        got = store.find_ids(prefix)
        assert got and len(got) <= 5
        assert all(i.startswith(prefix) for i in got)
    assert len(store.find_ids("")) == 5  # capped
    assert set(store.find_ids("")) <= ids
    assert store.find_ids("zz") == []


def test_seqs_and_ids_in_range(store: Store) -> None:
    store.insert_messages([new(ALICE, s) for s in (1, 2, 3, 7, 9)])
    assert store.seqs(ROOM, ALICE.peer_id, 3) == [3, 7, 9]
    assert [s for s, _ in store.ids_in_range(ROOM, ALICE.peer_id, 2, 7)] == [2, 3, 7]
    assert store.ids_in_range(ROOM, BOB.peer_id, 1, 9) == []


def test_floors_round_trip(store: Store) -> None:
    assert store.floors() == {}
    store.set_floor(ROOM, ALICE.peer_id, 16)
    store.set_floor("dev", ALICE.peer_id, 3)
    store.set_floor(ROOM, ALICE.peer_id, 20)  # replaces
    assert store.floors() == {(ROOM, ALICE.peer_id): 20, ("dev", ALICE.peer_id): 3}


def test_peer_vectors_round_trip(store: Store) -> None:
    a, b = ALICE.peer_id, BOB.peer_id
    store.set_peer_vector("p1", ROOM, {a: 5, b: 2})
    store.set_peer_vector("p2", ROOM, {a: 7})
    store.set_peer_vector("p1", "dev", {a: 1})
    store.set_peer_vector("p1", ROOM, {a: 6})  # updates one author, keeps the other
    assert store.peer_vectors(ROOM) == {"p1": {a: 6, b: 2}, "p2": {a: 7}}
    assert store.peer_vectors("dev") == {"p1": {a: 1}}
    assert store.peer_vectors("nowhere") == {}
    store.save_peer("p1", "alice", "10.0.0.1:4000")
    store.save_peer("p1", "alice2", "10.0.0.1:4001")
    assert store.peer_nicks() == {"p1": "alice2"}


# --- push_batch --------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
def test_push_batch_pages_each_message_once_oldest_first(store: Store, limit: int) -> None:
    rng = random.Random(limit)
    msgs = []
    for who in (ALICE, BOB, CAROL):
        for seq in range(1, 11):
            # Few distinct timestamps: many ties between authors, and clocks that go back.
            msgs.append(new(who, seq, ts=TS + rng.randrange(4)))
    msgs += [new(ALICE, s, room="dev") for s in range(1, 11)]  # another room: never sent
    rng.shuffle(msgs)
    store.insert_messages(msgs)
    ranges = [(ALICE.peer_id, 2, 7), (BOB.peer_id, 1, 10), (CAROL.peer_id, 5, 5)]
    expected = sorted(
        (x.ts, x.author, x.seq)
        for x in msgs
        if x.room == ROOM and any(x.author == a and lo <= x.seq <= hi for a, lo, hi in ranges)
    )
    got: list[tuple[int, str, int]] = []
    after = (-1, "", -1)  # as history.py starts
    for _ in range(100):
        rows = store.push_batch(ROOM, ranges, after, limit)
        assert len(rows) <= limit
        got += [(ts, author, seq) for _id, ts, author, seq, _b, _s, _v in rows]
        if len(rows) < limit:
            break
        after = (rows[-1][1], rows[-1][2], rows[-1][3])
    assert got == expected  # each exactly once, in display order
    assert len(set(got)) == len(got) == 6 + 10 + 1


def test_push_batch_rows_are_the_signed_originals(store: Store) -> None:
    msg = chat(ALICE, 1)
    store.insert_messages([new(ALICE, 1)])
    rows = store.push_batch(ROOM, [(ALICE.peer_id, 1, 1)], (-1, "", -1), 10)
    assert rows == [(msg.id, TS, ALICE.peer_id, 1, msg.raw_body, msg.sig, 1)]
    assert store.push_batch(ROOM, [], (-1, "", -1), 10) == []


# --- files that are not ours ---------------------------------------------------


def make_sqlite(path: Path, app_id: int, user_version: int = 0, table: bool = True) -> None:
    db = sqlite3.connect(path)
    if table:
        db.execute("CREATE TABLE accounts(name TEXT, balance INTEGER)")
        db.execute("INSERT INTO accounts VALUES ('x', 1)")
    db.execute(f"PRAGMA application_id={app_id}")
    db.execute(f"PRAGMA user_version={user_version}")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("app_id", "table", "user_version", "message"),
    [
        (0, True, 0, "is not a chinwag database"),
        (0x12345678, True, 0, "is not a chinwag database"),
        (0x12345678, False, 0, "is not a chinwag database"),
        (APPLICATION_ID, True, SCHEMA_VERSION + 1, "schema version"),
    ],
    ids=["other-table-app-id-0", "other-app-id", "other-app-id-empty", "newer-schema"],
)
def test_foreign_sqlite_database_is_refused_untouched(
    tmp_path: Path, app_id: int, table: bool, user_version: int, message: str
) -> None:
    path = tmp_path / "other.db"
    make_sqlite(path, app_id, user_version, table)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=message) as exc:
        Store(path)
    assert str(path) in str(exc.value)
    assert path.read_bytes() == before
    if table:
        db = sqlite3.connect(path)
        assert db.execute("SELECT * FROM accounts").fetchall() == [("x", 1)]
        db.close()


def test_not_sqlite_at_all_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "noise.db"
    path.write_bytes(random.Random(7).randbytes(8192))
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a usable chinwag database"):
        Store(path)
    assert path.read_bytes() == before


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "chinwag.db"
    msgs = [new(ALICE, s, f"t{s}", ts=TS + s) for s in range(1, 6)] + [new(BOB, 1, room="dev")]
    s = Store(path)
    s.start_checkpointer()
    s.insert_messages(msgs)
    s.set_floor(ROOM, BOB.peer_id, 4)
    s.set_peer_vector("p1", ROOM, {ALICE.peer_id: 5})
    s.save_peer("p1", "alice", "10.0.0.1:4000")
    history, stats = s.history(ROOM, 10), sorted(s.author_stats())
    s.close()
    s = Store(path)
    try:
        assert s.history(ROOM, 10) == history
        assert sorted(s.author_stats()) == stats
        assert s.floors() == {(ROOM, BOB.peer_id): 4}
        assert s.peer_vectors(ROOM) == {"p1": {ALICE.peer_id: 5}}
        assert s.peer_nicks() == {"p1": "alice"}
        assert s.insert_messages([msgs[0]]) == [Insert.DUPLICATE]
        assert s.insert_messages([new(ALICE, 1, "other")]) == [Insert.EQUIVOCATION]
    finally:
        s.close()


# --- files -------------------------------------------------------------------


def file_row(fid: str, created: float, **fields: Any) -> FileRow:
    base: dict[str, Any] = {
        "direction": "in",
        "state": "offered",
        "room": ROOM,
        "author": ALICE.peer_id,
        "nick": "alice",
        "offer": f'{{"fid":"{fid}"}}',
        "created": created,
    }
    return FileRow(fid, **{**base, **fields})


def test_files_round_trip_oldest_first(store: Store) -> None:
    assert store.file_rows() == []
    full = file_row(
        "b" * 32,
        2.5,
        direction="out",
        state="sharing",
        room="@" + BOB.peer_id,
        path="/home/me/report.pdf",
        dir="/home/me",
        digests=bytes(range(64)),
        mtime_ns=1_700_000_000_123_456_789,
        reason="",
    )
    bare = file_row("a" * 32, 1.0)
    later = file_row("c" * 32, 3.0, state="failed", reason="withdrawn by the sender")
    for row in (full, later, bare):
        store.save_file(row)
    assert store.file_rows() == [bare, full, later]
    got = store.file_rows()[1]
    assert got.digests == bytes(range(64)) and isinstance(got.digests, bytes)
    assert store.file_rows()[0].digests is None


def test_save_file_replaces_by_fid(store: Store) -> None:
    row = file_row("a" * 32, 1.0)
    store.save_file(row)
    row.state, row.digests, row.path = "transferring", b"\x01" * 32, "/tmp/x"
    store.save_file(row)
    assert store.file_rows() == [row]


def test_delete_files(store: Store) -> None:
    rows = [file_row(c * 32, float(i)) for i, c in enumerate("abcd")]
    for row in rows:
        store.save_file(row)
    store.delete_files(["b" * 32, "d" * 32, "z" * 32])  # an unknown fid is harmless
    assert store.file_rows() == [rows[0], rows[2]]
    store.delete_files([])
    store.delete_files(iter(["a" * 32]))
    assert store.file_rows() == [rows[2]]


def test_files_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "chinwag.db"
    row = file_row("f" * 32, 4.0, digests=b"\x00" * 96, mtime_ns=5)
    s = Store(path)
    s.save_file(row)
    s.close()
    s = Store(path)
    try:
        assert s.file_rows() == [row]
    finally:
        s.close()


# --- history.py on a real store: bugs found while testing sync ------------------


def make_history(store: Store) -> tuple[History, list[NodeEvent]]:
    """A loaded History of ME over store, with no peers connected."""
    events: list[NodeEvent] = []
    manager: Any = FakeManager()
    book = RoomBook(store, ME)
    book.load()
    history = History(store, ME, manager, events.append, book)
    history.load()
    return history, events


async def turn() -> None:
    """Let History's call_soon group commit run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_history_recovers_seqs_forgotten_by_the_above_bound(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_ABOVE_PER_AUTHOR", 2)
    history, _events = make_history(store)
    conn: Any = FakeConn(ALICE.peer_id)  # straight from the author
    msgs = [chat(ALICE, s) for s in range(1, 6)]

    def send(seq: int) -> None:
        msg = msgs[seq - 1]
        history.chat_received(conn, m.Chat(body=msg.raw_body, sig=msg.sig, hist=True))

    try:
        for seq in (2, 3, 4):  # 4 overflows `above` and is forgotten (but stored)
            send(seq)
            await turn()
        send(1)
        await turn()
        assert history.sync.author(ROOM, ALICE.peer_id).have == 3
        for seq in (4, 5):  # the refetch of 4 (a Want or the next push), then 5
            send(seq)
            await turn()
        assert conn.closed is None
        assert [r.seq for r in store.history(ROOM, 10)] == [1, 2, 3, 4, 5]
        assert history.sync.vector(ROOM) == {ALICE.peer_id: 5}
    finally:
        await history.close()


@pytest.mark.parametrize("whose", ["own", "other"])
async def test_history_ignores_a_floor_nobody_backs(store: Store, whose: str) -> None:
    store.insert_messages([new(ME, s) for s in (1, 2)] + [new(ALICE, s) for s in (1, 2)])
    history, _events = make_history(store)
    author = ME.peer_id if whose == "own" else ALICE.peer_id
    mallory: Any = FakeConn(MALLORY.peer_id)  # sent no vector: claims to hold nothing
    try:
        history.sync_frame(mallory, m.Floor(room=ROOM, author=author, seq=10**12))
        await turn()
        assert history.sync.vector(ROOM) == {ME.peer_id: 2, ALICE.peer_id: 2}
        assert store.floors() == {}
        assert history.next_seq(ROOM) == 3
    finally:
        await history.close()


async def test_history_load_with_a_floor_above_what_is_stored(store: Store) -> None:
    # We held 1..10 of alice and an older chinwag saved a peer's Floor at 16 before any
    # message from 16 on arrived: that floor is only a claim, it must not make us claim 15.
    store.insert_messages([new(ALICE, s) for s in range(1, 11)])
    store.set_floor(ROOM, ALICE.peer_id, 16)
    history, _events = make_history(store)
    try:
        assert history.sync.vector(ROOM) == {ALICE.peer_id: 10}
    finally:
        await history.close()
    # Once the message at the floor is stored, the floor holds (also across a restart).
    store.insert_messages([new(ALICE, s) for s in (16, 17)])
    history, _events = make_history(store)
    try:
        assert history.sync.vector(ROOM) == {ALICE.peer_id: 17}
    finally:
        await history.close()


def test_a_refused_database_is_closed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review: a database refused after it was opened kept its connection (a file handle).
    opened: list[sqlite3.Connection] = []
    real_connect = sqlite3.connect

    def connect(*args: Any, **kw: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kw)
        opened.append(conn)
        return conn

    monkeypatch.setattr(db_module.sqlite3, "connect", connect)
    path = tmp_path / "other.db"
    make_sqlite(path, 0x12345678, 0, True)
    with pytest.raises(StoreError):
        Store(path)
    assert opened
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError):  # closed
            conn.execute("SELECT 1")


def test_a_store_from_before_olm_peers_seen_opens_and_evicts_by_it(tmp_path: Path) -> None:
    """olm_peers.seen (prekeyfix) is added to a store made without it."""
    path = tmp_path / "old.db"
    Store(path).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE olm_peers")
    raw.execute(
        "CREATE TABLE olm_peers(peer_id TEXT PRIMARY KEY, ident BLOB NOT NULL, fb BLOB NOT NULL,"
        " sig BLOB NOT NULL, otk BLOB NOT NULL, used REAL NOT NULL) WITHOUT ROWID"
    )
    raw.execute("INSERT INTO olm_peers VALUES ('p', x'01', x'02', x'03', x'', 5.0)")
    raw.commit()
    raw.close()
    store = Store(path)
    assert store.olm_peer_seen("p") == 0.0
    store.olm_peer_touch("p", 7.0, 6.0)
    assert store.olm_peer_seen("p") == 7.0 and store.olm_peer_learned("p") == 6.0
    store.olm_peer_touch("p", 8.0, 4.0)
    assert store.olm_peer_seen("p") == 8.0 and store.olm_peer_learned("p") == 6.0
    store.save_olm_peer("q", b"\x01", b"\x02", b"\x03", b"", 9.0, 11.0)
    assert store.olm_peer_seen("q") == 11.0
    store.close()

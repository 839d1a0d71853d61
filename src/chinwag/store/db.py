"""The message store: one SQLite database (WAL) in the data directory.

Contract: a message is committed here before it is shown, relayed or
receipted. Writes are grouped: the node collects what arrived in one event
loop turn and commits it in one transaction (insert_messages).
synchronous=NORMAL in WAL mode survives a killed process (kill -9), which is
the promise we make; a power cut may lose the last transaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from chinwag import limits
from chinwag.errors import ChinwagError

log = logging.getLogger(__name__)

#: Marks the file as ours ("chwg"); a database without it is refused.
APPLICATION_ID = 0x63687767
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE messages(
    id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    author TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    nick TEXT NOT NULL,
    text TEXT NOT NULL,
    body BLOB NOT NULL,
    sig BLOB NOT NULL,
    received INTEGER NOT NULL,
    late INTEGER NOT NULL DEFAULT 0,
    verified INTEGER NOT NULL DEFAULT 0,
    UNIQUE(room, author, seq)
);
CREATE INDEX messages_display ON messages(room, ts, author, seq);
CREATE TABLE floors(
    room TEXT NOT NULL, author TEXT NOT NULL, base INTEGER NOT NULL,
    PRIMARY KEY(room, author)
) WITHOUT ROWID;
CREATE TABLE peers(
    peer_id TEXT PRIMARY KEY, nick TEXT NOT NULL, address TEXT NOT NULL,
    last_seen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE peer_vectors(
    peer_id TEXT NOT NULL, room TEXT NOT NULL, author TEXT NOT NULL, have INTEGER NOT NULL,
    PRIMARY KEY(room, author, peer_id)
) WITHOUT ROWID;
"""

# Tables added after the first schema; created when missing so older stores open.
_SCHEMA_ADDITIONS = """
CREATE TABLE IF NOT EXISTS rooms(
    room TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL,
    key BLOB, peer TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS left_rooms(room TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocked(peer_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verified(
    peer_id TEXT PRIMARY KEY, nick TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files(
    fid TEXT PRIMARY KEY, direction TEXT NOT NULL, state TEXT NOT NULL,
    room TEXT NOT NULL, author TEXT NOT NULL, nick TEXT NOT NULL, offer TEXT NOT NULL,
    path TEXT NOT NULL DEFAULT '', dir TEXT NOT NULL DEFAULT '',
    digests BLOB, mtime_ns INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS mailbox(
    id BLOB PRIMARY KEY, recipient TEXT NOT NULL, sender TEXT NOT NULL, exp INTEGER NOT NULL,
    received INTEGER NOT NULL, size INTEGER NOT NULL, item BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mailbox_recipient ON mailbox(recipient, received);
CREATE TABLE IF NOT EXISTS mail_gone(id BLOB PRIMARY KEY, exp INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mail_gone_exp ON mail_gone(exp);
CREATE TABLE IF NOT EXISTS mail_out(
    id BLOB PRIMARY KEY, item BLOB NOT NULL, msg_id TEXT, room TEXT, added INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts(
    peer_id TEXT PRIMARY KEY, nick TEXT NOT NULL, addrs TEXT NOT NULL, relays TEXT NOT NULL,
    added_at REAL NOT NULL, last_seen REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS olm_account(
    id INTEGER PRIMARY KEY CHECK(id=1), pickle TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS olm_sessions(
    peer_id TEXT NOT NULL, session_id TEXT NOT NULL, pickle TEXT NOT NULL, used REAL NOT NULL,
    PRIMARY KEY(peer_id, session_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS olm_peers(
    peer_id TEXT PRIMARY KEY, ident BLOB NOT NULL, fb BLOB NOT NULL, sig BLOB NOT NULL,
    otk BLOB NOT NULL, used REAL NOT NULL, seen REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS held_dms(
    id INTEGER PRIMARY KEY AUTOINCREMENT, nick TEXT NOT NULL, old_peer TEXT NOT NULL,
    new_peer TEXT NOT NULL, text TEXT NOT NULL, ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS replaced_keys(
    peer_id TEXT PRIMARY KEY, nick TEXT NOT NULL, by TEXT NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS = "id, room, author, seq, ts, nick, text, late"

#: Olm peers whose keys and sessions no bound forgets: a conversation (a DM room), a
#: verified peer, a contact; strangers' keys must never push a real contact's ratchet out.
_OLM_PROTECTED = (
    "(peer_id IN (SELECT peer FROM rooms WHERE peer IS NOT NULL)"
    " OR peer_id IN (SELECT peer_id FROM verified)"
    " OR peer_id IN (SELECT peer_id FROM contacts))"
)
_HAS_SESSION = "EXISTS (SELECT 1 FROM olm_sessions s WHERE s.peer_id=olm_peers.peer_id)"


class StoreError(ChinwagError):
    """The database cannot be used (corrupt, foreign, or unwritable)."""


class Insert(Enum):
    """Outcome of storing one message."""

    NEW = "new"
    DUPLICATE = "duplicate"
    #: Same (room, author, seq) as a stored message, different content.
    EQUIVOCATION = "equivocation"


@dataclass(frozen=True, slots=True)
class Row:
    """One stored message, as shown to users."""

    id: str
    room: str
    author: str
    seq: int
    ts: int
    nick: str
    text: str
    late: bool


@dataclass(frozen=True, slots=True)
class NewMessage:
    """What insert_messages needs to store one message."""

    id: str
    room: str
    author: str
    seq: int
    ts: int
    nick: str
    text: str
    body: bytes
    sig: bytes
    late: bool
    verified: bool


@dataclass(slots=True)
class FileRow:
    """One file offer or transfer (ours or a peer's); `offer` is the offer's JSON."""

    fid: str
    direction: str
    state: str
    room: str
    author: str
    nick: str
    offer: str
    path: str = ""
    dir: str = ""
    digests: bytes | None = None
    mtime_ns: int = 0
    created: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HeldRow:
    """A private message to `nick` held (not sent) while its key changed from the verified
    `old_peer` to `new_peer`, waiting for the user's decision."""

    id: int
    nick: str
    old_peer: str
    new_peer: str
    text: str
    ts: float


@dataclass(slots=True)
class ContactRow:
    """A peer added by its invite: where to dial it (`addrs`, `relays`), when last connected."""

    peer_id: str
    nick: str
    addrs: list[str]
    relays: list[tuple[str, str]]
    added_at: float
    last_seen: float = 0.0


_FILE_COLUMNS = "fid, direction, state, room, author, nick, offer, path, dir, digests, "
_FILE_COLUMNS += "mtime_ns, created, reason"


def boot_id() -> str:
    """Return an id of this boot of the machine ("" if unknown): it changes after a power cut."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _make_private(path: Path) -> None:
    """Create the database file owner-only (0600); make it and its -wal, -shm so if looser.

    The messages of private rooms and conversations are readable in it, and the
    keys of private rooms. SQLite creates -wal and -shm with the database file's
    mode, so that one is set first.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            if side.lstat().st_mode & 0o077:
                os.chmod(side, 0o600, follow_symlinks=False)


class Store:
    """The node's SQLite database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._checkpointer: _Checkpointer | None = None
        #: True if this open created the database (a first start, or chinwag.db was deleted).
        self.created = False
        #: True if the last run did not close the store and the machine restarted since (or
        #: we cannot tell): its last commits (synchronous=NORMAL) may be lost.
        self.tail_may_be_lost = False
        try:
            _make_private(path)
        except OSError as exc:
            raise StoreError(f"cannot open {path}: {exc.strerror or exc}") from None
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{path} is not a usable chinwag database ({exc}); move it away to start afresh"
            ) from None
        try:
            self._open()
        except BaseException as exc:
            # Refused or damaged: close the connection, no caller will (no Store was made).
            self.db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(
                    f"{path} is not a usable chinwag database ({exc}); move it away to start afresh"
                ) from None
            raise

    def _open(self) -> None:
        db = self.db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables == 0 and app_id == 0:
            self.created = True
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        elif app_id != APPLICATION_ID:
            raise StoreError(f"{self.path} is not a chinwag database; refusing to touch it")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this chinwag reads {SCHEMA_VERSION}"
            )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=OFF")
        # Checkpoints (the only fsyncs in WAL/NORMAL) run in a background thread,
        # so they never stall a commit on the event loop.
        db.execute("PRAGMA wal_autocheckpoint=0")
        for statement in _SCHEMA_ADDITIONS.split(";"):
            if statement.strip():
                db.execute(statement)
        columns = {row[1] for row in db.execute("PRAGMA table_info(olm_peers)")}
        if "seen" not in columns:  # a store from before olm_peers.seen (the LRU time)
            db.execute("ALTER TABLE olm_peers ADD COLUMN seen REAL NOT NULL DEFAULT 0")
        # Touch every table so a damaged file fails now, with a clear error, not later.
        for table in ("messages", "floors", "peers", "peer_vectors", "rooms", "blocked"):
            db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()
        self._mark_open()

    def _mark_open(self) -> None:
        """Note (durably: one fsync per start) that a run on this boot has the store open.

        close() removes the mark. Found at the next open with another boot id, it means
        the machine went down under a running chinwag: a power cut or an OS crash, which
        may have taken the last commits (a killed process loses nothing: same boot).
        """
        row = self.db.execute("SELECT value FROM meta WHERE key='open_boot'").fetchone()
        now = boot_id()
        self.tail_may_be_lost = row is not None and (row[0] != now or not now)
        self.db.execute("PRAGMA synchronous=FULL")
        try:
            with self._transaction():
                self.db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('open_boot', ?)", (now,)
                )
        finally:
            self.db.execute("PRAGMA synchronous=NORMAL")

    def start_checkpointer(self) -> None:
        """Checkpoint the WAL every CHECKPOINT_INTERVAL_S from a thread of its own."""
        self._checkpointer = _Checkpointer(self.path)
        self._checkpointer.start()

    def check_checkpointer(self) -> str | None:
        """Restart a checkpointer thread that died; return what is wrong with it, or None.

        A WAL that is never checkpointed grows without bound: the caller surfaces
        the answer to the user.
        """
        cp = self._checkpointer
        if cp is None:
            return None
        if not cp.is_alive():
            log.error("the WAL checkpointer stopped (%s); restarting it", cp.last_error)
            self._checkpointer = _Checkpointer(self.path)
            self._checkpointer.start()
            return f"checkpointer stopped ({cp.last_error}); restarted"
        if cp.failures >= limits.CHECKPOINT_FAILURES_REPORTED:
            return f"{cp.failures} checkpoints failed in a row ({cp.last_error})"
        return None

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("DELETE FROM meta WHERE key='open_boot'")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()

    # --- writing --------------------------------------------------------

    def insert_messages(self, msgs: list[NewMessage]) -> list[Insert]:
        """Store msgs in one transaction; return the outcome of each, in order."""
        now = int(time.time() * 1000)
        if len(msgs) == 1:
            # One statement is its own transaction: skips BEGIN/COMMIT round trips
            # on the latency-critical path of a single live message.
            try:
                return [self._insert_one(msgs[0], now)]
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write the message store: {exc}") from None
        with self._transaction():
            return [self._insert_one(msg, now) for msg in msgs]

    def _insert_one(self, msg: NewMessage, now: int) -> Insert:
        cur = self.db.execute(
            "INSERT OR IGNORE INTO messages(id, room, author, seq, ts, nick, text, body,"
            " sig, received, late, verified) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                msg.id,
                msg.room,
                msg.author,
                msg.seq,
                msg.ts,
                msg.nick,
                msg.text,
                msg.body,
                msg.sig,
                now,
                int(msg.late),
                int(msg.verified),
            ),
        )
        if cur.rowcount == 1:
            return Insert.NEW
        row = self.db.execute(
            "SELECT id FROM messages WHERE room=? AND author=? AND seq=?",
            (msg.room, msg.author, msg.seq),
        ).fetchone()
        return Insert.EQUIVOCATION if row is not None and row[0] != msg.id else Insert.DUPLICATE

    def set_floor(self, room: str, author: str, base: int) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO floors(room, author, base) VALUES (?,?,?) "
                "ON CONFLICT(room, author) DO UPDATE SET base=excluded.base",
                (room, author, base),
            )

    def set_peer_vector(self, peer_id: str, room: str, have: dict[str, int]) -> None:
        with self._transaction():
            self.db.executemany(
                "INSERT INTO peer_vectors(peer_id, room, author, have) VALUES (?,?,?,?) "
                "ON CONFLICT(room, author, peer_id) DO UPDATE SET have=excluded.have",
                [(peer_id, room, a, h) for a, h in have.items()],
            )

    def save_peer(self, peer_id: str, nick: str, address: str) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO peers(peer_id, nick, address, last_seen) VALUES (?,?,?,?) "
                "ON CONFLICT(peer_id) DO UPDATE SET nick=excluded.nick, "
                "address=excluded.address, last_seen=excluded.last_seen",
                (peer_id, nick, address, int(time.time() * 1000)),
            )

    def mark_verified(self, ids: Iterable[str]) -> None:
        with self._transaction():
            self.db.executemany("UPDATE messages SET verified=1 WHERE id=?", [(i,) for i in ids])

    def delete(self, ids: Iterable[str]) -> None:
        with self._transaction():
            self.db.executemany("DELETE FROM messages WHERE id=?", [(i,) for i in ids])

    # --- reading --------------------------------------------------------

    def author_stats(self) -> list[tuple[str, str, int, int, int]]:
        """Return (room, author, min seq, max seq, count) for every author of every room."""
        return self.db.execute(
            "SELECT room, author, min(seq), max(seq), count(*) FROM messages GROUP BY room, author"
        ).fetchall()

    def seqs(self, room: str, author: str, from_seq: int) -> list[int]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT seq FROM messages WHERE room=? AND author=? AND seq>=? ORDER BY seq",
                (room, author, from_seq),
            )
        ]

    def floors(self) -> dict[tuple[str, str], int]:
        return {(r, a): b for r, a, b in self.db.execute("SELECT room, author, base FROM floors")}

    def rooms(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT room FROM messages ORDER BY room")]

    def last_key(self, room: str) -> tuple[int, str, int] | None:
        """Return the display-order key (ts, author, seq) of the room's last message."""
        row = self.db.execute(
            "SELECT ts, author, seq FROM messages WHERE room=? "
            "ORDER BY ts DESC, author DESC, seq DESC LIMIT 1",
            (room,),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def history(
        self, room: str, limit: int, before: tuple[int, str, int] | None = None
    ) -> list[Row]:
        """Return the room's last `limit` messages in display order (oldest first).

        With `before` = (ts, author, seq), only messages that sort before that key
        (a range scan of the messages_display index, fast in any room size).
        """
        if before is None:
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE room=? "
                "ORDER BY ts DESC, author DESC, seq DESC LIMIT ?",
                (room, limit),
            ).fetchall()
        else:
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE room=? AND (ts, author, seq) < (?, ?, ?) "
                "ORDER BY ts DESC, author DESC, seq DESC LIMIT ?",
                (room, *before, limit),
            ).fetchall()
        return [_row(r) for r in reversed(rows)]

    def search(self, text: str, limit: int) -> list[Row]:
        """Return up to `limit` newest messages containing text (case-insensitive), oldest first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE text LIKE ? ESCAPE '\\' "
            "ORDER BY ts DESC, author DESC, seq DESC LIMIT ?",
            (pattern, limit),
        ).fetchall()
        return [_row(r) for r in reversed(rows)]

    def get(self, msg_id: str) -> Row | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM messages WHERE id=?", (msg_id,)).fetchone()
        return None if row is None else _row(row)

    def find_ids(self, prefix: str) -> list[str]:
        """Return ids starting with prefix (for short ids typed by users)."""
        lo = prefix.lower()
        return [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM messages WHERE id >= ? AND id < ? LIMIT 5", (lo, lo + "g")
            )
        ]

    def ids_in_range(self, room: str, author: str, lo: int, hi: int) -> list[tuple[int, str]]:
        return self.db.execute(
            "SELECT seq, id FROM messages WHERE room=? AND author=? AND seq BETWEEN ? AND ? "
            "ORDER BY seq",
            (room, author, lo, hi),
        ).fetchall()

    def push_batch(
        self,
        room: str,
        ranges: list[tuple[str, int, int]],
        after: tuple[int, str, int],
        limit: int,
    ) -> list[tuple[str, int, str, int, bytes, bytes, int]]:
        """Return the next messages of room within the (author, lo, hi) ranges, oldest first.

        Rows are (id, ts, author, seq, body, sig, verified), after the display key `after`.
        """
        if not ranges:
            return []
        cond = " OR ".join("(author=? AND seq BETWEEN ? AND ?)" for _ in ranges)
        params: list[object] = [room, *after]
        for author, lo, hi in ranges:
            params += [author, lo, hi]
        params.append(limit)
        return self.db.execute(
            "SELECT id, ts, author, seq, body, sig, verified FROM messages "
            f"WHERE room=? AND (ts, author, seq) > (?, ?, ?) AND ({cond}) "
            "ORDER BY ts, author, seq LIMIT ?",
            params,
        ).fetchall()

    def peer_vectors(self, room: str) -> dict[str, dict[str, int]]:
        """Return peer id -> vector for every peer known to hold part of room."""
        out: dict[str, dict[str, int]] = {}
        for peer_id, author, have in self.db.execute(
            "SELECT peer_id, author, have FROM peer_vectors WHERE room=?", (room,)
        ):
            out.setdefault(peer_id, {})[author] = have
        return out

    def rooms_joined(self) -> list[tuple[str, str, str, bytes | None, str | None]]:
        """Return (room, name, kind, key, peer) of every joined room."""
        return self.db.execute("SELECT room, name, kind, key, peer FROM rooms").fetchall()

    def rooms_left(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT room FROM left_rooms")}

    def join_room(
        self, room: str, name: str, kind: str, key: bytes | None, peer: str | None
    ) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO rooms(room, name, kind, key, peer) VALUES (?,?,?,?,?)",
                (room, name, kind, key, peer),
            )
            self.db.execute("DELETE FROM left_rooms WHERE room=?", (room,))

    def leave_room(self, room: str) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM rooms WHERE room=?", (room,))
            self.db.execute("INSERT OR IGNORE INTO left_rooms(room) VALUES (?)", (room,))

    def blocked(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT peer_id FROM blocked")}

    def set_blocked(self, peer_id: str, blocked: bool) -> None:
        with self._transaction():
            if blocked:
                self.db.execute("INSERT OR IGNORE INTO blocked(peer_id) VALUES (?)", (peer_id,))
            else:
                self.db.execute("DELETE FROM blocked WHERE peer_id=?", (peer_id,))

    def verified(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT peer_id, nick FROM verified").fetchall())

    def set_verified(self, peer_id: str, nick: str) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO verified(peer_id, nick) VALUES (?,?)", (peer_id, nick)
            )

    def replace_verified(self, old: str, new: str, nick: str) -> None:
        """Make new the verified key of nick in place of old (remembered as replaced)."""
        with self._transaction():
            self.db.execute("DELETE FROM verified WHERE peer_id=?", (old,))
            self.db.execute(
                "INSERT OR REPLACE INTO verified(peer_id, nick) VALUES (?,?)", (new, nick)
            )
            self.db.execute(
                "INSERT OR REPLACE INTO replaced_keys(peer_id, nick, by) VALUES (?,?,?)",
                (old, nick, new),
            )
            self.db.execute("DELETE FROM replaced_keys WHERE peer_id=?", (new,))

    def replaced_keys(self) -> set[str]:
        """Return the keys the user replaced by a new key of the same nick (accept_key)."""
        return {r[0] for r in self.db.execute("SELECT peer_id FROM replaced_keys")}

    # --- private messages held on a key change -------------------------------------

    def hold_dm(self, nick: str, old_peer: str, new_peer: str, text: str, ts: float) -> HeldRow:
        """Store a held private message (durably: it is typed text) and return it."""
        with self._transaction():
            cur = self.db.execute(
                "INSERT INTO held_dms(nick, old_peer, new_peer, text, ts) VALUES (?,?,?,?,?)",
                (nick, old_peer, new_peer, text, ts),
            )
        assert cur.lastrowid is not None
        return HeldRow(cur.lastrowid, nick, old_peer, new_peer, text, ts)

    def held_dms(self, new_peer: str | None = None) -> list[HeldRow]:
        """Return the held private messages (those to new_peer only, if given), oldest first."""
        sql = "SELECT id, nick, old_peer, new_peer, text, ts FROM held_dms"
        args: tuple[str, ...] = ()
        if new_peer is not None:
            sql, args = sql + " WHERE new_peer=?", (new_peer,)
        return [HeldRow(*row) for row in self.db.execute(sql + " ORDER BY id", args)]

    def held_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM held_dms").fetchone()[0])

    def drop_held(self, ids: Iterable[int]) -> None:
        with self._transaction():
            self.db.executemany("DELETE FROM held_dms WHERE id=?", [(i,) for i in ids])

    def note_author(self, peer_id: str, nick: str) -> None:
        """Remember the nick an author signs with (peers we never met directly too)."""
        self.db.execute(
            "INSERT INTO peers(peer_id, nick, address, last_seen) VALUES (?,?,'',0) "
            "ON CONFLICT(peer_id) DO UPDATE SET nick=excluded.nick",
            (peer_id, nick),
        )

    def known_peers(self) -> set[str]:
        """Return the peers met directly (in any earlier run) or verified by the user."""
        met = {r[0] for r in self.db.execute("SELECT peer_id FROM peers WHERE last_seen > 0")}
        return met | {r[0] for r in self.db.execute("SELECT peer_id FROM verified")}

    def delete_peer_vectors(self, peer_id: str, room: str) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM peer_vectors WHERE room=? AND peer_id=?", (room, peer_id))

    def peer_nicks(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT peer_id, nick FROM peers").fetchall())

    # --- files --------------------------------------------------------

    def save_file(self, row: FileRow) -> None:
        """Insert or replace a file row."""
        with self._transaction():
            self.db.execute(
                f"INSERT OR REPLACE INTO files({_FILE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row.fid,
                    row.direction,
                    row.state,
                    row.room,
                    row.author,
                    row.nick,
                    row.offer,
                    row.path,
                    row.dir,
                    row.digests,
                    row.mtime_ns,
                    row.created,
                    row.reason,
                ),
            )

    def file_rows(self) -> list[FileRow]:
        """Return every file row, oldest first."""
        rows = self.db.execute(f"SELECT {_FILE_COLUMNS} FROM files ORDER BY created").fetchall()
        return [FileRow(*r) for r in rows]

    def delete_files(self, fids: Iterable[str]) -> None:
        with self._transaction():
            self.db.executemany("DELETE FROM files WHERE fid=?", [(f,) for f in fids])

    # --- contacts (issue 14) --------------------------------------------

    def contacts(self) -> list[ContactRow]:
        """Return every contact, in the order they were added."""
        rows = self.db.execute(
            "SELECT peer_id, nick, addrs, relays, added_at, last_seen FROM contacts "
            "ORDER BY added_at, peer_id"
        ).fetchall()
        out = []
        for peer_id, nick, addrs, relays, added_at, last_seen in rows:
            try:
                addr_list = [str(a) for a in json.loads(addrs)]
                relay_list = [(str(r), str(a)) for r, a in json.loads(relays)]
            except (ValueError, TypeError):
                log.warning("contact %s has unreadable addresses; kept without them", peer_id[:8])
                addr_list, relay_list = [], []
            out.append(ContactRow(peer_id, nick, addr_list, relay_list, added_at, last_seen))
        return out

    def save_contact(self, row: ContactRow) -> None:
        """Insert or replace a contact."""
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO contacts(peer_id, nick, addrs, relays, added_at, last_seen)"
                " VALUES (?,?,?,?,?,?)",
                (
                    row.peer_id,
                    row.nick,
                    json.dumps(row.addrs),
                    json.dumps([list(r) for r in row.relays]),
                    row.added_at,
                    row.last_seen,
                ),
            )

    def forget_contact(self, peer_id: str) -> bool:
        """Delete a contact; return whether there was one."""
        with self._transaction():
            cur = self.db.execute("DELETE FROM contacts WHERE peer_id=?", (peer_id,))
        return cur.rowcount > 0

    # --- mailboxes (issue 15 item 4, docs/dht.md "Mailboxes") ---------------

    def hold_mail(self, items: Iterable[tuple[bytes, str, str, int, int, bytes]]) -> None:
        """Store held mail: (id, recipient, depositor tag, exp, size, item), one transaction.

        `received` is the arrival time in microseconds, one more per item of the batch, so
        that mail_for hands items over in the order they were deposited: an author's items
        share one Olm chain, which opens only a few messages out of order.
        """
        now = time.time_ns() // 1000
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO mailbox(id, recipient, sender, exp, received, size, item)"
                " VALUES (?,?,?,?,?,?,?)",
                [(i, r, s, e, now + k, z, b) for k, (i, r, s, e, z, b) in enumerate(items)],
            )

    def mail_known(self, mail_id: bytes) -> bool:
        """Return whether this mail is held here or was (a tombstone until its expiry)."""
        for table in ("mailbox", "mail_gone"):
            if self.db.execute(f"SELECT 1 FROM {table} WHERE id=?", (mail_id,)).fetchone():
                return True
        return False

    def mail_for(self, recipient: str) -> list[bytes]:
        """Return the encoded items held for recipient, in the order they were deposited."""
        rows = self.db.execute(
            "SELECT item FROM mailbox WHERE recipient=? ORDER BY received, id", (recipient,)
        ).fetchall()
        return [r[0] for r in rows]

    def mail_recipient_counts(self) -> dict[str, int]:
        """Return reader -> how many items we hold for it."""
        rows = self.db.execute("SELECT recipient, COUNT(*) FROM mailbox GROUP BY recipient")
        return {r[0]: r[1] for r in rows}

    def mail_usage(self) -> list[tuple[str, int]]:
        """Return (depositor tag, size) of every held item."""
        return [(r[0], r[1]) for r in self.db.execute("SELECT sender, size FROM mailbox")]

    def mail_delivered(self, recipient: str, ids: Iterable[bytes]) -> list[tuple[str, int]]:
        """Delete acknowledged items (tombstones stay, at most MAILBOX_MAX_TOMBSTONES);
        return (sender, size) of each."""
        gone: list[tuple[str, int]] = []
        with self._transaction():
            for mail_id in ids:
                row = self.db.execute(
                    "SELECT sender, size, exp FROM mailbox WHERE id=? AND recipient=?",
                    (mail_id, recipient),
                ).fetchone()
                if row is None:
                    continue
                self.db.execute("DELETE FROM mailbox WHERE id=?", (mail_id,))
                self.db.execute(
                    "INSERT OR REPLACE INTO mail_gone(id, exp) VALUES (?,?)", (mail_id, row[2])
                )
                gone.append((row[0], row[1]))
            if gone:
                # Bounded (MAILBOX_MAX_TOMBSTONES): acks free the sender's quota, so without
                # a cap put-ack-repeat grows this table for ever. The earliest to expire go.
                (count,) = self.db.execute("SELECT COUNT(*) FROM mail_gone").fetchone()
                excess = count - limits.MAILBOX_MAX_TOMBSTONES
                if excess > 0:
                    self.db.execute(
                        "DELETE FROM mail_gone WHERE id IN"
                        " (SELECT id FROM mail_gone ORDER BY exp, id LIMIT ?)",
                        (excess,),
                    )
        return gone

    def save_outgoing(self, rows: Iterable[tuple[bytes, bytes, str | None, str | None]]) -> None:
        """Save our mail waiting for a first holder: (id, encoded item, msg id, room)."""
        now = int(time.time())
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO mail_out(id, item, msg_id, room, added) VALUES (?,?,?,?,?)",
                [(i, b, mid, r, now) for i, b, mid, r in rows],
            )

    def outgoing(self) -> list[tuple[bytes, str | None, str | None]]:
        """Return our saved mail waiting for a first holder, oldest first: (item, msg id, room)."""
        rows = self.db.execute("SELECT item, msg_id, room FROM mail_out ORDER BY added, id")
        return [(r[0], r[1], r[2]) for r in rows]

    def forget_outgoing(self, ids: Iterable[bytes]) -> None:
        """Forget saved outgoing mail (held by a holder now, or given up)."""
        with self._transaction():
            self.db.executemany("DELETE FROM mail_out WHERE id=?", [(i,) for i in ids])

    def purge_mail(self, now: int) -> int:
        """Delete expired mail and tombstones; return how many items expired."""
        with self._transaction():
            cur = self.db.execute("DELETE FROM mailbox WHERE exp<=?", (now,))
            self.db.execute("DELETE FROM mail_gone WHERE exp<=?", (now,))
        return cur.rowcount

    # --- Olm ratchets (issue 12, docs/protocol.md section 26) ------------------
    # Pickles are encrypted by crypto/ratchet.py with a key derived from the identity seed.

    def olm_account(self) -> str | None:
        """Return our pickled Olm account, or None before the first one is saved."""
        row = self.db.execute("SELECT pickle FROM olm_account WHERE id=1").fetchone()
        return None if row is None else str(row[0])

    def save_olm(
        self,
        account: str | None,
        peer_id: str,
        sessions: Iterable[tuple[str, str]],
        drop: Iterable[str],
        used: float,
        fallback: str | None = None,
    ) -> None:
        """In one transaction: save the account (if given), the state of its fallback key
        (if given: see olm_fallback), peer_id's (session id, pickle) pairs, and delete its
        sessions listed in drop."""
        with self._transaction():
            if account is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO olm_account(id, pickle) VALUES (1, ?)", (account,)
                )
            if fallback is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('olm_fallback', ?)",
                    (fallback,),
                )
            for sid, pickle in sessions:
                self.db.execute(
                    "INSERT OR REPLACE INTO olm_sessions(peer_id, session_id, pickle, used)"
                    " VALUES (?,?,?,?)",
                    (peer_id, sid, pickle, used),
                )
            for sid in drop:
                self.db.execute(
                    "DELETE FROM olm_sessions WHERE peer_id=? AND session_id=?", (peer_id, sid)
                )

    def olm_fallback(self) -> str | None:
        """Return the saved state of our fallback key (private.py's, opaque here), or None."""
        row = self.db.execute("SELECT value FROM meta WHERE key='olm_fallback'").fetchone()
        return None if row is None else str(row[0])

    def save_olm_sessions(self, rows: Iterable[tuple[str, str, str]], used: float) -> None:
        """Save (peer id, session id, pickle) rows in one transaction."""
        with self._transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO olm_sessions(peer_id, session_id, pickle, used)"
                " VALUES (?,?,?,?)",
                [(p, sid, pickle, used) for p, sid, pickle in rows],
            )

    def olm_sessions(self, peer_id: str) -> list[tuple[str, str]]:
        """Return peer_id's (session id, pickle), most recently used first."""
        rows = self.db.execute(
            "SELECT session_id, pickle FROM olm_sessions WHERE peer_id=? ORDER BY used DESC",
            (peer_id,),
        )
        return [(r[0], r[1]) for r in rows]

    def olm_peer(self, peer_id: str) -> tuple[bytes, bytes, bytes, bytes] | None:
        """Return peer_id's Olm keys (ident, fallback, signature, unused one-time key or b"")."""
        row = self.db.execute(
            "SELECT ident, fb, sig, otk FROM olm_peers WHERE peer_id=?", (peer_id,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def olm_peer_learned(self, peer_id: str) -> float | None:
        """Return when peer_id's Olm keys were last saved (Unix seconds), or None."""
        row = self.db.execute("SELECT used FROM olm_peers WHERE peer_id=?", (peer_id,)).fetchone()
        return None if row is None else float(row[0])

    def olm_peer_seen(self, peer_id: str) -> float | None:
        """Return when peer_id's Olm keys were last seen (our clock, Unix s), or None."""
        row = self.db.execute("SELECT seen FROM olm_peers WHERE peer_id=?", (peer_id,)).fetchone()
        return None if row is None else float(row[0])

    def olm_peer_touch(self, peer_id: str, seen: float, signed: float) -> None:
        """Note that peer_id's Olm keys were seen again at `seen` (the LRU time of eviction),
        signed again at `signed` (kept if later than the time held: olm_peer_learned)."""
        with self._transaction():
            self.db.execute(
                "UPDATE olm_peers SET seen=?, used=max(used, ?) WHERE peer_id=?",
                (seen, signed, peer_id),
            )

    def save_olm_peer(
        self,
        peer_id: str,
        ident: bytes,
        fb: bytes,
        sig: bytes,
        otk: bytes,
        used: float,
        seen: float | None = None,
    ) -> None:
        """Save a peer's Olm keys; a new identity key drops the sessions with the old one.

        used: when they were signed or received; seen: when we last saw them (our clock,
        default used), by which the least recently seen are evicted.

        Peers we have a conversation with, verified peers and contacts are never forgotten
        here (other bounds keep them few). Of the rest, those we share no session with keep
        at most OLM_MAX_STRANGER_KEYS, and all together OLM_MAX_PEERS; beyond, the least
        recently seen go (without a session first), keys and sessions."""
        with self._transaction():
            old = self.db.execute(
                "SELECT ident FROM olm_peers WHERE peer_id=?", (peer_id,)
            ).fetchone()
            if old is not None and old[0] != ident:
                self.db.execute("DELETE FROM olm_sessions WHERE peer_id=?", (peer_id,))
            self.db.execute(
                "INSERT OR REPLACE INTO olm_peers(peer_id, ident, fb, sig, otk, used, seen)"
                " VALUES (?,?,?,?,?,?,?)",
                (peer_id, ident, fb, sig, otk, used, used if seen is None else seen),
            )
            self._evict_olm_peers(peer_id, "NOT " + _HAS_SESSION, limits.OLM_MAX_STRANGER_KEYS)
            self._evict_olm_peers(peer_id, "1", limits.OLM_MAX_PEERS)

    def olm_protected(self, peer_id: str) -> bool:
        """Return whether peer_id is a conversation, a verified peer or a contact of ours."""
        row = self.db.execute(
            f"SELECT 1 FROM (SELECT ? AS peer_id) WHERE {_OLM_PROTECTED}", (peer_id,)
        ).fetchone()
        return row is not None

    def _evict_olm_peers(self, saved: str, which: str, keep: int) -> None:
        """Forget unprotected Olm peers matching `which` beyond `keep`, least recent first
        (those without a session before the rest); never `saved`, the peer being saved."""
        unprotected = f"NOT {_OLM_PROTECTED} AND {which}"
        (count,) = self.db.execute(f"SELECT COUNT(*) FROM olm_peers WHERE {unprotected}").fetchone()
        if count <= keep:
            return
        gone = self.db.execute(
            f"SELECT peer_id FROM olm_peers WHERE {unprotected} AND peer_id!=?"
            f" ORDER BY {_HAS_SESSION}, seen, used LIMIT ?",
            (saved, count - keep),
        ).fetchall()
        for (peer,) in gone:
            self.db.execute("DELETE FROM olm_peers WHERE peer_id=?", (peer,))
            self.db.execute("DELETE FROM olm_sessions WHERE peer_id=?", (peer,))

    def olm_peer_otk_used(self, peer_id: str) -> None:
        """Forget peer_id's one-time key (it opened a session: it opens no other)."""
        with self._transaction():
            self.db.execute("UPDATE olm_peers SET otk=x'' WHERE peer_id=?", (peer_id,))

    # --- internals ------------------------------------------------------

    def _transaction(self) -> _Tx:
        return _Tx(self.db)


class _Checkpointer(threading.Thread):
    """Copies the WAL into the database file periodically, off the event loop.

    sqlite3 releases the GIL while SQLite works, so this runs on another core.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(name="chinwag-checkpoint", daemon=True)
        self.path = path
        self._halt = threading.Event()
        self._db: sqlite3.Connection | None = None
        #: Checkpoints that failed in a row, and the last error (read by Store.check_checkpointer).
        self.failures = 0
        self.last_error = ""
        #: Checkpoints done.
        self.done = 0

    def run(self) -> None:
        try:
            while not self._halt.wait(limits.CHECKPOINT_INTERVAL_S):
                try:
                    self._checkpoint()
                except Exception as exc:  # keep going: a stopped checkpointer lets the WAL grow
                    self._failed(exc)
                else:
                    if self.failures:
                        log.info("WAL checkpoints work again after %d failures", self.failures)
                    self.failures = 0
                    self.done += 1
        except BaseException as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._close()

    def _checkpoint(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.failures == 1 or self.failures % limits.CHECKPOINT_FAILURES_REPORTED == 0:
            log.warning("WAL checkpoint failed (%d in a row): %s", self.failures, self.last_error)
        self._close()  # reconnect on the next try

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error; maps errors to StoreError."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error as err:
                self.db.execute("ROLLBACK")
                raise StoreError(f"cannot write the message store: {err}") from None
        else:
            self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot write the message store: {exc}") from None


def _row(r: tuple[str, str, str, int, int, str, str, int]) -> Row:
    return Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]))

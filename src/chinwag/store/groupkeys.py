"""Megolm sessions of private rooms in the node's SQLite store (tables `megolm_*`).

Pickles are encrypted by vodozemac with a key derived from the identity seed
(crypto/group.pickle_key): copying the database together with the identity moves the
sessions; the database alone does not open them.
"""

from __future__ import annotations

from dataclasses import dataclass

from chinwag.store.db import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS megolm_outbound(
    room TEXT PRIMARY KEY, sid TEXT NOT NULL, pickle TEXT NOT NULL,
    created REAL NOT NULL, sent INTEGER NOT NULL, left_since INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS megolm_inbound(
    room TEXT NOT NULL, author TEXT NOT NULL, sid TEXT NOT NULL, pickle TEXT NOT NULL,
    first_index INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY(room, author, sid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS megolm_inbound_created ON megolm_inbound(created);
CREATE TABLE IF NOT EXISTS megolm_unread(
    id TEXT PRIMARY KEY, room TEXT NOT NULL, author TEXT NOT NULL, sid TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS megolm_unread_session ON megolm_unread(room, author, sid);
"""


@dataclass(frozen=True, slots=True)
class OutboundRow:
    """Our outbound session of one private room, as stored."""

    room: str
    sid: str
    pickle: str
    created: float
    sent: int
    #: A member left (or was blocked) since it was made: the next message rotates.
    left: bool


class GroupKeyStore:
    """Reads and writes the `megolm_*` tables of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        db = store.db
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)

    def outbound(self, room: str) -> OutboundRow | None:
        r = self.store.db.execute(
            "SELECT room, sid, pickle, created, sent, left_since FROM megolm_outbound WHERE room=?",
            (room,),
        ).fetchone()
        return OutboundRow(r[0], r[1], r[2], r[3], r[4], bool(r[5])) if r is not None else None

    def save_outbound(self, row: OutboundRow) -> None:
        with self.store._transaction():
            self.store.db.execute(
                "INSERT OR REPLACE INTO megolm_outbound"
                "(room, sid, pickle, created, sent, left_since) VALUES (?,?,?,?,?,?)",
                (row.room, row.sid, row.pickle, row.created, row.sent, int(row.left)),
            )

    def mark_left(self, room: str) -> None:
        with self.store._transaction():
            self.store.db.execute("UPDATE megolm_outbound SET left_since=1 WHERE room=?", (room,))

    def forget_room(self, room: str) -> None:
        """We left the room: our outbound session goes (inbound ones expire as usual)."""
        with self.store._transaction():
            self.store.db.execute("DELETE FROM megolm_outbound WHERE room=?", (room,))

    def inbound(self, room: str, author: str, sid: str) -> tuple[str, int] | None:
        """Return (pickle, first index) of an inbound session, or None."""
        r = self.store.db.execute(
            "SELECT pickle, first_index FROM megolm_inbound WHERE room=? AND author=? AND sid=?",
            (room, author, sid),
        ).fetchone()
        return (r[0], r[1]) if r is not None else None

    def has_author(self, room: str, author: str) -> bool:
        """Return whether we hold any inbound session of author in room (it gave us a key)."""
        r = self.store.db.execute(
            "SELECT 1 FROM megolm_inbound WHERE room=? AND author=? LIMIT 1", (room, author)
        ).fetchone()
        return r is not None

    def save_inbound(
        self, room: str, author: str, sid: str, pickle: str, first_index: int, now: float, keep: int
    ) -> None:
        """Save an inbound session; keep only the `keep` newest of (room, author)."""
        with self.store._transaction():
            db = self.store.db
            db.execute(
                "INSERT OR REPLACE INTO megolm_inbound"
                "(room, author, sid, pickle, first_index, created) VALUES (?,?,?,?,?,?)",
                (room, author, sid, pickle, first_index, now),
            )
            db.execute(
                "DELETE FROM megolm_inbound WHERE room=? AND author=? AND sid NOT IN ("
                " SELECT sid FROM megolm_inbound WHERE room=? AND author=?"
                " ORDER BY created DESC LIMIT ?)",
                (room, author, room, author, keep),
            )

    def expire_inbound(self, before: float) -> int:
        """Delete inbound sessions received before `before`; return how many went."""
        with self.store._transaction():
            cur = self.store.db.execute("DELETE FROM megolm_inbound WHERE created<?", (before,))
        return cur.rowcount

    def inbound_count(self) -> int:
        return int(self.store.db.execute("SELECT count(*) FROM megolm_inbound").fetchone()[0])

    # --- messages stored unread (their key had not come) ----------------------------------

    def add_unread(self, msg_id: str, room: str, author: str, sid: str) -> None:
        with self.store._transaction():
            self.store.db.execute(
                "INSERT OR REPLACE INTO megolm_unread(id, room, author, sid) VALUES (?,?,?,?)",
                (msg_id, room, author, sid),
            )

    def unread(self, room: str, author: str, sid: str) -> list[tuple[str, bytes]]:
        """Return (id, signed body) of the stored messages of this session still unread."""
        rows = self.store.db.execute(
            "SELECT u.id, m.body FROM megolm_unread u JOIN messages m ON m.id = u.id"
            " WHERE u.room=? AND u.author=? AND u.sid=?",
            (room, author, sid),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def unread_sessions(self, room: str, limit: int) -> list[tuple[str, str]]:
        """Return up to limit (author, session id) of room's messages stored unread."""
        rows = self.store.db.execute(
            "SELECT DISTINCT author, sid FROM megolm_unread WHERE room=? LIMIT ?", (room, limit)
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def read_at_last(self, msg_id: str, text: str) -> None:
        """A stored unread message decrypted: its text replaces the placeholder."""
        with self.store._transaction():
            self.store.db.execute("UPDATE messages SET text=? WHERE id=?", (text, msg_id))
            self.store.db.execute("DELETE FROM megolm_unread WHERE id=?", (msg_id,))

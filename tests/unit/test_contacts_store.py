"""The `contacts` table (store/db.py): kept across opens, added to stores made before it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chinwag.store.db import ContactRow, Store

ID = "a" * 51 + "q"


def test_contacts_are_kept_across_opens(tmp_path: Path) -> None:
    path = tmp_path / "chinwag.db"
    s = Store(path)
    row = ContactRow(ID, "alice", ["192.0.2.1:47475"], [("b" * 51 + "a", "198.51.100.1:1")], 5.0)
    s.save_contact(row)
    s.close()
    s = Store(path)
    try:
        assert s.contacts() == [row]
        row.last_seen = 9.0
        s.save_contact(row)
        assert s.contacts()[0].last_seen == 9.0
        assert s.forget_contact(ID) is True
        assert s.forget_contact(ID) is False
        assert s.contacts() == []
    finally:
        s.close()


def test_a_store_made_before_contacts_existed_gets_the_table(tmp_path: Path) -> None:
    path = tmp_path / "chinwag.db"
    Store(path).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE contacts")
    raw.commit()
    raw.close()
    s = Store(path)
    try:
        assert s.contacts() == []
        s.save_contact(ContactRow(ID, "alice", [], [], 1.0))
        assert [c.peer_id for c in s.contacts()] == [ID]
    finally:
        s.close()


def test_unreadable_addresses_keep_the_contact(tmp_path: Path) -> None:
    s = Store(tmp_path / "chinwag.db")
    try:
        s.db.execute(
            "INSERT INTO contacts(peer_id, nick, addrs, relays, added_at) VALUES (?,?,?,?,?)",
            (ID, "alice", "{not json", "[]", 1.0),
        )
        [c] = s.contacts()
        assert (c.peer_id, c.addrs, c.relays) == (ID, [], [])
    finally:
        s.close()

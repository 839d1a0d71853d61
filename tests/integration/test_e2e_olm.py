"""Private messages over Olm ratchets between real processes (issue 12, docs/protocol.md 26):
both ways across restarts, and a peer that lost its ratchet state (an old copy of its
database, or none) recovers every message under a new session."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from it_support import PROMPT_S, ChinwagProcess, NodeFactory, connected, stderr_has_traceback
from test_e2e_rooms import dm, errors, got_dm, history, marker


async def _pair(node: NodeFactory, tmp_path: Path) -> tuple[ChinwagProcess, ChinwagProcess]:
    a = node("alice", discovery=False, data_dir=tmp_path / "alice")
    await a.start()
    b = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False, data_dir=tmp_path / "bob")
    await b.start()
    await connected(a, b)
    return a, b


async def _restart_bob(
    node: NodeFactory, a: ChinwagProcess, b: ChinwagProcess, tmp_path: Path
) -> ChinwagProcess:
    b2 = node("bob", "--peer", f"127.0.0.1:{a.port}", discovery=False, data_dir=tmp_path / "bob")
    await b2.start()
    await connected(a, b2)
    return b2


async def _stop(a: ChinwagProcess, b: ChinwagProcess) -> None:
    assert await b.quit() == 0, b.stderr_tail()
    await a.wait_for("peer_left", timeout=PROMPT_S, peer_id=b.peer_id)


def _copy_db(data_dir: Path, to: Path) -> None:
    src, dst = sqlite3.connect(data_dir / "chinwag.db"), sqlite3.connect(to)
    src.backup(dst)
    src.close()
    dst.close()


def _put_db(saved: Path, data_dir: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (data_dir / f"chinwag.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(saved, data_dir / "chinwag.db")


async def _both_ways(a: ChinwagProcess, b: ChinwagProcess, label: str) -> list[str]:
    ids = []
    for src, dst in ((a, b), (b, a), (a, b)):
        own = await dm(src, dst.peer_id, marker(label))
        await got_dm(dst, own, to=dst)
        ids.append(own["id"])
    return ids


async def test_a_peer_with_an_old_copy_of_its_ratchets_recovers_every_message(
    node: NodeFactory, tmp_path: Path
) -> None:
    """Bob goes back to a database copied before the ratchet moved on: alice's messages are
    under a session state bob no longer has; they are refused, a new session starts, and
    sync re-sends what bob lost, re-wrapped under it."""
    a, b = await _pair(node, tmp_path)
    before = await _both_ways(a, b, "before")
    await _stop(a, b)
    _copy_db(tmp_path / "bob", tmp_path / "bob-old.db")
    b2 = await _restart_bob(node, a, b, tmp_path)
    lost = await _both_ways(a, b2, "lost")  # the ratchet moves on (both ways)
    await _stop(a, b2)
    _put_db(tmp_path / "bob-old.db", tmp_path / "bob")
    b3 = await _restart_bob(node, a, b2, tmp_path)
    own = await dm(a, b3.peer_id, marker("after"))
    await got_dm(b3, own, to=b3)
    for msg_id in lost:
        await b3.wait_for("dm", timeout=PROMPT_S, from_start=True, id=msg_id)
    want = [*before, *lost, own["id"]]
    conv = await history(b3, f"@{a.peer_id}")
    assert [ev["id"] for ev in conv["messages"]] == want, conv
    reply = await dm(b3, a.peer_id, marker("reply"))
    await got_dm(a, reply, to=a)
    assert errors(a) == errors(b3) == []
    for n in (a, b, b2, b3):
        assert not stderr_has_traceback(n), n.stderr_tail()


async def test_a_peer_that_lost_all_its_ratchets_gets_new_sessions(
    node: NodeFactory, tmp_path: Path
) -> None:
    """Bob's Olm tables are gone (a reinstall keeping the identity and history): his new
    identity key replaces the old one at alice, and DMs go both ways under a new session."""
    a, b = await _pair(node, tmp_path)
    await _both_ways(a, b, "before")
    await _stop(a, b)
    away = await dm(a, b.peer_id, marker("while-away"))
    db = sqlite3.connect(tmp_path / "bob" / "chinwag.db")
    with db:
        for table in ("olm_account", "olm_sessions", "olm_peers"):
            db.execute(f"DELETE FROM {table}")
    db.close()
    b2 = await _restart_bob(node, a, b, tmp_path)
    await got_dm(b2, away, to=b2)
    await _both_ways(a, b2, "after")
    assert errors(a) == errors(b2) == []
    for n in (a, b, b2):
        assert not stderr_has_traceback(n), n.stderr_tail()

"""Olm ratchets between two real nodes in one process (real sockets, real SQLite): forward
secrecy (issue 12 item 1) shown on recorded `pm` ciphertexts."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from it_support import PROMPT_S, until

from chinwag import events as ev
from chinwag.crypto import box, ratchet
from chinwag.crypto.identity import Identity
from chinwag.node import Node
from node_support import make_node

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """Every `pm` each node sent or received, as an eavesdropper inside Noise would see it."""

    def __init__(self) -> None:
        self.pms: list[bytes] = []

    def __call__(self, _peer_id: str, data: bytes) -> None:
        if data not in self.pms:
            self.pms.append(data)


async def _converse(
    a: Node, b: Node, texts: list[tuple[str, str]], got: dict[str, list[str]]
) -> None:
    """Send each (sender, text) as a DM and wait until the other side shows it."""
    nodes = {"a": (a, b), "b": (b, a)}
    for who, text in texts:
        src, dst = nodes[who]
        await src.dm(dst.identity.peer_id, text)
        await until(lambda t=text, d=dst: t in got[d.identity.peer_id], f"{who}: {text!r} arrives")


def _attack(pms: list[bytes], seeds: list[bytes], dbs: list[Path]) -> list[tuple[int, str]]:
    """Try everything found in dbs with both identity seeds on every recorded pm; return
    what decrypted: (index of the pm, how)."""
    identities = [Identity.from_seed(s) for s in seeds]
    keys = [ratchet.pickle_key(s) for s in seeds]
    accounts: list[str] = []
    sessions: list[str] = []
    for path in dbs:
        db = sqlite3.connect(path)
        accounts += [r[0] for r in db.execute("SELECT pickle FROM olm_account")]
        sessions += [r[0] for r in db.execute("SELECT pickle FROM olm_sessions")]
        idents = [r[0] for r in db.execute("SELECT ident FROM olm_peers")]
        db.close()
    assert accounts and sessions, "nothing to attack with?"
    broke: list[tuple[int, str]] = []
    for i, data in enumerate(pms):
        msg = ratchet.unpad(data)
        for key in keys:
            for pickle in sessions:
                with contextlib.suppress(ratchet.RatchetError):
                    ratchet.OlmSession.from_pickle(pickle, key).decrypt(msg)
                    broke.append((i, "a saved session"))
            for pickle in accounts:
                with contextlib.suppress(ratchet.RatchetError):
                    account = ratchet.OlmAccount.from_pickle(pickle, key)
                    for ident in idents:
                        with contextlib.suppress(ratchet.RatchetError):
                            account.inbound(ident, msg)
                            broke.append((i, "a saved account's keys"))
        for identity in identities:  # the long-term keys themselves
            with contextlib.suppress(box.BadCiphertext):
                box.open_sealed(identity, data)
                broke.append((i, "the identity key (sealed box)"))
            for mine in (False, True):
                with contextlib.suppress(box.BadCiphertext):
                    box.open_dm(identity, data, mine)
                    broke.append((i, "the identity key (dm boxes)"))
    return broke


def _copy_db(data_dir: Path, to: Path) -> Path:
    """Copy a node's database as it is now (WAL included) to a file of its own."""
    src = sqlite3.connect(data_dir / "chinwag.db")
    dst = sqlite3.connect(to)
    src.backup(dst)
    src.close()
    dst.close()
    return to


async def test_recorded_dms_do_not_decrypt_with_both_identities_and_both_databases(
    tmp_path: Path,
) -> None:
    a = make_node(tmp_path / "a", "alice")
    await a.start()
    b = make_node(tmp_path / "b", "bob", peers=[("127.0.0.1", a.port)])
    await b.start()
    got: dict[str, list[str]] = {a.identity.peer_id: [], b.identity.peer_id: []}
    for n in (a, b):
        n.subscribe(
            lambda e, me=n.identity.peer_id: (
                got[me].append(e.text) if isinstance(e, ev.DirectMessage) and not e.own else None
            )
        )
    try:
        await until(
            lambda: (
                b.identity.peer_id in a._running().manager.peers
                and a.identity.peer_id in b._running().manager.peers
            ),
            "connected",
        )
        rec = Recorder()
        for n in (a, b):
            private = n._running().private
            assert private is not None
            private.recorder = rec
        await _converse(a, b, [("a", "one"), ("a", "two"), ("b", "three"), ("a", "four")], got)
        early = len(rec.pms)
        # Positive control: what a copy of bob's database taken now opens later on.
        snapshot = _copy_db(tmp_path / "b", tmp_path / "b-then.db")
        await _converse(a, b, [("a", "five"), ("b", "six"), ("a", "seven"), ("b", "eight")], got)
        # The ratchet moves on past the last recorded messages.
        await _converse(a, b, [("a", "nine"), ("b", "ten"), ("a", "eleven")], got)
        assert len(rec.pms) >= 11
        for text in ("one", "seven", "eleven"):
            assert all(text.encode() not in pm for pm in rec.pms)
        # Short DMs in the two smallest buckets (a pre-key message carries more).
        assert {len(pm) for pm in rec.pms} <= {256, 512}
        seeds = [bytes(a.identity.signing_key), bytes(b.identity.signing_key)]
        later = rec.pms[early:]
        assert _attack(later, seeds, [snapshot]), "the attack cannot break even a live session?"
    finally:
        await b.stop()
        await a.stop()
    # The attacker: both identity seeds, both databases after the ratchet moved on.
    dbs = [
        _copy_db(tmp_path / "a", tmp_path / "a-stolen.db"),
        _copy_db(tmp_path / "b", tmp_path / "b-stolen.db"),
    ]
    assert _attack(rec.pms, seeds, dbs) == []
    shutil.rmtree(tmp_path / "a")  # nothing else of the nodes is left to try


async def test_sessions_survive_a_restart_and_a_first_dm_sets_one_up_at_once(
    tmp_path: Path,
) -> None:
    a = make_node(tmp_path / "a", "alice")
    await a.start()
    b = make_node(tmp_path / "b", "bob", peers=[("127.0.0.1", a.port)])
    await b.start()
    got: list[str] = []
    b.subscribe(lambda e: got.append(e.text) if isinstance(e, ev.DirectMessage) else None)
    try:
        await until(lambda: b.identity.peer_id in a._running().manager.peers, "connected")
        await a.dm(b.identity.peer_id, "first")
        await until(lambda: "first" in got, "the first dm arrives")
        await b.stop()
        await until(lambda: b.identity.peer_id not in a._running().manager.peers, "b left")
        b = make_node(tmp_path / "b", "bob", peers=[("127.0.0.1", a.port)])
        await b.start()
        got.clear()
        b.subscribe(lambda e: got.append(e.text) if isinstance(e, ev.DirectMessage) else None)
        await until(lambda: b.identity.peer_id in a._running().manager.peers, "reconnected")
        private = b._running().private
        assert private is not None and private.has_session(a.identity.peer_id)  # from pickles
        await a.dm(b.identity.peer_id, "after the restart")
        await until(lambda: "after the restart" in got, "the dm after the restart arrives")
        db = sqlite3.connect(tmp_path / "b" / "chinwag.db")
        assert db.execute("SELECT COUNT(*) FROM olm_sessions").fetchone()[0] == 1
        db.close()
    finally:
        await asyncio.gather(b.stop(), a.stop())
    _ = PROMPT_S

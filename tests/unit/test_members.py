"""members.py: the presence book's adapter over the Links interface (fakes of net/)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from unit_support import ALICE, BOB, CAROL, ME, FakeConn, FakeManager

from chinwag.crypto.identity import Identity
from chinwag.members import Members
from chinwag.private import PrivateChannel
from chinwag.protocol import messages as m
from chinwag.protocol.presence import make_record, open_record
from chinwag.protocol.reasons import Reason
from chinwag.store.db import Store

NOW = 1_800_000_000.0
KEYLESS = m.PublishedKeys(ident=bytes(32), fb=bytes(32), sig=bytes(64))


def record_of(who: Identity, t: float = NOW) -> m.SignedPresence:
    seq = int(t * 1000)
    return make_record(who, "n", seq, seq // 1000 + 600, False, [("general", b"")], []).signed


def presences(manager: FakeManager) -> list[tuple[list[str], frozenset[str]]]:
    out = []
    for plaintext, exclude in manager.broadcasts:
        frame = m.decode_frame(plaintext)
        assert isinstance(frame, m.Presence)
        out.append(([open_record(r).author for r in frame.recs], exclude))
    return out


async def test_records_are_sent_forwarded_and_a_forger_cut_and_reported() -> None:
    saved: list[int] = []
    invalid: list[str] = []
    manager = FakeManager()
    relay, other = FakeConn(BOB.peer_id), FakeConn("q" * 51 + "a")
    manager.peers = {relay.peer_id: relay, other.peer_id: other}
    members = Members(
        ME, manager, 0, saved.append, lambda _p: False, clock=lambda: NOW, invalid=invalid.append
    )
    try:
        members.set_own("me", [("general", b"")], ["127.0.0.1:1"])
        assert presences(manager) == [([ME.peer_id], frozenset())] and saved
        # A new connection gets our record; its rooms frame gets it what we hold.
        members.peer_joined(other)
        assert isinstance(other.sent[-1], m.Presence)
        # A record from the relay: held and forwarded to the others, not back.
        members.frame(relay, m.Presence(recs=[record_of(ALICE)]))
        assert presences(manager)[-1] == ([ALICE.peer_id], frozenset({BOB.peer_id}))
        assert members.nicks() == {ALICE.peer_id: "n"} and members.online(ALICE.peer_id)
        members.rooms_announced(other, {}, {"general": b""})
        sent = other.sent[-1]
        assert isinstance(sent, m.Presence)
        assert [open_record(r).author for r in sent.recs] == [ALICE.peer_id]
        # A forged record (another key's signature): the relay is cut and reported.
        good = record_of(ALICE, NOW + 5)
        forged = m.SignedPresence(body=good.body, sig=record_of(BOB, NOW + 5).sig)
        members.frame(relay, m.Presence(recs=[forged]))
        assert relay.closed == Reason.BAD_SIGNATURE and invalid == [BOB.peer_id]
        assert len(presences(manager)) == 2  # nothing more forwarded
    finally:
        members.close()


async def test_the_leave_goes_out_and_the_timer_stops() -> None:
    manager = FakeManager()
    members = Members(ME, manager, 0, lambda _s: None, lambda _p: False, clock=lambda: NOW)
    members.set_own("me", [("general", b"")], [])
    assert members._timer is not None  # the refresh
    members.leave()
    frame = m.decode_frame(manager.broadcasts[-1][0])
    assert isinstance(frame, m.Presence) and open_record(frame.recs[0]).gone
    assert members._timer is None
    await asyncio.sleep(0)


async def test_a_record_s_olm_keys_are_learned_and_bad_ones_ignored_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """prekeys (docs/protocol.md 23.1): a record's keys reach the ratchets; a record whose
    keys its author did not sign is held and forwarded all the same, its keys ignored."""
    manager = FakeManager()
    relay, other = FakeConn(BOB.peer_id), FakeConn("q" * 51 + "a")
    manager.peers = {relay.peer_id: relay, other.peer_id: other}
    store = Store(tmp_path / "me.db")
    private = PrivateChannel(ME, store, manager)
    members = Members(
        ME,
        manager,
        0,
        lambda _s: None,
        lambda _p: False,
        clock=lambda: NOW,
        own_keys=private.presence_keys,
        learn_keys=lambda r: private.learn_published(r.author, r.okeys or KEYLESS, r.signed_at),
    )
    try:
        members.set_own("me", [("general", b"")], [])
        own = members.book.own
        assert own is not None and own.okeys == private.presence_keys()
        alice = PrivateChannel(ALICE, Store(tmp_path / "a.db"), FakeManager())
        seq = int(NOW * 1000)
        good = make_record(
            ALICE, "n", seq, seq // 1000 + 600, False, [("general", b"")], [], alice.presence_keys()
        )
        members.frame(relay, m.Presence(recs=[good.signed]))
        assert store.olm_peer(ALICE.peer_id) is not None
        # Carol's record with keys signed by someone else: held and forwarded, keys ignored.
        keys = alice.presence_keys()
        with caplog.at_level(logging.WARNING):
            for t in (NOW, NOW + 5):
                bad = make_record(
                    CAROL, "c", int(t * 1000), int(t) + 600, False, [("general", b"")], [], keys
                )
                members.frame(relay, m.Presence(recs=[bad.signed]))
        assert relay.closed is None and members.online(CAROL.peer_id)
        assert presences(manager)[-1] == ([CAROL.peer_id], frozenset({BOB.peer_id}))
        assert store.olm_peer(CAROL.peer_id) is None
        assert len([r for r in caplog.records if "did not sign" in r.getMessage()]) == 1
    finally:
        members.close()
        store.close()

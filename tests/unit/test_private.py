"""private.py: session set-up over a connection, pm frames, refusals, bounds, stale sessions."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from unit_support import ALICE, BOB, CAROL, MALLORY, FakeConn, FakeManager

from chinwag import limits
from chinwag.crypto import ratchet
from chinwag.crypto.box import BadCiphertext
from chinwag.crypto.identity import Identity
from chinwag.private import CHAT, NoKeys, PrivateChannel, TooLarge, inner
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import Reason
from chinwag.store.db import Store, StoreError


class End:
    """One side: its channel, its view of the other's connection, what it received."""

    def __init__(self, identity: Identity, other: Identity, path: Path, now: list[float]) -> None:
        self.identity = identity
        self.store = Store(path)
        self.links = FakeManager()
        self.conn = FakeConn(other.peer_id)
        self.links.peers[other.peer_id] = self.conn
        self.got: list[bytes] = []
        self.sessions: list[str] = []
        self.now = now
        self.channel = self.make()

    def make(self) -> PrivateChannel:
        ch = PrivateChannel(
            self.identity, self.store, self.links, lambda: self.now[0], lambda: self.now[0]
        )
        ch.on(CHAT, lambda peer, data: self.got.append(data))
        ch.on_session = self.sessions.append
        return ch


def pump(a: End, b: End) -> None:
    """Deliver what each sent to the other until both are quiet."""
    while a.conn.sent or b.conn.sent:
        for src, dst in ((a, b), (b, a)):
            frames, src.conn.sent = src.conn.sent, []
            for f in frames:
                assert isinstance(f, m.OlmKeyRequest | m.OlmKeys | m.PrivateMessage), f
                dst.channel.frame(dst.conn, m.decode_frame(m.encode(f)))  # type: ignore[arg-type]


@pytest.fixture
def ends(tmp_path: Path) -> tuple[End, End]:
    now = [1000.0]
    a = End(ALICE, BOB, tmp_path / "a.db", now)
    b = End(BOB, ALICE, tmp_path / "b.db", now)
    a.channel.peer_joined(a.conn)
    b.channel.peer_joined(b.conn)
    pump(a, b)
    return a, b


def test_meeting_gives_each_a_one_time_key_and_dms_go_both_ways(ends: tuple[End, End]) -> None:
    a, b = ends
    assert a.store.olm_peer(BOB.peer_id) is not None
    assert a.store.olm_peer(BOB.peer_id)[3] != b""  # type: ignore[index]
    assert a.channel.send(BOB.peer_id, inner(CHAT, b"hi bob"))
    sent = list(a.conn.sent)
    pump(a, b)
    assert b.got == [b"hi bob"]
    assert len(sent) == 1 and isinstance(sent[0], m.PrivateMessage)
    assert len(sent[0].d) == limits.PM_MIN_BUCKET
    assert b.channel.send(ALICE.peer_id, inner(CHAT, b"hi alice"))
    pump(a, b)
    assert a.got == [b"hi alice"]
    assert a.store.olm_peer(BOB.peer_id)[3] == b""  # type: ignore[index]  # used once


def test_a_dm_before_the_keys_arrive_waits_for_them(tmp_path: Path) -> None:
    now = [0.0]
    a = End(ALICE, BOB, tmp_path / "a.db", now)
    b = End(BOB, ALICE, tmp_path / "b.db", now)
    a.channel.peer_joined(a.conn)
    assert a.channel.send(BOB.peer_id, inner(CHAT, b"early"))
    b.channel.peer_joined(b.conn)
    pump(a, b)
    assert b.got == [b"early"]


def test_send_without_a_connection_is_false(ends: tuple[End, End]) -> None:
    a, _b = ends
    del a.links.peers[BOB.peer_id]
    assert not a.channel.send(BOB.peer_id, inner(CHAT, b"x"))


def test_replayed_pm_is_refused_once_logged_and_moves_nothing(
    ends: tuple[End, End], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = ends
    a.channel.send(BOB.peer_id, inner(CHAT, b"one"))
    (frame,) = a.conn.sent
    pump(a, b)
    caplog.set_level(logging.DEBUG, "chinwag.private")
    assert isinstance(frame, m.PrivateMessage)
    b.channel.frame(b.conn, frame)
    b.channel.frame(b.conn, frame)
    assert b.got == [b"one"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "refusing a pm" in warnings[0].getMessage()
    b.conn.sent.clear()  # a repair request: not needed for the next message
    a.channel.send(BOB.peer_id, inner(CHAT, b"two"))
    pump(a, b)
    assert b.got[:2] == [b"one", b"two"]


def test_unwrap_refuses_replay_forgery_and_truncation_without_advancing(
    ends: tuple[End, End],
) -> None:
    a, b = ends
    first = a.channel.wrap(BOB.peer_id, b"first")
    assert b.channel.unwrap(ALICE.peer_id, first) == b"first"
    second = a.channel.wrap(BOB.peer_id, b"second")
    olm = ratchet.unpad(second)
    flipped = olm.ciphertext[:-1] + bytes([olm.ciphertext[-1] ^ 1])
    forged = ratchet.pad(ratchet.OlmMessage(olm.kind, flipped))
    for bad in (first, forged, second[:128], second[:-1] + b"\x01"):
        with pytest.raises(BadCiphertext):
            b.channel.unwrap(ALICE.peer_id, bad)
    assert b.channel.unwrap(ALICE.peer_id, second) == b"second"


def test_a_peer_sending_garbage_pm_is_disconnected_after_a_bound(ends: tuple[End, End]) -> None:
    _a, b = ends
    for i in range(limits.PM_MAX_BAD):
        assert b.conn.closed is None, i
        b.channel.frame(b.conn, m.PrivateMessage(d=bytes([1, 0, 0, 0, 3]) + bytes(251)))
    assert b.conn.closed == Reason.DECRYPT_FAILED


def test_a_flood_of_one_time_key_requests_is_bounded(ends: tuple[End, End]) -> None:
    a, _b = ends
    a.conn.sent.clear()
    for _ in range(limits.OLM_OTK_PER_PEER_PER_MIN * 3):
        a.channel.frame(a.conn, m.OlmKeyRequest())
    keys = [f for f in a.conn.sent if isinstance(f, m.OlmKeys)]
    assert len(keys) == limits.OLM_OTK_PER_PEER_PER_MIN * 3
    # one went to bob at the meeting already
    assert sum(1 for k in keys if k.otk) == limits.OLM_OTK_PER_PEER_PER_MIN - 1
    # Reconnecting does not reset the budget.
    a.channel.peer_left(BOB.peer_id)
    a.channel.peer_joined(a.conn)
    a.conn.sent.clear()
    a.channel.frame(a.conn, m.OlmKeyRequest())
    (refused,) = a.conn.sent
    assert isinstance(refused, m.OlmKeys) and refused.re and not refused.otk
    a.now[0] += 61
    a.conn.sent.clear()
    a.channel.frame(a.conn, m.OlmKeyRequest())
    (again,) = a.conn.sent
    assert isinstance(again, m.OlmKeys) and again.otk


def test_keys_not_signed_by_the_peer_close_the_connection(ends: tuple[End, End]) -> None:
    a, b = ends
    keys = b.channel.published_keys()
    a.channel.frame(a.conn, m.OlmKeys(ident=keys.ident, fb=bytes(32), sig=keys.sig))
    assert a.conn.closed == Reason.BAD_SIGNATURE


def test_sessions_survive_a_restart(ends: tuple[End, End]) -> None:
    a, b = ends
    a.channel.send(BOB.peer_id, inner(CHAT, b"before"))
    pump(a, b)
    a.channel = a.make()  # a new process over the same store
    b.channel = b.make()
    a.channel.send(BOB.peer_id, inner(CHAT, b"after"))
    b.channel.send(ALICE.peer_id, inner(CHAT, b"reply"))
    pump(a, b)
    assert b.got == [b"before", b"after"] and a.got == [b"reply"]
    assert not any(isinstance(f, m.OlmKeyRequest) for f in a.conn.sent)


def test_pickles_in_the_store_need_the_identity(ends: tuple[End, End]) -> None:
    a, _b = ends
    a.channel.send(BOB.peer_id, inner(CHAT, b"x"))
    ((_sid, pickle),) = a.store.olm_sessions(BOB.peer_id)
    with pytest.raises(ratchet.RatchetError):
        ratchet.OlmSession.from_pickle(pickle, ratchet.pickle_key(bytes(BOB.signing_key)))
    ratchet.OlmSession.from_pickle(pickle, ratchet.pickle_key(bytes(ALICE.signing_key)))


def test_a_peer_that_lost_its_state_gets_a_new_session_and_asks_for_resends(
    ends: tuple[End, End], tmp_path: Path
) -> None:
    a, b = ends
    a.channel.send(BOB.peer_id, inner(CHAT, b"one"))
    pump(a, b)
    # Bob loses its Olm state (a reinstall keeping the identity) on a live connection.
    b.store.close()
    b.store = Store(tmp_path / "b2.db")
    b.channel = b.make()
    a.sessions.clear()
    b.sessions.clear()
    a.channel.send(BOB.peer_id, inner(CHAT, b"lost"))
    pump(a, b)
    assert b.got == [b"one"]  # refused: no session of ours decrypts it
    # Both nodes learn of the new session, and re-sync the conversation (see History.resync).
    assert b.sessions == [ALICE.peer_id] and a.sessions == [BOB.peer_id]
    a.channel.send(BOB.peer_id, inner(CHAT, b"after repair"))
    b.channel.send(ALICE.peer_id, inner(CHAT, b"bob again"))
    pump(a, b)
    assert b.got == [b"one", b"after repair"] and a.got == [b"bob again"]


def test_wrap_for_an_offline_peer_uses_its_signed_fallback_key(tmp_path: Path) -> None:
    now = [0.0]
    a = End(ALICE, BOB, tmp_path / "a.db", now)
    b = End(BOB, ALICE, tmp_path / "b.db", now)
    assert a.channel.learn_keys(BOB.peer_id, b.channel.published_keys())
    assert b.channel.learn_keys(ALICE.peer_id, a.channel.published_keys())
    mail = a.channel.wrap(BOB.peer_id, b"mail")
    assert b.channel.unwrap(ALICE.peer_id, mail) == b"mail"
    assert not a.channel.learn_keys(ALICE.peer_id, b.channel.published_keys())


def _first_mail(author: Identity, reader: End, fallback: bytes, path: Path) -> bytes:
    """A first message from author to reader, started from reader's fallback key."""
    end = End(author, reader.identity, path, reader.now)
    ident = reader.channel.account.identity_key
    sig = ratchet.sign_keys(reader.identity, ident, fallback)
    assert end.channel.learn_keys(reader.identity.peer_id, m.OlmKeys(ident, fallback, sig))
    assert reader.channel.learn_keys(author.peer_id, end.channel.published_keys())
    return end.channel.wrap(reader.identity.peer_id, b"from " + author.peer_id[:4].encode())


def test_a_fallback_key_opens_any_number_of_sessions_and_rotates_on_a_timer(
    tmp_path: Path,
) -> None:
    """Finding 3: using the fallback key must not rotate it (mail from a third author was lost,
    and any peer could make two starts to break mail on its way); a timer rotates it."""
    now = [1000.0]
    b = End(BOB, ALICE, tmp_path / "b.db", now)
    fallback = b.channel.published_keys().fb
    authors = [Identity.generate() for _ in range(5)]
    mails = [_first_mail(x, b, fallback, tmp_path / f"{i}.db") for i, x in enumerate(authors)]
    for x, mail in zip(authors, mails, strict=True):
        assert b.channel.unwrap(x.peer_id, mail) == b"from " + x.peer_id[:4].encode()
    assert b.channel.published_keys().fb == fallback  # used, not rotated
    # Past the period, a used fallback key is replaced; it still opens mail on its way ...
    now[0] += limits.OLM_FALLBACK_ROTATE_S
    late = _first_mail(CAROL, b, fallback, tmp_path / "c.db")
    second = b.channel.published_keys().fb
    assert second != fallback
    b.channel = b.make()  # (and the rotation survives a restart)
    assert b.channel.published_keys().fb == second
    assert b.channel.unwrap(CAROL.peer_id, late).startswith(b"from ")
    # ... not sooner than a period later is it gone: a thief of the account cannot redo
    # a session started from it (forward secrecy within two periods).
    now[0] += limits.OLM_FALLBACK_ROTATE_S - 1
    b.channel.published_keys()
    assert b.channel.published_keys().fb == second
    too_late = _first_mail(MALLORY, b, fallback, tmp_path / "m.db")
    now[0] += 1
    b.channel.published_keys()
    assert b.channel.published_keys().fb not in (fallback, second)
    with pytest.raises(BadCiphertext):
        b.channel.unwrap(MALLORY.peer_id, too_late)


def test_a_used_fallback_key_is_gone_two_periods_on_without_further_use(
    tmp_path: Path,
) -> None:
    now = [0.0]
    b = End(BOB, ALICE, tmp_path / "b.db", now)
    fallback = b.channel.published_keys().fb
    first = _first_mail(ALICE, b, fallback, tmp_path / "a.db")
    recorded = _first_mail(CAROL, b, fallback, tmp_path / "c.db")  # a thief redoes this
    assert b.channel.unwrap(ALICE.peer_id, first).startswith(b"from ")
    now[0] += limits.OLM_FALLBACK_ROTATE_S
    second = b.channel.published_keys().fb
    now[0] += limits.OLM_FALLBACK_ROTATE_S  # the new key was never used: the old one goes
    assert b.channel.published_keys().fb not in (fallback, second)
    with pytest.raises(BadCiphertext):
        b.channel.unwrap(CAROL.peer_id, recorded)


def test_an_unused_fallback_key_is_not_rotated(tmp_path: Path) -> None:
    now = [0.0]
    b = End(BOB, ALICE, tmp_path / "b.db", now)
    fallback = b.channel.published_keys().fb
    now[0] += 10 * limits.OLM_FALLBACK_ROTATE_S
    assert b.channel.published_keys().fb == fallback  # a stale copy of it still works


def test_a_peer_cannot_make_new_sessions_in_a_loop(ends: tuple[End, End]) -> None:
    """Finding 3: each new inbound session costs a write and a re-sync of the conversation:
    at most one per OLM_INBOUND_SESSION_INTERVAL_S per peer, and a re-sync only when a new
    session replaces one we had."""
    a, b = ends
    a.channel.send(BOB.peer_id, inner(CHAT, b"first"))
    pump(a, b)
    assert b.got == [b"first"] and b.sessions == []  # a first session replaces nothing
    a.now[0] += limits.OLM_INBOUND_SESSION_INTERVAL_S
    floods = [
        a.channel._wrap(BOB.peer_id, inner(CHAT, b"new %d" % i), fresh=True) for i in range(5)
    ]
    for d in floods:
        b.channel.frame(b.conn, m.PrivateMessage(d=d))
    assert b.got == [b"first", b"new 0"]
    assert b.sessions == [ALICE.peer_id]
    a.now[0] += limits.OLM_INBOUND_SESSION_INTERVAL_S
    b.channel.frame(b.conn, m.PrivateMessage(d=floods[-1]))
    assert b.got == [b"first", b"new 0", b"new 4"]
    assert b.conn.closed is None


def test_an_inner_frame_too_large_for_a_pm_is_not_sent(ends: tuple[End, End]) -> None:
    a, _b = ends
    a.conn.sent.clear()
    with pytest.raises(TooLarge):
        a.channel.wrap(BOB.peer_id, b"x" * (limits.PM_MAX_INNER_BYTES + 1))
    a.channel.send(BOB.peer_id, b"x" * (limits.PM_MAX_INNER_BYTES + 1))
    assert a.conn.sent == []
    biggest = a.channel.wrap(BOB.peer_id, inner(CHAT, b"x" * (limits.PM_MAX_INNER_BYTES - 32)))
    m.decode_frame(m.encode(m.PrivateMessage(d=biggest)))  # the receiver takes it


def test_a_flood_of_keys_frames_is_dropped_beyond_the_bound(ends: tuple[End, End]) -> None:
    a, b = ends
    keys = b.channel.published_keys()
    assert b.channel.published_keys() is keys  # signed once
    writes: list[str] = []
    save = a.store.save_olm_peer

    def counted(peer_id: str, *rest: Any) -> None:
        writes.append(peer_id)
        save(peer_id, *rest)

    a.store.save_olm_peer = counted  # type: ignore[method-assign,assignment]
    for _ in range(3 * limits.OLM_KEYS_PER_PEER_PER_MIN):
        a.channel.frame(a.conn, keys)
    assert len(writes) == limits.OLM_KEYS_PER_PEER_PER_MIN - 2  # two at the meeting
    a.now[0] += 61
    a.channel.frame(a.conn, keys)
    assert len(writes) == limits.OLM_KEYS_PER_PEER_PER_MIN - 1
    assert a.conn.closed is None


def test_store_errors_in_the_key_handlers_are_logged_not_raised(
    ends: tuple[End, End], caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 8: a failing store (ours) must not escape into the connection callback."""
    a, b = ends

    def broken(*_args: Any) -> None:
        raise StoreError("disk full")

    a.store.save_olm_peer = broken  # type: ignore[method-assign,assignment]
    a.store.save_olm = broken  # type: ignore[method-assign,assignment]
    a.conn.sent.clear()
    caplog.set_level(logging.ERROR, "chinwag.private")
    a.channel.frame(a.conn, b.channel.published_keys())  # learn_keys -> save_olm_peer
    a.channel.frame(a.conn, m.OlmKeyRequest())  # _answer -> _save_account
    (answer,) = a.conn.sent
    # A one-time key we could not save would be gone after a restart: none is handed out.
    assert isinstance(answer, m.OlmKeys) and answer.re and not answer.otk
    assert a.conn.closed is None
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2


def _keys_of(who: Identity) -> m.OlmKeys:
    account = ratchet.OlmAccount.create()
    ident, fb = account.identity_key, account.fallback_key
    return m.OlmKeys(ident=ident, fb=fb, sig=ratchet.sign_keys(who, ident, fb))


def test_strangers_keys_never_push_out_a_real_contacts_olm_state(
    ends: tuple[End, End], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 4: throwaway peers sending `okeys` must not evict a conversation's ratchet."""
    a, b = ends
    a.channel.send(BOB.peer_id, inner(CHAT, b"hi bob"))
    pump(a, b)
    monkeypatch.setattr(limits, "OLM_MAX_PEERS", 8)
    monkeypatch.setattr(limits, "OLM_MAX_STRANGER_KEYS", 4)
    b.store.join_room("dm-wire", "@alice", "dm", None, ALICE.peer_id)  # a conversation
    b.store.set_verified(CAROL.peer_id, "carol")  # verified, no session yet
    assert b.channel.learn_keys(CAROL.peer_id, _keys_of(CAROL))
    dave = Identity.generate()  # a room member: a session, no conversation
    assert b.channel.learn_keys(dave.peer_id, _keys_of(dave))
    b.store.save_olm(None, dave.peer_id, [("sid", "pickle")], [], 1.0)
    strangers = [Identity.generate() for _ in range(20)]
    for s in strangers:
        assert b.channel.learn_keys(s.peer_id, _keys_of(s))
    for kept in (ALICE.peer_id, CAROL.peer_id, dave.peer_id):
        assert b.store.olm_peer(kept) is not None, kept
    assert b.store.olm_sessions(ALICE.peer_id) and b.store.olm_sessions(dave.peer_id)
    held = [s for s in strangers if b.store.olm_peer(s.peer_id) is not None]
    assert held == strangers[-4:]  # their own quota, the most recent kept
    # Alice's next message still opens (a fresh channel: nothing cached in memory).
    b.channel = b.make()
    a.channel.send(BOB.peer_id, inner(CHAT, b"still there"))
    pump(a, b)
    assert b.got == [b"hi bob", b"still there"]
    # Beyond OLM_MAX_PEERS, peers with sessions but nothing else go, least recent first;
    # a conversation's and a verified peer's state never does.
    for s in strangers[:10]:
        b.channel.learn_keys(s.peer_id, _keys_of(s))
        b.store.save_olm(None, s.peer_id, [("sid", "pickle")], [], 2.0)
    for kept in (ALICE.peer_id, CAROL.peer_id):
        assert b.store.olm_peer(kept) is not None, kept
    assert b.store.olm_peer(dave.peer_id) is None and not b.store.olm_sessions(dave.peer_id)
    (count,) = b.store.db.execute("SELECT COUNT(*) FROM olm_peers").fetchone()
    assert count == 2 + 8


def test_throwaway_peers_using_up_the_one_time_keys_do_not_starve_a_conversation(
    ends: tuple[End, End],
) -> None:
    """Finding 3: strangers' okreq floods exhaust OLM_OTK_PER_MIN; a peer we have a
    conversation with (or a verified peer, a contact) still gets a one-time key."""
    a, _b = ends
    a.store.join_room("dm-wire", "@bob", "dm", None, BOB.peer_id)
    for _ in range(limits.OLM_OTK_PER_MIN // limits.OLM_OTK_PER_PEER_PER_MIN):
        conn = FakeConn(Identity.generate().peer_id)
        for _ in range(limits.OLM_OTK_PER_PEER_PER_MIN):
            a.channel.frame(conn, m.OlmKeyRequest())  # type: ignore[arg-type]
    stranger = FakeConn(CAROL.peer_id)
    a.channel.frame(stranger, m.OlmKeyRequest())  # type: ignore[arg-type]
    assert [k.otk for k in stranger.sent if isinstance(k, m.OlmKeys)] == [b""]
    a.conn.sent.clear()
    a.channel.frame(a.conn, m.OlmKeyRequest())
    (answer,) = a.conn.sent
    assert isinstance(answer, m.OlmKeys) and answer.otk


# --- keys from presence records and mail (prekeys: docs/protocol.md 26.1, 26.6) -----------


def _published(keys: m.OlmKeys) -> m.PublishedKeys:
    return m.PublishedKeys(ident=keys.ident, fb=keys.fb, sig=keys.sig)


def test_keys_from_a_record_start_a_session_from_the_fallback_key(tmp_path: Path) -> None:
    now = [5000.0]
    a = End(ALICE, BOB, tmp_path / "a.db", now)
    b = End(BOB, ALICE, tmp_path / "b.db", now)
    assert a.channel.learn_published(BOB.peer_id, b.channel.presence_keys(), 4990.0)
    assert b.channel.learn_published(ALICE.peer_id, a.channel.presence_keys(), 4990.0)
    mail = a.channel.wrap(BOB.peer_id, b"first")
    assert ratchet.unpad(mail).kind == ratchet.PRE_KEY
    assert b.channel.unwrap(ALICE.peer_id, mail) == b"first"


def test_badly_signed_keys_in_a_record_are_ignored_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [5000.0]
    a = End(ALICE, BOB, tmp_path / "a.db", now)
    good = _published(_keys_of(BOB))
    bad = m.PublishedKeys(ident=good.ident, fb=good.fb, sig=_keys_of(MALLORY).sig)
    with caplog.at_level(logging.WARNING):
        assert not a.channel.learn_published(BOB.peer_id, bad, 4990.0)
        assert not a.channel.learn_published(BOB.peer_id, bad, 4991.0)
    assert a.store.olm_peer(BOB.peer_id) is None
    assert len([r for r in caplog.records if "did not sign" in r.getMessage()]) == 1


def test_keys_from_a_connection_are_not_replaced_by_an_older_record(
    ends: tuple[End, End],
) -> None:
    a, b = ends
    direct = a.store.olm_peer(BOB.peer_id)
    assert direct is not None
    learned = a.store.olm_peer_learned(BOB.peer_id)
    assert learned is not None
    # A record Bob signed before we met, with keys of another account of his.
    older = _published(_keys_of(BOB))
    assert not a.channel.learn_published(BOB.peer_id, older, learned - 60)
    assert a.store.olm_peer(BOB.peer_id) == direct
    # The same keys again (every refresh of a record): nothing to do, nothing lost.
    same = b.channel.presence_keys()
    assert a.channel.learn_published(BOB.peer_id, same, learned - 60)
    assert a.store.olm_peer(BOB.peer_id) == direct
    # A record signed after we met (Bob's new fallback key, say) wins, once the connection
    # is gone and a record's lifetime passed (before, the clocks compared are two).
    assert not a.channel.learn_published(BOB.peer_id, older, learned + 60)
    a.conn.close(Reason.QUIT)
    a.now[0] += limits.PRESENCE_TTL_S - 1
    assert not a.channel.learn_published(BOB.peer_id, older, learned + 60)
    a.now[0] += 1
    assert a.channel.learn_published(BOB.peer_id, older, learned + 60)
    held = a.store.olm_peer(BOB.peer_id)
    assert held is not None and held[:3] == (older.ident, older.fb, older.sig)


def test_a_rotated_fallback_key_is_announced(tmp_path: Path) -> None:
    now = [0.0]
    a = End(ALICE, BOB, tmp_path / "a.db", now)
    rotated: list[bytes] = []
    a.channel.on_rotate = lambda: rotated.append(a.channel.presence_keys().fb)
    a.channel._fallback.used = True  # a peer started a session from it
    before = a.channel.presence_keys().fb
    now[0] = limits.OLM_FALLBACK_ROTATE_S + 1.0
    after = a.channel.presence_keys().fb
    assert after != before and rotated == [after]


def _stale_fallback(tmp_path: Path) -> tuple[End, End, list[float]]:
    """Alice holds bob's keys from an old record; carol used bob's fallback key; two
    rotation periods pass (bob's key from that record is gone)."""
    now = [1000.0]
    b = End(BOB, ALICE, tmp_path / "b.db", now)
    a = End(ALICE, BOB, tmp_path / "a.db", now)
    assert a.channel.learn_published(BOB.peer_id, b.channel.presence_keys(), 999.0)
    assert b.channel.learn_published(ALICE.peer_id, a.channel.presence_keys(), 999.0)
    fb1 = b.channel.published_keys().fb
    first = _first_mail(CAROL, b, fb1, tmp_path / "c.db")
    assert b.channel.unwrap(CAROL.peer_id, first).startswith(b"from")
    for _ in range(2):
        now[0] += limits.OLM_FALLBACK_ROTATE_S
        b.channel.published_keys()
    assert b.channel.published_keys().fb != fb1
    return a, b, now


def test_keys_from_an_old_record_never_start_a_session_that_cannot_open(tmp_path: Path) -> None:
    """Finding 2 of the second review: mail started from a fallback key signed longer ago
    than it is sure to live was lost (refused at the reader); it is sealed only instead."""
    a, _b, _now = _stale_fallback(tmp_path)
    with pytest.raises(NoKeys):
        a.channel.wrap(BOB.peer_id, b"mail")
    assert not a.channel.has_session(BOB.peer_id)


def test_a_pre_key_session_from_an_old_fallback_key_is_not_kept(tmp_path: Path) -> None:
    """Finding 2: a session that never had a reply, started from a fallback key since
    rotated away, was used for every later mail (all lost); a newer record mends it."""
    a, b, now = _stale_fallback(tmp_path)
    a.conn.close(Reason.QUIT)  # they never meet: only records and mail
    # alice started the session while the key still looked fresh (its record was recent)
    a.channel.store.save_olm_peer(BOB.peer_id, *a.channel.store.olm_peer(BOB.peer_id), now[0])
    lost = a.channel.wrap(BOB.peer_id, b"lost")
    with pytest.raises(BadCiphertext):
        b.channel.unwrap(ALICE.peer_id, lost)
    # bob's next record (his current fallback key) replaces the dead session
    now[0] += 60
    assert a.channel.learn_published(BOB.peer_id, b.channel.presence_keys(), now[0])
    assert b.channel.unwrap(ALICE.peer_id, a.channel.wrap(BOB.peer_id, b"next")) == b"next"
    # without a newer record, the old session is no longer used once the key is old
    now[0] += limits.OLM_FALLBACK_ROTATE_S
    with pytest.raises(NoKeys):
        a.channel.wrap(BOB.peer_id, b"later")


def _sybil_record(i: int) -> tuple[str, m.PublishedKeys]:
    x = Identity.generate()
    ident, fb = bytes(32), bytes([i + 1]) * 32
    return x.peer_id, m.PublishedKeys(ident=ident, fb=fb, sig=ratchet.sign_keys(x, ident, fb))


def test_records_of_throwaway_identities_do_not_evict_a_far_peer_s_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 3 of the second review: a burst of fresh records pushed out the keys of a far
    peer that kept publishing the same keys (it looked oldest: never seen again)."""
    monkeypatch.setattr(limits, "OLM_MAX_STRANGER_KEYS", 8)
    monkeypatch.setattr(limits, "OLM_RECORD_NEW_KEYS_PER_MIN", 4)
    now = [100000.0]
    a = End(ALICE, BOB, tmp_path / "a.db", now)
    b = End(BOB, ALICE, tmp_path / "b.db", now)
    assert a.channel.learn_published(BOB.peer_id, b.channel.presence_keys(), now[0])
    learned = 0
    for burst in range(4):
        for _ in range(5):  # bob's record, refreshed: same keys
            now[0] += 200
            assert a.channel.learn_published(BOB.peer_id, b.channel.presence_keys(), now[0])
        for i in range(8):  # a burst of throwaway identities' records
            peer, keys = _sybil_record(burst * 8 + i)
            learned += a.channel.learn_published(peer, keys, now[0])
        assert a.store.olm_peer(BOB.peer_id) is not None, burst
    assert learned == 4 * 4
    a.channel.wrap(BOB.peer_id, b"still there")


def test_a_record_never_overrides_keys_a_live_connection_brought(ends: tuple[End, End]) -> None:
    """Finding 4 of the second review: which keys are newer compared our clock (a
    connection's) with the author's (a record's): an old record of a reinstalled peer, its
    author's clock ahead, dropped the sessions of the live connection."""
    a, b = ends
    a.channel.send(BOB.peer_id, inner(CHAT, b"hi bob"))
    pump(a, b)
    assert b.got == [b"hi bob"] and a.channel.has_session(BOB.peer_id)
    old_ident = ratchet.OlmAccount.create().identity_key  # bob's account before a reinstall
    fb = bytes(32)
    old = m.PublishedKeys(ident=old_ident, fb=fb, sig=ratchet.sign_keys(BOB, old_ident, fb))
    ahead = time.time() + limits.PRESENCE_MAX_SKEW_S - 10  # bob's clock a little ahead
    assert not a.channel.learn_published(BOB.peer_id, old, ahead)
    assert a.channel.has_session(BOB.peer_id)
    a.channel.send(BOB.peer_id, inner(CHAT, b"still"))
    pump(a, b)
    assert b.got == [b"hi bob", b"still"]


def test_a_live_pm_goes_in_an_unanswered_session_however_old_the_keys(
    ends: tuple[End, End],
) -> None:
    """The stale-key rule (finding 2) is for mail: over a connection a refusal repairs."""
    a, b = ends
    a.channel.send(BOB.peer_id, inner(CHAT, b"one"))
    pump(a, b)
    keys = a.store.olm_peer(BOB.peer_id)
    assert keys is not None
    a.store.save_olm_peer(BOB.peer_id, *keys, a.now[0] - 2 * limits.OLM_FALLBACK_ROTATE_S)
    a.channel.send(BOB.peer_id, inner(CHAT, b"two"))
    pump(a, b)
    assert b.got == [b"one", b"two"]


def test_a_fallback_key_republished_stays_fresh_for_mail(tmp_path: Path) -> None:
    """The stale-key rule (finding 2) counts from the latest record with the same keys: an
    unused fallback key is never replaced, and its author's records keep vouching for it."""
    now = [1000.0]
    a = End(ALICE, BOB, tmp_path / "a.db", now)
    b = End(BOB, ALICE, tmp_path / "b.db", now)
    a.conn.close(Reason.QUIT)
    for _ in range(int(2 * limits.OLM_FALLBACK_ROTATE_S // limits.PRESENCE_REFRESH_S)):
        assert a.channel.learn_published(BOB.peer_id, b.channel.presence_keys(), now[0])
        now[0] += limits.PRESENCE_REFRESH_S
    assert b.channel.learn_published(ALICE.peer_id, a.channel.presence_keys(), now[0])
    assert b.channel.unwrap(ALICE.peer_id, a.channel.wrap(BOB.peer_id, b"mail")) == b"mail"

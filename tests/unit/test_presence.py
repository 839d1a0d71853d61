"""The presence book (protocol/presence.py): signatures, replays, expiry, leaves, bounds, floods."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chinwag import limits
from chinwag.crypto.identity import Identity
from chinwag.errors import RemoteProtocolError
from chinwag.protocol import messages as m
from chinwag.protocol import presence as pr
from chinwag.protocol.presence import PresenceBook, make_record, open_record, verify_record
from chinwag.protocol.reasons import Reason

NOW = 1_800_000_000.0
TTL = limits.PRESENCE_TTL_S
ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)
ME = Identity.from_seed(b"m" * 32)
RELAY = "r" * 51 + "a"  # a peer id string (the book does not check the sender's)


def rec(
    who: Identity,
    t: float = NOW,
    *,
    gone: bool = False,
    rooms: tuple[tuple[str, bytes], ...] = (("general", b""),),
    nick: str = "n",
    expires: int | None = None,
    addrs: tuple[str, ...] = ("10.0.0.1:47475",),
) -> pr.PresenceRecord:
    seq = int(t * 1000)
    return make_record(
        who, nick, seq, seq // 1000 + TTL if expires is None else expires, gone, rooms, addrs
    )


def frame(*records: pr.PresenceRecord) -> m.Presence:
    return m.Presence(recs=[r.signed for r in records])


def forwards(actions: list[pr.Action]) -> list[pr.Forward]:
    return [a for a in actions if isinstance(a, pr.Forward)]


def disconnects(actions: list[pr.Action]) -> list[str]:
    return [a.reason for a in actions if isinstance(a, pr.Disconnect)]


# --- records ------------------------------------------------------------------------------


def test_a_record_round_trips_and_verifies() -> None:
    r = rec(ALICE, rooms=(("general", b""), ("p.abc", b"k" * 16)))
    wire = m.decode_frame(m.encode(frame(r)))
    assert isinstance(wire, m.Presence)
    back = open_record(wire.recs[0])
    assert back == r and verify_record(back)
    assert back.author == ALICE.peer_id and back.in_room("p.abc", b"k" * 16)
    assert not back.in_room("p.abc", b"x" * 16)


def test_an_altered_record_does_not_verify() -> None:
    r = rec(ALICE)
    body = m.decode_presence(r.signed.body)
    forged_body = m.encode(
        m.PresenceBody(
            author=body.author,
            nick="mallory",
            seq=body.seq,
            expires=body.expires,
            gone=False,
            rooms=body.rooms,
            addrs=body.addrs,
        )
    )
    forged = open_record(m.SignedPresence(body=forged_body, sig=r.signed.sig))
    assert not verify_record(forged)


@pytest.mark.parametrize(
    "make",
    [
        lambda: rec(ALICE, expires=int(NOW) + TTL + 1),  # beyond seq + TTL
        lambda: rec(ALICE, nick="bad nick"),
        lambda: rec(ALICE, rooms=(("General", b""),)),
        lambda: rec(ALICE, addrs=("nohost",)),
        lambda: rec(ALICE, addrs=("h:99999",)),
    ],
)
def test_malformed_records_close_the_connection(make: object) -> None:
    r = make()  # type: ignore[operator]
    with pytest.raises(RemoteProtocolError):
        open_record(r.signed)
    book = PresenceBook(ME)
    assert disconnects(book.received(RELAY, frame(r), NOW)) == [Reason.MALFORMED_FRAME]
    assert len(book) == 0


def test_a_frame_holds_a_bounded_number_of_records() -> None:
    r = rec(ALICE).signed
    too_many = m.encode({"t": "pres", "recs": [r] * (limits.PRESENCE_PER_FRAME + 1)})
    with pytest.raises(RemoteProtocolError):
        m.decode_frame(too_many)
    assert pr.frames([rec(ALICE)] * 25) and all(
        len(f.recs) <= limits.PRESENCE_PER_FRAME for f in pr.frames([rec(ALICE)] * 25)
    )


# --- the book -----------------------------------------------------------------------------


def test_a_new_record_is_held_forwarded_to_the_others_and_reported() -> None:
    book = PresenceBook(ME)
    r = rec(ALICE)
    out = book.received(RELAY, frame(r), NOW)
    assert forwards(out) == [pr.Forward(r, frozenset({RELAY}))]
    assert pr.Changed(frozenset({ALICE.peer_id})) in out
    assert book.get(ALICE.peer_id) == r and book.members("general") == [r]
    # The same record again (from anyone): dropped, not forwarded (dedup by author, seq).
    assert book.received("other", frame(r), NOW + 1) == []


def test_a_forged_record_cuts_the_sender_and_is_not_held() -> None:
    book = PresenceBook(ME)
    good = rec(ALICE)
    forged = m.SignedPresence(body=good.signed.body, sig=bytes(64))
    out = book.received(RELAY, m.Presence(recs=[forged]), NOW)
    assert disconnects(out) == [Reason.BAD_SIGNATURE] and not forwards(out)
    assert book.get(ALICE.peer_id) is None


def test_newest_wins_and_an_old_record_replayed_is_dropped() -> None:
    book = PresenceBook(ME)
    old, new = rec(ALICE, NOW, nick="old"), rec(ALICE, NOW + 10, nick="new")
    book.received(RELAY, frame(old), NOW)
    assert forwards(book.received(RELAY, frame(new), NOW + 10))
    assert book.received(RELAY, frame(old), NOW + 11) == []
    held = book.get(ALICE.peer_id)
    assert held is not None and held.nick == "new"


def test_a_replay_cannot_bring_back_a_peer_that_left() -> None:
    book = PresenceBook(ME)
    alive, gone = rec(ALICE, NOW), rec(ALICE, NOW + 5, gone=True)
    book.received(RELAY, frame(alive), NOW)
    assert forwards(book.received(RELAY, frame(gone), NOW + 5))
    held = book.get(ALICE.peer_id)
    assert held is not None and not held.fresh(NOW + 6)
    # The captured record, replayed at any time while it is still valid:
    for t in (NOW + 6, NOW + TTL - 1):
        assert book.received(RELAY, frame(alive), t) == []
        held = book.get(ALICE.peer_id)
        assert held is not None and held.gone
    # The leave is held until it lapses; by then every older record lapsed too.
    assert book.handle_timer(NOW + 5 + TTL) == [pr.Changed(frozenset({ALICE.peer_id}))]
    assert book.received(RELAY, frame(alive), NOW + 5 + TTL) == []
    assert book.get(ALICE.peer_id) is None


def test_expired_and_far_future_records_are_dropped() -> None:
    book = PresenceBook(ME)
    assert book.received(RELAY, frame(rec(ALICE, NOW - TTL - 1)), NOW) == []
    far = rec(BOB, NOW + TTL + limits.PRESENCE_MAX_SKEW_S + 10)
    assert book.received(RELAY, frame(far), NOW) == []
    assert len(book) == 0


def test_records_lapse_on_the_timer() -> None:
    book = PresenceBook(ME)
    book.received(RELAY, frame(rec(ALICE, NOW), rec(BOB, NOW + 100)), NOW + 100)
    assert book.get_timer() == NOW + TTL
    assert book.handle_timer(NOW + TTL) == [pr.Changed(frozenset({ALICE.peer_id}))]
    assert book.get(ALICE.peer_id) is None and book.get(BOB.peer_id) is not None
    assert book.get_timer() == NOW + 100 + TTL


def test_our_record_is_signed_refreshed_and_its_seq_only_grows() -> None:
    book = PresenceBook(ME, last_seq=int(NOW * 1000) + 5_000)  # an earlier run, clock ahead
    out = book.set_own("me", [("general", b"")], ["10.0.0.9:1"], NOW)
    own = book.own
    assert own is not None and verify_record(own) and own.seq == int(NOW * 1000) + 5_001
    assert out == [pr.SaveSeq(own.seq), pr.Forward(own)]
    # Its seq is ahead of our clock: the expiry follows our clock (peers would drop it).
    assert own.expires == int(NOW) + TTL
    # Unchanged: nothing. Changed within the gap: signed at the end of the gap.
    assert book.set_own("me", [("general", b"")], ["10.0.0.9:1"], NOW + 1) == []
    assert book.set_own("me2", [("general", b"")], ["10.0.0.9:1"], NOW + 1) == []
    due = book.get_timer()
    assert due is not None and due == NOW + limits.PRESENCE_OWN_MIN_GAP_S
    later = book.handle_timer(due)
    assert book.own is not None and book.own.nick == "me2" and forwards(later)
    # Refreshed before it lapses.
    refresh_at = due + limits.PRESENCE_REFRESH_S
    assert book.get_timer() == refresh_at
    assert forwards(book.handle_timer(refresh_at))
    assert book.own.seq > own.seq and book.own.expires > own.expires


def test_our_leave_is_signed_at_once_and_nothing_after_it() -> None:
    book = PresenceBook(ME)
    book.set_own("me", [("general", b"")], ["10.0.0.9:1"], NOW)
    out = book.leave(NOW + 0.1)
    own = book.own
    assert own is not None and own.gone and own.addrs == () and forwards(out)
    assert own.expires == own.seq // 1000 + TTL  # our clock is not behind: the full TTL
    assert book.set_own("me", [("dev", b"")], [], NOW + 10) == []
    assert book.get_timer() is None


def test_a_newer_record_of_ours_from_elsewhere_makes_us_sign_above_it() -> None:
    book = PresenceBook(ME)
    book.set_own("me", [("general", b"")], [], NOW)
    stray = rec(ME, NOW + 50)
    assert book.received(RELAY, frame(stray), NOW + 1) == []
    out = book.handle_timer(NOW + 1)
    assert book.own is not None and book.own.seq > stray.seq and forwards(out)


def test_an_author_cannot_make_relays_flood_but_its_leave_passes() -> None:
    book = PresenceBook(ME)
    burst = int(limits.PRESENCE_AUTHOR_BURST)
    taken = 0
    for i in range(burst + 5):
        taken += len(forwards(book.received(RELAY, frame(rec(ALICE, NOW + i / 100)), NOW)))
    assert taken == burst
    assert forwards(book.received(RELAY, frame(rec(ALICE, NOW + 1, gone=True)), NOW))
    # A second leave is rate-limited like any record.
    assert book.received(RELAY, frame(rec(ALICE, NOW + 2, gone=True)), NOW) == []


def test_a_peer_flooding_records_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "PRESENCE_PEER_BURST", 3.0)
    book = PresenceBook(ME)
    out = book.received(RELAY, frame(rec(ALICE), rec(BOB), rec(CAROL)), NOW)
    assert len(forwards(out)) == 3 and not disconnects(out)
    out = book.received(RELAY, frame(rec(ALICE, NOW + 1)), NOW)
    assert disconnects(out) == [Reason.PRESENCE_FLOOD] and not forwards(out)
    # Another peer keeps its own budget; the flooder's is forgotten when it goes.
    book.peer_closed(RELAY)
    assert not disconnects(book.received("other", frame(rec(ALICE, NOW + 2)), NOW))


def test_a_full_room_keeps_its_members_against_strangers() -> None:
    ids = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 6)]
    keep = {ids[3].peer_id}
    book = PresenceBook(ME, keep=lambda p: p in keep, max_records=10, max_per_room=2)
    for who in ids[:2]:
        assert forwards(book.received(RELAY, frame(rec(who)), NOW))
    # A stranger relayed to us: the room is full.
    assert book.received(RELAY, frame(rec(ids[2])), NOW) == []
    # A peer we know (or one sending its own record) takes a stranger's place.
    assert forwards(book.received(RELAY, frame(rec(ids[3])), NOW))
    assert forwards(book.received(ids[4].peer_id, frame(rec(ids[4])), NOW))
    assert book.room_count("general") == 2
    assert {r.author for r in book.members("general")} == {ids[3].peer_id, ids[4].peer_id}
    # Another room is not full.
    assert forwards(book.received(RELAY, frame(rec(ids[2], rooms=(("dev", b""),))), NOW))


def test_the_total_bound_holds() -> None:
    ids = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 5)]
    book = PresenceBook(ME, max_records=3, max_per_room=100)
    for i, who in enumerate(ids):
        book.received(RELAY, frame(rec(who, rooms=((f"r{i}", b""),))), NOW)
    assert len(book) == 3


def test_authors_never_held_leave_no_rate_state_behind() -> None:
    """Records turned away (a full book) must not grow the per-author rate table: throwaway
    identities would make it grow for ever."""
    ids = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 40)]
    book = PresenceBook(ME, max_records=3, max_per_room=100)
    for i, who in enumerate(ids):
        book.received(RELAY, frame(rec(who, rooms=((f"r{i}", b""),))), NOW)
    assert len(book) == 3
    assert len(book._author_budget) == 3


def test_the_batch_for_a_peer_holds_the_rooms_it_shares() -> None:
    book = PresenceBook(ME)
    kcv = b"k" * 16
    a = rec(ALICE, rooms=(("general", b""),))
    b = rec(BOB, NOW + 1, rooms=(("p.x", kcv),))
    c = rec(CAROL, NOW + 2, rooms=(("dev", b""),))
    book.received(RELAY, frame(a, b, c), NOW + 2)
    assert book.batch_for({"general": b"", "p.x": kcv}, NOW + 3) == [b, a]
    assert book.batch_for({"p.x": b"other-kcv"}, NOW + 3) == []


# --- property: any sequence of records -----------------------------------------------------

_IDS = [Identity.from_seed(bytes([i + 10]) * 32) for i in range(4)]
_ROOMS = ["general", "dev", "ops"]

_record_st = st.builds(
    lambda who, dt, gone, rooms, exp: make_record(
        _IDS[who],
        "n",
        int((NOW + dt) * 1000),
        int(NOW + dt) + exp,
        gone,
        [(r, b"") for r in rooms],
        [],
    ),
    st.integers(0, len(_IDS) - 1),
    st.integers(-2 * TTL, 2 * TTL),
    st.booleans(),
    st.lists(st.sampled_from(_ROOMS), max_size=3, unique=True),
    st.integers(-10, TTL),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(_record_st, min_size=1, max_size=4),
            st.integers(0, 3 * TTL),
            st.sampled_from(["x", "y", _IDS[0].peer_id]),
        ),
        max_size=12,
    )
)
def test_any_sequence_of_records_keeps_the_bounds(
    steps: list[tuple[list[pr.PresenceRecord], int, str]],
) -> None:
    book = PresenceBook(ME, max_records=3, max_per_room=2)
    now = NOW - 2 * TTL
    for records, advance, peer in steps:
        now += advance
        book.handle_timer(now)
        before = {r.author: r.seq for r in book.records()}
        book.received(peer, frame(*records), now)
        assert len(book) <= 3
        assert all(book.room_count(r) <= 2 for r in _ROOMS)
        for held in book.records():
            # Never an older record in place of a held one, never a lapsed one.
            assert held.seq >= before.get(held.author, 0)
            assert held.expires > now
        timer = book.get_timer()
        assert timer is None or timer > now


# --- Olm keys in the record (prekeys: docs/protocol.md 23.1, 26.1) -----------------------

KEYS = m.PublishedKeys(ident=b"i" * 32, fb=b"f" * 32, sig=b"s" * 64)


class _LegacyBody(msgspec.Struct, frozen=True, array_like=True):
    """A presence body as nodes before the `okeys` field encode and decode it."""

    author: bytes
    nick: str
    seq: int
    expires: int
    gone: bool
    rooms: list[m.RoomAnnounce]
    addrs: list[str]


def test_a_record_with_olm_keys_round_trips_and_one_without_still_decodes() -> None:
    seq = int(NOW * 1000)
    r = make_record(ALICE, "n", seq, seq // 1000 + TTL, False, [("general", b"")], [], KEYS)
    wire = m.decode_frame(m.encode(frame(r)))
    assert isinstance(wire, m.Presence)
    back = open_record(wire.recs[0])
    assert back == r and back.okeys == KEYS and verify_record(back)
    assert open_record(rec(ALICE).signed).okeys is None
    # An older node's record (no field at all) decodes, and ours decodes on an older node.
    old = _LegacyBody(ALICE.public, "n", seq, seq // 1000 + TTL, False, [], [])
    raw = m.encode(old)
    signed = m.SignedPresence(body=raw, sig=ALICE.sign(m.PRESENCE_CONTEXT + raw))
    assert open_record(signed).okeys is None and verify_record(open_record(signed))
    legacy = msgspec.msgpack.decode(r.signed.body, type=_LegacyBody)
    assert legacy.nick == "n"


def test_the_largest_record_with_keys_stays_within_its_byte_bound() -> None:
    body = m.PresenceBody(
        author=ALICE.public,
        nick="n" * limits.MAX_NICK_CHARS,
        seq=2**64 - 1,
        expires=2**64 - 1,
        gone=False,
        rooms=[
            m.RoomAnnounce("r" * limits.MAX_ROOM_CHARS) for _ in range(limits.PRESENCE_MAX_ROOMS)
        ],
        addrs=["a" * limits.PRESENCE_MAX_ADDR_CHARS] * limits.PRESENCE_MAX_ADDRS,
        okeys=KEYS,
    )
    assert len(m.encode(body)) <= limits.PRESENCE_MAX_BYTES


def test_our_record_carries_our_keys_and_a_new_fallback_key_is_re_signed() -> None:
    book = PresenceBook(ME)
    book.set_own("me", [("general", b"")], [], NOW, KEYS)
    assert book.own is not None and book.own.okeys == KEYS
    assert book.set_keys(KEYS, NOW + 10) == []  # unchanged: nothing signed
    newer = m.PublishedKeys(ident=KEYS.ident, fb=b"g" * 32, sig=KEYS.sig)
    out = book.set_keys(newer, NOW + 10)
    assert forwards(out) and book.own.okeys == newer
    # A leave keeps them: peers that meet only our leave can still mail us in Olm.
    book.leave(NOW + 20)
    assert book.own.gone and book.own.okeys == newer


def test_our_record_with_long_non_ascii_room_names_still_fits_its_byte_bound() -> None:
    """32 rooms of 64 three-byte characters: over PRESENCE_MAX_BYTES (peers would cut us);
    the last rooms are left out, the keys stay."""
    book = PresenceBook(ME)
    rooms = [(f"{i:02d}" + "\u4e00" * 62, b"") for i in range(limits.PRESENCE_MAX_ROOMS)]
    book.set_own("me", rooms, ["10.0.0.9:1"], NOW, KEYS)
    own = book.own
    assert own is not None and len(own.signed.body) <= limits.PRESENCE_MAX_BYTES
    assert own.okeys == KEYS and 0 < len(own.rooms) < limits.PRESENCE_MAX_ROOMS
    wire = m.decode_frame(m.encode(frame(own)))
    assert isinstance(wire, m.Presence) and open_record(wire.recs[0]) == own

"""protocol/admit.py: members of a private room prove the passphrase to each other (SPAKE2).

Two Admission machines back to back, frames carried by hand; randomness and time injected.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chinwag import limits
from chinwag.crypto import box
from chinwag.protocol import admit as ad
from chinwag.protocol import messages as m
from chinwag.protocol.reasons import Reason

A = "a" * 52
B = "b" * 52
C = "c" * 52
ROOM = "p." + "1" * 24
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
HH = b"h" * 32
NOW = 1000.0


def ent(n: int) -> bytes:
    return bytes([n]) * 64


def carry(
    actions: list[ad.Action], to: ad.Admission, key: bytes | None, hh: bytes = HH, sender: str = ""
) -> list[ad.Action]:
    """Deliver the Send actions to `to` (from `sender`), return what `to` did."""
    out: list[ad.Action] = []
    for a in actions:
        if isinstance(a, ad.Send):
            out += to.received(sender, a.frame, key, hh, ent(9), NOW)
    return out


def run_pair(
    key_a: bytes, key_b: bytes, hh_a: bytes = HH, hh_b: bytes = HH
) -> tuple[ad.Admission, ad.Admission, list[ad.Action], list[ad.Action]]:
    """A starts; frames go back and forth until quiet; return both machines and all actions."""
    a, b = ad.Admission(A), ad.Admission(B)
    all_a = a.start(B, ROOM, key_a, hh_a, ent(1), NOW)
    all_b: list[ad.Action] = []
    pending_a, who = all_a, "a"
    for _ in range(6):
        if who == "a":
            got = carry(pending_a, b, key_b, hh_b, A)
            all_b += got
            pending_b, who = got, "b"
        else:
            got = carry(pending_b, a, key_a, hh_a, B)
            all_a += got
            pending_a, who = got, "a"
    return a, b, all_a, all_b


def kinds(actions: list[ad.Action]) -> list[str]:
    return [f"send{a.frame.step}" if isinstance(a, ad.Send) else type(a).__name__ for a in actions]


def test_same_key_admits_both_ways() -> None:
    a, b, all_a, all_b = run_pair(KEY, KEY)
    assert kinds(all_a) == ["send1", "send2", "Admitted"]
    assert kinds(all_b) == ["send1", "send2", "Admitted"]
    assert a.admitted(ROOM) == frozenset({B})
    assert b.admitted(ROOM) == frozenset({A})
    assert ad.Admitted(B, ROOM) in all_a and ad.Admitted(A, ROOM) in all_b


def test_frames_carry_no_key_check_value_and_are_bounded() -> None:
    _a, _b, all_a, all_b = run_pair(KEY, KEY)
    kcv = box.key_check(KEY)
    for x in all_a + all_b:
        if isinstance(x, ad.Send):
            assert len(x.frame.data) <= limits.ADMIT_MAX_DATA_BYTES
            assert x.frame.room == ROOM
            assert kcv not in x.frame.data and KEY not in x.frame.data


def test_wrong_key_refused_both_sides() -> None:
    a, b, all_a, all_b = run_pair(KEY, OTHER_KEY)
    assert kinds(all_a) == ["send1", "send2", "Refused"]
    assert kinds(all_b) == ["send1", "send2", "Refused"]
    assert a.admitted(ROOM) == frozenset() and b.admitted(ROOM) == frozenset()


def test_other_channel_binding_refused() -> None:
    """A proof relayed from another connection (another handshake hash) does not admit."""
    a, b, all_a, all_b = run_pair(KEY, KEY, hh_a=HH, hh_b=b"x" * 32)
    assert "Admitted" not in kinds(all_a) + kinds(all_b)
    assert a.admitted(ROOM) == frozenset() and b.admitted(ROOM) == frozenset()


def test_simultaneous_start() -> None:
    a, b = ad.Admission(A), ad.Admission(B)
    sa = a.start(B, ROOM, KEY, HH, ent(1), NOW)
    sb = b.start(A, ROOM, KEY, HH, ent(2), NOW)
    ra = carry(sb, a, KEY, sender=B)
    rb = carry(sa, b, KEY, sender=A)
    assert kinds(ra) == ["send2"] and kinds(rb) == ["send2"]
    assert kinds(carry(rb, a, KEY, sender=B)) == ["Admitted"]
    assert kinds(carry(ra, b, KEY, sender=A)) == ["Admitted"]


def test_non_member_gets_no_answer() -> None:
    b = ad.Admission(B)
    start = ad.Admission(A).start(B, ROOM, KEY, HH, ent(1), NOW)
    assert carry(start, b, None, sender=A) == []


def test_confirmation_without_pake_ignored() -> None:
    b = ad.Admission(B)
    assert b.received(A, m.Admit(room=ROOM, step=2, data=b"x" * 32), KEY, HH, ent(1), NOW) == []
    assert b.admitted(ROOM) == frozenset()


def test_garbage_pake_message_closes_not_crashes() -> None:
    b = ad.Admission(B)
    out = b.received(A, m.Admit(room=ROOM, step=1, data=b"\x00" * 33), KEY, HH, ent(1), NOW)
    assert out == [ad.Disconnect(A, Reason.MALFORMED_FRAME)]


def test_peer_over_rate_is_disconnected() -> None:
    b = ad.Admission(B)
    for i in range(limits.ADMIT_PER_PEER):
        start = ad.Admission(A).start(B, ROOM, OTHER_KEY, HH, ent(i), NOW + i)
        out = carry(start, b, KEY, sender=A)
        assert ad.Disconnect(A, Reason.ADMIT_FLOOD) not in out
    start = ad.Admission(A).start(B, ROOM, OTHER_KEY, HH, ent(99), NOW + 10)
    out = b.received(A, start[0].frame, KEY, HH, ent(1), NOW + 10)  # type: ignore[union-attr]
    assert out == [ad.Disconnect(A, Reason.ADMIT_FLOOD)]
    # A window later the peer may try again.
    later = NOW + 10 + limits.ADMIT_WINDOW_S
    out = b.received(A, start[0].frame, KEY, HH, ent(1), later)  # type: ignore[union-attr]
    assert kinds(out) == ["send1", "send2"]


def test_room_failures_bounded_across_peers() -> None:
    b = ad.Admission(B)
    for i in range(limits.ADMIT_FAILURES_PER_ROOM):
        peer = f"{i:052d}"
        a = ad.Admission(peer)
        start = a.start(B, ROOM, OTHER_KEY, HH, ent(i), NOW)
        got = carry(start, b, KEY, sender=peer)
        back = carry(got, a, OTHER_KEY, sender=B)
        assert ad.Refused(peer, ROOM) in carry(back, b, KEY, sender=peer)
    fresh = ad.Admission(C)
    start = fresh.start(B, ROOM, KEY, HH, ent(1), NOW + 1)
    assert carry(start, b, KEY, sender=C) == []  # refused silently (logged once)
    assert b.start(C, ROOM, KEY, HH, ent(1), NOW + 1) == []
    # Once the window has passed, proofs run again.
    later = NOW + limits.ADMIT_WINDOW_S + 1
    got = [x for x in start if isinstance(x, ad.Send)]
    assert kinds(b.received(C, got[0].frame, KEY, HH, ent(7), later)) == ["send1", "send2"]


def test_backoff_after_failure() -> None:
    a, _b, all_a, _ = run_pair(KEY, OTHER_KEY)
    assert "Refused" in kinds(all_a)
    assert a.start(B, ROOM, KEY, HH, ent(3), NOW + 1) == []
    assert kinds(a.start(B, ROOM, KEY, HH, ent(3), NOW + limits.ADMIT_BACKOFF_S)) == ["send1"]
    # A fresh key (the user joined again) starts at once.
    a2, _b2, _, _ = run_pair(KEY, OTHER_KEY)
    a2.room_left(ROOM)
    assert kinds(a2.start(B, ROOM, KEY, HH, ent(3), NOW + 0.5)) == ["send1"]


def test_unanswered_times_out() -> None:
    a = ad.Admission(A)
    a.start(B, ROOM, KEY, HH, ent(1), NOW)
    assert a.get_timer() == NOW + limits.ADMIT_TIMEOUT_S
    assert a.handle_timer(NOW + 1) == []
    assert a.handle_timer(NOW + limits.ADMIT_TIMEOUT_S) == [ad.Unanswered(B, ROOM)]
    assert a.get_timer() is None


def test_peer_closed_and_dropped_forget_admission() -> None:
    a, _b, _, _ = run_pair(KEY, KEY)
    assert a.admitted(ROOM) == frozenset({B})
    a.peer_dropped(B, ROOM)
    assert a.admitted(ROOM) == frozenset()
    a, _b, _, _ = run_pair(KEY, KEY)
    a.peer_closed(B)
    assert a.admitted(ROOM) == frozenset()


def test_deterministic_with_injected_entropy() -> None:
    x = ad.Admission(A).start(B, ROOM, KEY, HH, ent(5), NOW)
    y = ad.Admission(A).start(B, ROOM, KEY, HH, ent(5), NOW)
    assert x == y


@pytest.mark.parametrize("step", [1, 2])
def test_admit_frame_roundtrip(step: int) -> None:
    f = m.Admit(room=ROOM, step=step, data=b"z" * 33)
    assert m.decode_frame(m.encode(f)) == f


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([A, C]),
            st.sampled_from([1, 2]),
            st.one_of(
                st.binary(max_size=limits.ADMIT_MAX_DATA_BYTES),
                st.binary(min_size=32, max_size=32).map(lambda b: b"S" + b),
            ),
            st.floats(min_value=0, max_value=200),
        ),
        max_size=30,
    )
)
def test_any_frames_yield_actions_never_another_exception(
    frames: list[tuple[str, int, bytes, float]],
) -> None:
    """Hostile admit frames from two peers: only actions come out, state stays bounded."""
    b = ad.Admission(B)
    for peer, step, data, t in frames:
        out = b.received(peer, m.Admit(room=ROOM, step=step, data=data), KEY, HH, ent(3), t)
        assert all(isinstance(x, ad.Send | ad.Refused | ad.Disconnect) for x in out)
        assert b.admitted(ROOM) == frozenset()  # nobody proves a key it does not hold
        b.handle_timer(t)
    assert len(b._runs) <= 2


# --- hostile review of issue 12, findings 2 and 6 -----------------------------------------


def guess(b: ad.Admission, peer: str, now: float = NOW, key: bytes = OTHER_KEY) -> list[ad.Action]:
    """A fresh guesser sends b its step 1 (never its step 2); return what b did."""
    start = ad.Admission(peer).start(B, ROOM, key, HH, ent(4), now)
    frames = [a.frame for a in start if isinstance(a, ad.Send)]
    return [x for f in frames for x in b.received(peer, f, KEY, HH, ent(9), now)]


def test_a_run_we_confirmed_counts_as_a_guess_until_admitted() -> None:
    """Finding 2a: a guesser reads its answer from our confirmation and never sends its own;
    that run is counted (in flight and after its timeout), so fresh identities get at most
    ADMIT_FAILURES_PER_ROOM answers per room per window."""
    b = ad.Admission(B)
    for i in range(limits.ADMIT_FAILURES_PER_ROOM):
        assert kinds(guess(b, f"g{i:051d}")) == ["send1", "send2"]
    assert guess(b, "x" * 52) == []  # the room's guesses are used up: no answer
    assert b.start("y" * 52, ROOM, KEY, HH, ent(1), NOW) == []
    # Timeouts do not give the guesses back, and the guesser is backed off.
    assert len(b.handle_timer(NOW + limits.ADMIT_TIMEOUT_S)) == limits.ADMIT_FAILURES_PER_ROOM
    assert guess(b, "x" * 52, NOW + limits.ADMIT_TIMEOUT_S) == []
    assert b.start(f"g{0:051d}", ROOM, KEY, HH, ent(1), NOW + limits.ADMIT_TIMEOUT_S) == []
    later = NOW + limits.ADMIT_WINDOW_S + 1
    assert kinds(guess(b, "x" * 52, later)) == ["send1", "send2"]


def test_admitted_runs_give_their_guess_back() -> None:
    """Many members joining at once are all answered: a run that admits is no guess."""
    b = ad.Admission(B)
    for i in range(2 * limits.ADMIT_FAILURES_PER_ROOM):
        peer = f"m{i:051d}"
        a = ad.Admission(peer)
        got = carry(a.start(B, ROOM, KEY, HH, ent(i + 10), NOW), b, KEY, sender=peer)
        assert kinds(got) == ["send1", "send2"]
        assert carry(carry(got, a, KEY, sender=B), b, KEY, sender=peer) == [ad.Admitted(peer, ROOM)]


def test_junk_step_one_is_no_guess_and_locks_nobody_out() -> None:
    """Finding 2b: malformed or reflected step-1 frames from throwaway identities close their
    connection (malformed_frame) and do not count towards the room's guesses."""
    b = ad.Admission(B)
    junk = [b"\x00" * 33, b"S" + b"\xff" * 32, b"S" * 20]
    for i in range(4):
        peer = f"j{i:051d}"
        for n in range(limits.ADMIT_PER_PEER):
            frame = m.Admit(room=ROOM, step=1, data=junk[n % len(junk)])
            out = b.received(peer, frame, KEY, HH, ent(9), NOW + n)
            assert out == [ad.Disconnect(peer, Reason.MALFORMED_FRAME)]
    # Our own step 1 reflected back is junk too.
    own = b.start(C, ROOM, KEY, HH, ent(1), NOW)
    assert carry(own, b, KEY, sender=C) == [ad.Disconnect(C, Reason.MALFORMED_FRAME)]
    # A genuine member is still answered, and we still start runs for the room.
    member = ad.Admission(A)
    got = carry(member.start(B, ROOM, KEY, HH, ent(1), NOW + 5), b, KEY, sender=A)
    assert kinds(got) == ["send1", "send2"]
    assert kinds(b.start("d" * 52, ROOM, KEY, HH, ent(2), NOW + 5)) == ["send1"]


def test_room_cap_spares_peers_admitted_before_and_verified_peers() -> None:
    """Finding 2b: guessers who used up the room's guesses cannot keep out a member admitted
    before (reconnecting: a new channel) or a verified peer."""
    verified = "v" * 52
    b = ad.Admission(B, trusted=lambda p: p == verified)
    a = ad.Admission(A)
    got = carry(a.start(B, ROOM, KEY, HH, ent(1), NOW), b, KEY, sender=A)
    carry(carry(got, a, KEY, sender=B), b, KEY, sender=A)
    assert b.is_admitted(A, ROOM)
    b.peer_closed(A)
    for i in range(limits.ADMIT_FAILURES_PER_ROOM):
        guess(b, f"g{i:051d}", NOW + 1)
    assert guess(b, "x" * 52, NOW + 2) == []
    hh2 = b"k" * 32
    again = ad.Admission(A)
    got = carry(again.start(B, ROOM, KEY, hh2, ent(5), NOW + 2), b, KEY, hh2, sender=A)
    assert kinds(got) == ["send1", "send2"]
    assert carry(carry(got, again, KEY, hh2, sender=B), b, KEY, hh2, sender=A) == [
        ad.Admitted(A, ROOM)
    ]
    b.peer_closed(A)
    assert kinds(b.start(A, ROOM, KEY, HH, ent(6), NOW + 3)) == ["send1"]
    assert kinds(b.start(verified, ROOM, KEY, HH, ent(7), NOW + 3)) == ["send1"]
    assert kinds(guess(b, verified, NOW + 3, KEY)) == ["send2"]  # its run was open already
    # A new passphrase (we join again) forgets who was admitted under the old one.
    b.room_left(ROOM)
    assert not b.spared(A, ROOM)
    assert guess(b, A, NOW + 4, KEY) == []


def test_runs_with_strangers_have_a_cpu_budget() -> None:
    """Finding 6: each run costs ~10 ms of SPAKE2 on the loop; runs with peers never admitted
    (and not verified) are bounded in all rooms together per window."""
    b = ad.Admission(B)
    rooms = [f"p.{i:024d}" for i in range(limits.ADMIT_RUNS_PER_WINDOW // 10 + 1)]
    started = 0
    for i in range(limits.ADMIT_RUNS_PER_WINDOW + 5):
        peer = f"s{i:051d}"
        started += len(b.start(peer, rooms[i % len(rooms)], KEY, HH, ent(1), NOW))
    assert started == limits.ADMIT_RUNS_PER_WINDOW
    assert b.get_timer() == NOW + limits.ADMIT_TIMEOUT_S
    later = NOW + limits.ADMIT_WINDOW_S + 1
    assert kinds(b.start("z" * 52, rooms[0], KEY, HH, ent(1), later)) == ["send1"]


def test_backoff_tables_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 6: the failures in a row and back-offs of throwaway identities are pruned."""
    monkeypatch.setattr(limits, "ADMIT_MAX_TRACKED", 8)
    monkeypatch.setattr(limits, "ADMIT_FAILURES_PER_ROOM", 1_000)
    b = ad.Admission(B)
    for i in range(30):
        t = NOW + i * (limits.ADMIT_BACKOFF_MAX_S + 1)
        peer = f"f{i:051d}"
        a = ad.Admission(peer)
        got = carry(a.start(B, ROOM, OTHER_KEY, HH, ent(i + 10), t), b, KEY, sender=peer)
        assert kinds(got) == ["send1", "send2"]
        if i % 2:  # half send a wrong confirmation, half never answer
            b.received(peer, m.Admit(ROOM, 2, b"w" * 32), KEY, HH, ent(9), t + 1)
        b.handle_timer(t + limits.ADMIT_TIMEOUT_S)
        assert len(b._streak) <= 8 and len(b._retry_at) <= 8


def test_hanging_up_after_our_confirmation_keeps_the_guess(monkeypatch: pytest.MonkeyPatch) -> None:
    """A guesser that closes right after reading our confirmation is counted and backed off."""
    monkeypatch.setattr(limits, "ADMIT_FAILURES_PER_ROOM", 1)
    b = ad.Admission(B)
    g = "g" * 52
    assert kinds(guess(b, g)) == ["send1", "send2"]
    b.peer_closed(g)
    assert guess(b, "x" * 52, NOW + 1) == []
    monkeypatch.setattr(limits, "ADMIT_FAILURES_PER_ROOM", 5)
    assert b.start(g, ROOM, KEY, HH, ent(1), NOW + 1) == []  # backed off
    assert kinds(b.start(g, ROOM, KEY, HH, ent(1), NOW + limits.ADMIT_BACKOFF_S)) == ["send1"]

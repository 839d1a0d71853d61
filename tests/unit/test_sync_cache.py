"""The simulator's speed-ups of sync.py and replica.py change no answer.

`SyncState.vector` is cached per room (rebuilt after any change), `push_plan`
looks only at the entries that differ when one does, and `vector_received`
skips the plan when the vectors are equal. Each is checked against the plain
rule it replaced, on states and vectors chosen by hypothesis.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from unit_support import FUZZ

from chinwag import limits
from chinwag.protocol.sync import PushRange, SyncState

ROOM = "general"
AUTHORS = ["a" * 52, "b" * 52, "c" * 52, "d" * 52]


def plain_vector(s: SyncState, room: str) -> dict[str, int]:
    """The vector as it was computed before the cache."""
    return {a: x.have for a, x in s.rooms.get(room, {}).items() if x.have > 0}


def plain_plan(s: SyncState, room: str, peer_have: dict[str, int]) -> list[PushRange]:
    """push_plan as it was before the fast path."""
    plan = []
    for author, state in s.rooms.get(room, {}).items():
        theirs = peer_have.get(author, 0)
        if state.have <= theirs:
            continue
        offer_from = max(state.base, state.have - limits.HISTORY_OFFER + 1)
        lo = max(theirs + 1, offer_from)
        floor = offer_from if offer_from > theirs + 1 else None
        plan.append(PushRange(author, lo, state.have, floor))
    return plan


ops = st.lists(
    st.tuples(
        st.sampled_from(["accept", "forget", "set_floor", "offer_floor", "load", "contiguous"]),
        st.sampled_from(AUTHORS),
        st.integers(1, 12),
    ),
    max_size=40,
)


@FUZZ
@given(ops, st.dictionaries(st.sampled_from(AUTHORS), st.integers(0, 14)))
def test_cached_vector_and_fast_plan_match_the_plain_rules(
    steps: list[tuple[str, str, int]], peer_have: dict[str, int]
) -> None:
    s = SyncState()
    for op, author, seq in steps:
        before = s.vector(ROOM)
        snapshot = dict(before)
        if op == "accept":
            s.accept(ROOM, author, seq)
        elif op == "forget":
            s.forget(ROOM, author, seq)
        elif op == "set_floor":
            s.set_floor(ROOM, author, seq)
        elif op == "offer_floor":
            s.offer_floor(ROOM, author, seq, "peer")
        elif op == "load":
            s.load(ROOM, author, 1, [seq, seq + 2])
        else:
            s.load_contiguous(ROOM, author, 1, seq)
        assert before == snapshot  # a vector handed out is never changed afterwards
        assert s.vector(ROOM) == plain_vector(s, ROOM), op
        assert s.push_plan(ROOM, peer_have) == plain_plan(s, ROOM, peer_have)
        mine = plain_vector(s, ROOM)
        assert s.push_plan(ROOM, mine) == []
        for author_ in AUTHORS:
            one_behind = dict(mine)
            if mine.get(author_, 0) > 0:
                one_behind[author_] = mine[author_] - 1
            assert s.push_plan(ROOM, one_behind) == plain_plan(s, ROOM, one_behind)
